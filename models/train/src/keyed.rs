//! Key-based block-wise transforms on burn batches, for training a recognizer behind a key.
//!
//! The transforms are scrim-core's [`BlockTransform`]s; here they are written as tensor ops so
//! they run inside the training graph: the shuffle is a product with a permutation matrix, negative/positive a fixed
//! affine map, FFX a table lookup on the 8-bit level with a straight-through gradient. A test
//! checks that these agree with scrim-core's implementation, which the device and the CLI use.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use scrim_core::{BlockTransform, Scheme, SecretKey};

use crate::{Error, Result};

/// Where a run's key comes from and which transform it drives. Saved in `config.json`: the path of
/// the key file, never the key.
#[derive(Config, Debug)]
pub struct BlockKeyConfig {
    /// Path of the key file (`scrim keygen`).
    pub key_file: String,
    /// `shuffle`, `np`, `ffx` or `patch`.
    pub scheme: String,
    /// Block size `M`.
    #[config(default = 4)]
    pub block: usize,
}

impl BlockKeyConfig {
    /// Reads the key and derives the transform.
    ///
    /// # Errors
    /// Key file and argument errors from scrim-core.
    pub fn load(&self) -> Result<BlockTransform> {
        let key = SecretKey::load(&PathBuf::from(&self.key_file))?;
        Ok(BlockTransform::new(&key, self.scheme.parse()?, self.block)?)
    }
}

/// Loads the transform of an optional key configuration.
///
/// # Errors
/// As [`BlockKeyConfig::load`].
pub fn load(cfg: Option<&BlockKeyConfig>) -> Result<Option<BlockTransform>> {
    cfg.map(BlockKeyConfig::load).transpose()
}

/// Records in the manifest beside `onnx` that the model needs the transform `t` (scheme and
/// block size, never the key).
///
/// # Errors
/// Manifest errors.
pub fn record_requirement(onnx: &Path, t: &BlockTransform) -> Result<()> {
    let path = scrim_core::Manifest::path_for(onnx);
    let mut m = scrim_core::Manifest::load(&path)?;
    m.key = Some(t.requirement());
    m.validate()?;
    m.save(&path)?;
    Ok(())
}

/// Applies `t` to a batch `[N, 3, H, W]` of images in `[0, 1]` (H, W divisible by the block).
/// Differentiable: gradients pass through the shuffle and the sign flips exactly, and straight
/// through FFX's table lookup.
///
/// # Shapes
/// `x: [N, 3, H, W]` → `[N, 3, H, W]`.
pub fn apply(t: &BlockTransform, x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let m = t.block();
    let l = t.block_len();
    let device = x.device();
    // [N, C, H/M, M, W/M, M] → [N, H/M, W/M, M(row), M(col), C] → blocks of L values, channel
    // fastest, as scrim-core lays them out.
    let blocks = x
        .reshape([n, c, h / m, m, w / m, m])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([n, h / m, w / m, l]);
    let y = match t.scheme() {
        Scheme::Shuffle | Scheme::Patch => {
            // A product with the permutation matrix (exact: one 1 per column), which burn's
            // CPU backend runs far faster than a `select` along the last axis.
            let mut pm = vec![0.0f32; l * l];
            for (k, &src) in t.permutation().unwrap_or_default().iter().enumerate() {
                pm[src * l + k] = 1.0;
            }
            let p = Tensor::<2>::from_data(TensorData::new(pm, [l, l]), &device);
            blocks
                .reshape([n * (h / m) * (w / m), l])
                .matmul(p)
                .reshape([n, h / m, w / m, l])
        }
        Scheme::NegPos => {
            let mask = mask_tensor(t, &device);
            // x ↦ x·(1 − 2m) + m flips exactly the masked positions.
            blocks * mask.clone().mul_scalar(-2.0).add_scalar(1.0) + mask
        }
        Scheme::Ffx => {
            let mask = mask_tensor(t, &device);
            let table = t.ffx_table().map(|f| f.values()).unwrap_or_default();
            let lut = Tensor::<1>::from_data(TensorData::new(table, [256]), &device);
            let idx = blocks
                .clone()
                .detach()
                .mul_scalar(255.0)
                .round()
                .clamp(0.0, 255.0)
                .int()
                .reshape([n * (h / m) * (w / m) * l]);
            let enc = lut.select(0, idx).reshape([n, h / m, w / m, l]);
            let target = enc * mask.clone() + blocks.clone() * mask.neg().add_scalar(1.0);
            blocks.clone() + (target - blocks).detach()
        }
    };
    y.reshape([n, h / m, w / m, m, m, c])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([n, c, h, w])
}

fn mask_tensor(t: &BlockTransform, device: &Device) -> Tensor<4> {
    let l = t.block_len();
    let m: Vec<f32> = t
        .mask()
        .unwrap_or_default()
        .iter()
        .map(|&b| if b { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(m, [1, 1, 1, l]), device)
}

/// Applies an optional transform.
pub fn maybe_apply(t: Option<&BlockTransform>, x: Tensor<4>) -> Tensor<4> {
    match t {
        Some(t) => apply(t, x),
        None => x,
    }
}

/// Checks that the images of a model's input size can be cut into the key's blocks.
///
/// # Errors
/// [`Error::InvalidOption`] otherwise.
pub fn check_size(t: &BlockTransform, size: usize) -> Result<()> {
    if !size.is_multiple_of(t.block()) {
        return Err(Error::option(
            "--block",
            format!("{} must divide the image size {size}", t.block()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch;

    #[test]
    fn tensor_ops_match_scrim_core() {
        let device = Device::flex();
        let key = SecretKey::from_bytes([11; 32]);
        let (n, s) = (2, 8);
        let bytes: Vec<f32> = (0..n * 3 * s * s)
            .map(|i| ((i * 37 + 11) % 256) as f32 / 255.0)
            .collect();
        let x = scrim_core::ImageTensor::new([n, 3, s, s], bytes).expect("shape");
        for scheme in Scheme::ALL {
            for m in [2, 4] {
                let t = BlockTransform::new(&key, scheme, m).expect("t");
                let want = t.apply(&x).expect("core");
                let got = batch::to_vec(apply(&t, batch::from_image_tensor(&x, &device)));
                let diff = want
                    .data()
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff < 1e-6, "{scheme} M={m}: {diff}");
            }
        }
    }
}
