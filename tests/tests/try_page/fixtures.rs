//! The perturbers and photos of the page's tests: one of each kind the page must handle, small
//! enough to build in milliseconds.

use scrim_core::NoiseKind;
use scrim_core::fixtures;
use scrim_core::manifest::{
    BoundedRelease, Erasure, InputSpec, Manifest, PerturberOutput, PerturberSpec,
};
use scrim_core::onnx::{Conv, GraphBuilder};

/// The model's side; every fixture perturber and the recognizer take `SIZE × SIZE` images.
pub const SIZE: usize = 32;

/// A named perturber: ONNX bytes and manifest.
pub struct Fixture {
    pub name: &'static str,
    pub onnx: Vec<u8>,
    pub manifest: Manifest,
}

fn ramp(seed: usize, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37 + seed * 11) % 23) as f32 / 11.0 - 1.0) * scale)
        .collect()
}

/// Every perturber kind: per-pixel noise with all three maps (σ at full resolution, μ at half,
/// k at a quarter), tone standardisation, a grey concept erasure and a normalised input; σ
/// alone with a colour concept erasure; a global view's
/// graph (strided convolutions, the map's mean, nearest upsampling in the graph, a skip); a
/// grey bounded
/// release; a colour bounded release whose map the device must clamp.
pub fn perturbers() -> Vec<Fixture> {
    vec![
        rich_noise(),
        plain_noise(),
        global_view(),
        bounded_grey(),
        bounded_colour(),
    ]
}

fn rich_noise() -> Fixture {
    let mut g = GraphBuilder::new("try_page_rich");
    let x = g.image_input("image", 3, SIZE, SIZE);
    let w1 = ramp(1, 3 * 3 * 9, 0.2);
    let h = g.conv(&x, Conv::new(&w1, [3, 3, 3, 3]).pad(1));
    // σ in (−0.1, 0.3): the device clips the negative part to 0.
    let s = g.tanh(&h);
    let s = g.scale(&s, 0.2);
    let sigma = g.offset(&s, 0.1);
    g.output(&sigma, "sigma");
    let half = g.avg_pool(&x, 2, 2, 0);
    let w2 = ramp(2, 9, 0.5);
    let m = g.conv(&half, Conv::new(&w2, [3, 3, 1, 1]));
    let m = g.tanh(&m);
    let shift = g.scale(&m, 0.1);
    g.output(&shift, "shift");
    let quarter = g.avg_pool(&x, 4, 4, 0);
    let w3 = ramp(3, 9, 2.0);
    let k = g.conv(&quarter, Conv::new(&w3, [3, 3, 1, 1]));
    // k in (−0.2, 1.2): the device clamps it to [0, 1].
    let k = g.sigmoid(&k);
    let k = g.scale(&k, 1.4);
    let keep = g.offset(&k, -0.2);
    g.output(&keep, "keep");
    let mut spec = PerturberSpec::noise(
        0.3,
        NoiseKind::Gaussian,
        vec![
            PerturberOutput::Sigma,
            PerturberOutput::Shift,
            PerturberOutput::Keep,
        ],
        0.4,
    );
    spec.standardize = true;
    spec.erase = Some(erasure(1, 2));
    let mut manifest = Manifest::perturber("try-page-rich", InputSpec::rgb(SIZE, SIZE), spec);
    manifest.normalization.mean = vec![0.5, 0.45, 0.4];
    manifest.normalization.std = vec![0.25, 0.2, 0.3];
    Fixture {
        name: "noise-rich",
        onnx: g.finish(),
        manifest,
    }
}

/// A concept erasure of `channels` × SIZE² values at `rank`, with tables no f32 holds exactly
/// in decimal (what a fitted one looks like in JSON).
fn erasure(channels: usize, rank: usize) -> Erasure {
    let d = channels * SIZE * SIZE;
    Erasure {
        label: "race".into(),
        channels,
        rank,
        mean: ramp(7, d, 0.3).iter().map(|v| v + 0.5).collect(),
        down: ramp(8, d * rank, 0.013),
        up: ramp(9, d * rank, 0.07),
    }
}

fn plain_noise() -> Fixture {
    let (onnx, mut manifest) = fixtures::perturber(SIZE, 0.3);
    if let Some(p) = manifest.perturber.as_mut() {
        p.noise = NoiseKind::Laplace;
        // A colour erasure, the shift's only part.
        p.erase = Some(erasure(3, 1));
    }
    manifest.format_version = 3;
    Fixture {
        name: "noise-sigma",
        onnx,
        manifest,
    }
}

