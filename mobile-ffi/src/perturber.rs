//! The on-device perturber, as the app sees it.

use crate::error::{Result, guard};

/// The on-device perturber: a σ network (ONNX) plus CSPRNG noise.
///
/// Thread-safe: build one per model and share it; [`Perturber::perturb`] may run on several
/// threads at once. Every call draws fresh noise from a ChaCha20 generator seeded by the
/// operating system, and the seed never leaves the device.
#[derive(Debug, uniffi::Object)]
pub struct Perturber {
    inner: scrim_core::Perturber,
    seeded_for_tests: bool,
}

#[uniffi::export]
impl Perturber {
    /// Loads a perturber from its ONNX bytes and its manifest JSON (`perturber.onnx` and
    /// `perturber.json` from training), with OS-seeded noise.
    ///
    /// # Errors
    /// [`crate::ScrimError::InvalidModel`] if the ONNX or the manifest is invalid, or the model is
    /// not a perturber.
    #[uniffi::constructor]
    pub fn new(onnx: Vec<u8>, manifest_json: String) -> Result<std::sync::Arc<Self>> {
        Self::build(&onnx, &manifest_json, scrim_core::NoiseSource::from_os())
    }

    /// **For tests only.** Like [`Perturber::new`] but with deterministic noise from `seed`:
    /// anyone who knows the seed can subtract the noise, so never ship this in an app.
    ///
    /// # Errors
    /// As [`Perturber::new`].
    #[uniffi::constructor]
    pub fn seeded_for_tests(
        onnx: Vec<u8>,
        manifest_json: String,
        seed: u64,
    ) -> Result<std::sync::Arc<Self>> {
        Self::build(
            &onnx,
            &manifest_json,
            scrim_core::NoiseSource::seeded_for_tests(seed),
        )
    }

    /// Like [`Perturber::new`], for a cloud recognizer trained behind a secret key: every upload
    /// is also passed through the key-based block-wise transform that the recognizer's manifest
    /// (`recognizer_manifest_json`, its `key` section) names, derived from `key_file` (the bytes
    /// of a `scrim keygen` key file). A recognizer without a `key` section needs no transform, and
    /// none is applied. The key stays on the device.
    ///
    /// The perturber and the recognizer must come from the same training run: when both
    /// manifests carry a run id (every model exported since run ids exist) and the ids differ,
    /// the perturber is refused, because the recognizer reads only the uploads of the perturber
    /// it was co-trained with. Older models without a run id load unchecked.
    ///
    /// # Errors
    /// [`crate::ScrimError::InvalidModel`] for an invalid model or manifest, a perturber and a
    /// recognizer of different runs, a malformed key file, or a transform that cannot travel as
    /// an 8-bit PNG (FFX).
    #[uniffi::constructor]
    pub fn with_key(
        onnx: Vec<u8>,
        manifest_json: String,
        key_file: Vec<u8>,
        recognizer_manifest_json: String,
    ) -> Result<std::sync::Arc<Self>> {
        guard(|| {
            let recognizer = scrim_core::Manifest::from_json(&recognizer_manifest_json)?;
            let mut inner = scrim_core::Perturber::from_bytes(
                &onnx,
                &manifest_json,
                scrim_core::NoiseSource::from_os(),
            )?;
            scrim_core::manifest::check_pair(inner.manifest(), &recognizer)?;
            if let Some(req) = &recognizer.key {
                let key = scrim_core::SecretKey::from_file_bytes(&key_file)?;
                let t = scrim_core::BlockTransform::for_requirement(&key, req)?;
                inner = inner.with_block_transform(t)?;
            }
            Ok(std::sync::Arc::new(Self {
                inner,
                seeded_for_tests: false,
            }))
        })
    }

    /// Decodes a JPEG, PNG or WebP image (EXIF orientation applied), resizes it to the model's
    /// input, perturbs it and encodes the result as a lossless PNG. The input bytes are not kept.
    ///
    /// # Errors
    /// [`crate::ScrimError::InvalidImage`] or [`crate::ScrimError::ImageTooLarge`] for bad input;
    /// [`crate::ScrimError::InvalidModel`] if the network misbehaves.
    pub fn perturb(&self, image: Vec<u8>) -> Result<std::sync::Arc<PerturbedImage>> {
        guard(|| {
            Ok(std::sync::Arc::new(PerturbedImage {
                inner: self.inner.perturb(&image)?,
            }))
        })
    }

    /// Width of the model's input (and of every perturbed image) in pixels.
    pub fn input_width(&self) -> u32 {
        dimension(self.inner.manifest().input.width)
    }

    /// Height of the model's input (and of every perturbed image) in pixels.
    pub fn input_height(&self) -> u32 {
        dimension(self.inner.manifest().input.height)
    }

    /// The model's name from its manifest.
    pub fn model_name(&self) -> String {
        self.inner.manifest().name.clone()
    }

