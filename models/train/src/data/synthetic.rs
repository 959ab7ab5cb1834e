//! The built-in synthetic dataset: for tests and the first-run demo, with no download.
//!
//! Every image has two independent labels, drawn separately:
//! - `shape` (the desired task): a filled **circle** or **square** near the centre, of random
//!   size, position jitter and contrast;
//! - `texture` (the sensitive attribute): faint diagonal stripes, `/` or `\`, in a band along the
//!   border, where the shape never is.
//!
//! A classifier can read either label from clean images. Because the two live in different
//! places, a perturber can hide the texture (noise the border) and keep the shape (leave the
//! centre) — which is what co-training should discover, and what the audit checks.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::dataset::{Attribute, Dataset};

/// Size and seed of the synthetic set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Number of images.
    pub count: usize,
    /// Generator seed.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            count: 3000,
            seed: 2020,
        }
    }
}

/// Generates the set at `size × size`.
pub fn generate(cfg: &SyntheticConfig, size: usize) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let s = size as f32;
    let plane = size * size;
    let mut images = Vec::with_capacity(cfg.count * 3 * plane);
    let (mut shape, mut texture) = (Vec::new(), Vec::new());
    let band = (size / 5).max(2) as f32;
    for _ in 0..cfg.count {
        let is_square = rng.random_bool(0.5);
        let backslash = rng.random_bool(0.5);
        shape.push(u16::from(is_square));
        texture.push(u16::from(backslash));
        let grey: f32 = rng.random_range(0.3..0.7);
        let tint: [f32; 3] = std::array::from_fn(|_| rng.random_range(-0.05..0.05));
        let contrast = if rng.random_bool(0.5) { 0.35 } else { -0.35 };
        let colour: [f32; 3] =
            std::array::from_fn(|c| grey + tint[c] + contrast + rng.random_range(-0.08..0.08));
        let radius = rng.random_range(s * 0.14..s * 0.2);
        let cx = s / 2.0 + rng.random_range(-s / 16.0..s / 16.0);
        let cy = s / 2.0 + rng.random_range(-s / 16.0..s / 16.0);
        let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let mut img = vec![0u8; 3 * plane];
        for y in 0..size {
            for x in 0..size {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                let inside = if is_square {
                    (fx - cx).abs() <= radius * 0.9 && (fy - cy).abs() <= radius * 0.9
                } else {
                    (fx - cx).powi(2) + (fy - cy).powi(2) <= radius * radius
                };
                let edge = fx.min(fy).min(s - fx).min(s - fy);
                let stripes = if edge < band {
                    let t = if backslash { fx - fy } else { fx + fy };
                    0.12 * (std::f32::consts::TAU * t / 4.0 + phase).sin()
                } else {
                    0.0
                };
                for c in 0..3 {
                    let base = if inside {
                        colour[c]
                    } else {
                        grey + tint[c] + stripes
                    };
                    let v = base + 0.02 * rng.random_range(-1.0f32..1.0);
                    img[c * plane + y * size + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        images.extend(img);
    }
    let names = (0..cfg.count)
        .map(|i| format!("synthetic/{i:06}"))
        .collect();
    let classes = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    Dataset {
        size,
        images,
        names,
        attributes: vec![
            Attribute {
                name: "shape".into(),
                classes: classes("circle", "square"),
                labels: shape,
            },
            Attribute {
                name: "texture".into(),
                classes: classes("slash", "backslash"),
                labels: texture,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_independent() {
        let cfg = SyntheticConfig {
            count: 2000,
            seed: 3,
        };
        let a = generate(&cfg, 16);
        assert_eq!(a.images, generate(&cfg, 16).images);
        assert_eq!(a.images.len(), 2000 * 3 * 16 * 16);
        let shape = &a.attributes[0].labels;
        let texture = &a.attributes[1].labels;
        let ones = |v: &[u16]| v.iter().filter(|&&l| l == 1).count() as f64 / v.len() as f64;
        assert!((ones(shape) - 0.5).abs() < 0.05);
        assert!((ones(texture) - 0.5).abs() < 0.05);
        // Independence: P(texture=1 | shape=1) ≈ P(texture=1).
        let both = shape
            .iter()
            .zip(texture)
            .filter(|&(&s, &t)| s == 1 && t == 1)
            .count() as f64;
        let cond = both / shape.iter().filter(|&&s| s == 1).count() as f64;
        assert!((cond - ones(texture)).abs() < 0.05, "{cond}");
        assert_ne!(
            a.images,
            generate(&SyntheticConfig { seed: 4, ..cfg }, 16).images
        );
    }
}