/// The ops of `scrim train --layout global` (`scrim_train::export`): stride-2 convolutions to a
/// 4×4 bottleneck, its mean over the map added back, nearest upsampling to half resolution, a
/// 1×1 skip from the first convolution, ReLU, then σ and k at half resolution.
fn global_view() -> Fixture {
    let mut g = GraphBuilder::new("try_page_global");
    let x = g.image_input("image", 3, SIZE, SIZE);
    let f1 = g.conv(
        &x,
        Conv::new(&ramp(4, 4 * 3 * 9, 0.3), [4, 3, 3, 3])
            .stride(2)
            .pad(1),
    );
    let f1 = g.relu(&f1);
    let h = g.conv(
        &f1,
        Conv::new(&ramp(5, 4 * 4 * 9, 0.3), [4, 4, 3, 3])
            .stride(2)
            .pad(1),
    );
    let h = g.relu(&h);
    let h = g.conv(
        &h,
        Conv::new(&ramp(6, 4 * 4 * 9, 0.3), [4, 4, 3, 3])
            .stride(2)
            .pad(1),
    );
    let h = g.relu(&h);
    let mean = g.global_avg_pool(&h);
    let h = g.add(&h, &mean);
    let h = g.conv(&h, Conv::new(&ramp(7, 4 * 4 * 9, 0.3), [4, 4, 3, 3]).pad(1));
    let h = g.relu(&h);
    let up = g.upsample_nearest(&h, 4);
    let skip = g.conv(&f1, Conv::new(&ramp(8, 16, 0.5), [4, 4, 1, 1]));
    let sum = g.add(&up, &skip);
    let feat = g.relu(&sum);
    let z = g.conv(&feat, Conv::new(&ramp(9, 12, 1.0), [3, 4, 1, 1]));
    let s = g.sigmoid(&z);
    let sigma = g.scale(&s, 0.5);
    g.output(&sigma, "sigma");
    let neg = g.scale(&z, -1.0);
    let keep = g.sigmoid(&neg);
    g.output(&keep, "keep");
    let spec = PerturberSpec::noise(
        0.5,
        NoiseKind::Gaussian,
        vec![PerturberOutput::Sigma, PerturberOutput::Keep],
        0.5,
    );
    Fixture {
        name: "noise-global",
        onnx: g.finish(),
        manifest: Manifest::perturber("try-page-global", InputSpec::rgb(SIZE, SIZE), spec),
    }
}

fn bounded_grey() -> Fixture {
    let (onnx, manifest) = fixtures::bounded_perturber(SIZE, 4, 0.2);
    Fixture {
        name: "bounded-grey",
        onnx,
        manifest,
    }
}

fn bounded_colour() -> Fixture {
    let mut g = GraphBuilder::new("try_page_bounded_colour");
    let x = g.image_input("image", 3, SIZE, SIZE);
    let pooled = g.avg_pool(&x, 8, 8, 0);
    let centred = g.offset(&pooled, -0.5);
    let t = g.tanh(&centred);
    let t = g.scale(&t, 3.0);
    let t = g.offset(&t, 0.5);
    let map = g.sqrt(&t);
    g.output(&map, "map");
    // Amplitude 0.3 around 0.5: the map (NaN where t < 0, up to about 1.4) is clamped by the
    // device, NaN becoming the fill value.
    let release = BoundedRelease::new(4, 3, 0.3, 0.15, SIZE);
    Fixture {
        name: "bounded-colour",
        onnx: g.finish(),
        manifest: Manifest::perturber(
            "try-page-bounded-colour",
            InputSpec::rgb(SIZE, SIZE),
            PerturberSpec::bounded(release, 0.5),
        ),
    }
}

/// A deterministic textured "photo" of `width × height` as PNG (lossless, so the browser and
/// scrim-core decode the same pixels).
pub fn photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let grain = (s >> 24) as u8 / 4;
        image::Rgb([
            ((x * 255 / width.max(1)) as u8).saturating_add(grain),
            ((y * 255 / height.max(1)) as u8).saturating_sub(grain),
            (((x + y) * 3) as u8) ^ grain,
        ])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}