    /// The name of the training run the perturber comes from (its manifest's `run_name`), or
    /// none for a model exported before run names existed.
    pub fn run_name(&self) -> Option<String> {
        self.inner.manifest().run_name.clone()
    }

    /// The id of the training run the perturber comes from (its manifest's `run_id`, 16 hex
    /// digits); the recognizer it was co-trained with carries the same one. None for a model
    /// exported before run ids existed.
    pub fn run_id(&self) -> Option<String> {
        self.inner.manifest().run_id.clone()
    }

    /// True for a perturber built with [`Perturber::seeded_for_tests`]; an app can assert that
    /// it is false in release builds.
    pub fn is_seeded_for_tests(&self) -> bool {
        self.seeded_for_tests
    }
}

impl Perturber {
    fn build(
        onnx: &[u8],
        manifest_json: &str,
        noise: scrim_core::NoiseSource,
    ) -> Result<std::sync::Arc<Self>> {
        guard(|| {
            let seeded_for_tests = noise.is_deterministic();
            let inner = scrim_core::Perturber::from_bytes(onnx, manifest_json, noise)?;
            Ok(std::sync::Arc::new(Self {
                inner,
                seeded_for_tests,
            }))
        })
    }
}

/// Manifests cap sizes at 4096, so this never saturates in practice.
fn dimension(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A perturbed image, ready to upload: a lossless 8-bit PNG at the model's input size.
///
/// Only [`Perturber::perturb`] makes one, and [`crate::ScrimClient`] uploads nothing else, so an
/// app cannot send a raw photo through the SDK by mistake.
#[derive(Debug, uniffi::Object)]
pub struct PerturbedImage {
    inner: scrim_core::PerturbedImage,
}

#[uniffi::export]
impl PerturbedImage {
    /// The PNG bytes (a copy).
    pub fn png(&self) -> Vec<u8> {
        self.inner.png.clone()
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.inner.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.inner.height
    }
}

impl PerturbedImage {
    /// The PNG bytes, without a copy (for the upload).
    pub(crate) fn png_bytes(&self) -> &[u8] {
        &self.inner.png
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScrimError;

    fn fixture(size: usize) -> (Vec<u8>, String) {
        let (onnx, manifest) = scrim_core::fixtures::perturber(size, 0.2);
        (onnx, manifest.to_json())
    }

    /// A `w × h` RGB gradient as PNG, through scrim-core's encoder.
    fn png(w: usize, h: usize) -> Vec<u8> {
        let data = (0..3 * w * h).map(|i| (i % 251) as f32 / 250.0).collect();
        let t = scrim_core::ImageTensor::new([1, 3, h, w], data).expect("shape");
        let rgb = scrim_core::imaging::tensor_to_rgb(&t).expect("rgb");
        scrim_core::imaging::encode_png(&rgb).expect("png")
    }

    #[test]
    fn a_bounded_release_uploads_a_grey_render() {
        let (onnx, manifest) = scrim_core::fixtures::bounded_perturber(16, 4, 0.1);
        assert_eq!(manifest.format_version, 2);
        let p = Perturber::new(onnx, manifest.to_json()).expect("bounded fixture loads");
        let img = p.perturb(png(40, 30)).expect("perturb");
        assert_eq!((img.width(), img.height()), (16, 16));
        let decoded =
            scrim_core::imaging::decode(img.png_bytes(), Default::default()).expect("decode");
        // One ε per pixel for all three channels: the upload is grey.
        assert!(decoded.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn perturbs_to_the_model_size() {
        let (onnx, json) = fixture(16);
        let p = Perturber::new(onnx, json).expect("fixture loads");
        assert_eq!((p.input_width(), p.input_height()), (16, 16));
        assert!(!p.is_seeded_for_tests());
        let img = p.perturb(png(40, 30)).expect("perturb");
        assert_eq!((img.width(), img.height()), (16, 16));
        assert!(img.png().starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn seeded_perturber_is_deterministic_and_os_seeded_is_not() {
        let (onnx, json) = fixture(16);
        let a = Perturber::seeded_for_tests(onnx.clone(), json.clone(), 7).expect("a");
        let b = Perturber::seeded_for_tests(onnx.clone(), json.clone(), 7).expect("b");
        assert!(a.is_seeded_for_tests());
        let input = png(12, 10);
        assert_eq!(
            a.perturb(input.clone()).expect("a").png(),
            b.perturb(input.clone()).expect("b").png()
        );
        let os = Perturber::new(onnx, json).expect("os");
        let (x, y) = (
            os.perturb(input.clone()).expect("x"),
            os.perturb(input).expect("y"),
        );
        assert_ne!(x.png(), y.png(), "two OS-seeded draws must differ");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let (onnx, json) = fixture(8);
        let p = Perturber::new(onnx.clone(), json.clone()).expect("fixture");
        assert!(matches!(
            p.perturb(b"not an image".to_vec()),
            Err(ScrimError::InvalidImage { .. })
        ));
        assert!(matches!(
            Perturber::new(b"junk".to_vec(), json),
            Err(ScrimError::InvalidModel { .. })
        ));
        assert!(matches!(
            Perturber::new(onnx.clone(), "{".into()),
            Err(ScrimError::InvalidModel { .. })
        ));
        // A recognizer is not a perturber.
        let (r_onnx, r_manifest) = scrim_core::fixtures::recognizer(8, &["a", "b"]);
        let err = Perturber::new(r_onnx, r_manifest.to_json()).expect_err("role");
        assert!(matches!(err, ScrimError::InvalidModel { .. }), "{err:?}");
    }

    #[test]
    fn applies_the_recognizer_key_transform_before_upload() {
        let (onnx, json) = fixture(8);
        let key = scrim_core::SecretKey::from_bytes([4; 32]);
        let key_file = key.to_file_bytes().to_vec();
        let (_, mut recognizer) = scrim_core::fixtures::recognizer(8, &["a", "b"]);
        let plain_recognizer = recognizer.to_json();
        recognizer.key = Some(scrim_core::manifest::KeyRequirement {
            scheme: "np".into(),
            block: 4,
        });
        let p = Perturber::with_key(
            onnx.clone(),
            json.clone(),
            key_file.clone(),
            recognizer.to_json(),
        )
        .expect("keyed");
        let img = p.perturb(png(12, 10)).expect("perturb");
        let rgb = scrim_core::imaging::decode(&img.png(), scrim_core::DecodeLimits::default())
            .expect("png");
        // Undoing the transform gives an image at the model's size; the upload itself is the
        // transformed one (NP flips half of each block: far from the undone image).
        let x = scrim_core::imaging::rgb_to_tensor(&rgb);
        let t = scrim_core::BlockTransform::new(&key, scrim_core::Scheme::NegPos, 4).expect("t");
        let undone = t.invert(&x).expect("invert");
        let dist: f32 = x
            .data()
            .iter()
            .zip(undone.data())
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / x.data().len() as f32;
        assert!(dist > 0.05, "mean |upload − undone| {dist}");
        // No key section: no transform, and the key file is not even read.
        Perturber::with_key(onnx.clone(), json.clone(), Vec::new(), plain_recognizer)
            .expect("no key needed");
        // A malformed key file and FFX are typed errors.
        let err = Perturber::with_key(
            onnx.clone(),
            json.clone(),
            key_file[..20].to_vec(),
            recognizer.to_json(),
        )
        .expect_err("truncated");
        assert!(
            matches!(&err, ScrimError::InvalidModel { detail } if detail.contains("truncated")),
            "{err:?}"
        );
        recognizer.key = Some(scrim_core::manifest::KeyRequirement {
            scheme: "ffx".into(),
            block: 4,
        });
        assert!(matches!(
            Perturber::with_key(onnx, json, key_file, recognizer.to_json()),
            Err(ScrimError::InvalidModel { .. })
        ));
    }

    #[test]
    fn with_key_refuses_a_recognizer_of_another_run() {
        let (onnx, perturber) = scrim_core::fixtures::perturber(8, 0.2);
        let (_, recognizer) = scrim_core::fixtures::recognizer(8, &["a", "b"]);
        let key_file = scrim_core::SecretKey::from_bytes([4; 32])
            .to_file_bytes()
            .to_vec();
        let load = |p: &scrim_core::Manifest, r: &scrim_core::Manifest| {
            Perturber::with_key(onnx.clone(), p.to_json(), key_file.clone(), r.to_json())
        };
        let ours = perturber.clone().with_run("utk", "0123456789abcdef");
        let p = load(
            &ours,
            &recognizer.clone().with_run("utk", "0123456789abcdef"),
        )
        .expect("same run");
        assert_eq!(p.run_name().as_deref(), Some("utk"));
        assert_eq!(p.run_id().as_deref(), Some("0123456789abcdef"));
        let err = load(
            &ours,
            &recognizer.clone().with_run("other", "fedcba9876543210"),
        )
        .expect_err("another run");
        assert!(
            matches!(&err, ScrimError::InvalidModel { detail }
                if detail.contains("different training runs") && detail.contains("fedcba9876543210")),
            "{err:?}"
        );
        // Models exported before run ids load unchecked, either way round.
        let old = load(&perturber, &recognizer).expect("no ids");
        assert_eq!(old.run_id(), None);
        load(&ours, &recognizer).expect("recognizer without id");
    }

    #[test]
    fn shared_between_threads() {
        let (onnx, json) = fixture(8);
        let p = Perturber::new(onnx, json).expect("fixture");
        let input = png(12, 10);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let img = p.perturb(input.clone()).expect("perturb");
                    assert_eq!(img.width(), 8);
                });
            }
        });
    }
}
