//! The one perturbation path: image bytes → σ network → CSPRNG noise → 8-bit PNG.
//!
//! The SDK, the CLI, the server tests and the end-to-end tests all call [`Perturber`], so what is
//! measured in an audit is exactly what a phone uploads.

use crate::blockwise::BlockTransform;
use crate::imaging::{self, DecodeLimits};
use crate::manifest::{Manifest, PerturberOutput, PerturberSpec, Role};
use crate::noise::{NoiseKind, NoiseSource, PerturbationMaps};
use crate::runtime::{BatchMode, Model};
use crate::tensor::ImageTensor;
use crate::upload::UploadBase;
use crate::{Error, Result};

/// A perturbed image, ready to upload.
#[derive(Clone, PartialEq, Eq)]
pub struct PerturbedImage {
    /// Lossless 8-bit PNG at the model's input size.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl std::fmt::Debug for PerturbedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerturbedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("png_bytes", &self.png.len())
            .finish()
    }
}

/// The on-device perturber: a σ network plus a noise source. Cheap to share between threads.
#[derive(Debug)]
pub struct Perturber {
    model: Model,
    noise: NoiseSource,
    /// The key-based block-wise transform the cloud recognizer requires, applied to the upload.
    keyed: Option<BlockTransform>,
}

impl Perturber {
    /// Builds a perturber from a loaded model, with OS-seeded noise.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] if the model is not a perturber.
    pub fn new(model: Model) -> Result<Self> {
        Self::with_noise(model, NoiseSource::from_os())
    }

    /// Builds a perturber with a given noise source (use [`NoiseSource::seeded_for_tests`] only
    /// in tests and reproducible experiments).
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] if the model is not a perturber.
    pub fn with_noise(model: Model, noise: NoiseSource) -> Result<Self> {
        if model.manifest().role != Role::Perturber {
            return Err(Error::InvalidManifest(format!(
                "{:?} is a {:?}, not a perturber",
                model.manifest().name,
                model.manifest().role
            )));
        }
        Ok(Self {
            model,
            noise,
            keyed: None,
        })
    }

    /// Loads ONNX bytes and manifest JSON.
    ///
    /// # Errors
    /// As [`Model::load`] and [`Manifest::from_json`].
    pub fn from_bytes(onnx: &[u8], manifest_json: &str, noise: NoiseSource) -> Result<Self> {
        let manifest = Manifest::from_json(manifest_json)?;
        Self::with_noise(Model::load(onnx, manifest, BatchMode::Single)?, noise)
    }

    /// Applies a key-based block-wise transform to every upload after the perturbation, for a
    /// recognizer trained behind a key (its manifest's `key`). Only transforms that keep 8-bit
    /// levels can travel in an 8-bit PNG: FFX is refused.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for FFX or a block size that does not divide the model's input.
    pub fn with_block_transform(mut self, t: BlockTransform) -> Result<Self> {
        let i = self.manifest().input;
        if !t.scheme().is_8bit() {
            return Err(Error::InvalidKey(format!(
                "the {} transform does not produce 8-bit images and cannot be uploaded as PNG",
                t.scheme()
            )));
        }
        if !i.height.is_multiple_of(t.block()) || !i.width.is_multiple_of(t.block()) {
            return Err(Error::InvalidKey(format!(
                "block size {} does not divide the input size {}x{}",
                t.block(),
                i.height,
                i.width
            )));
        }
        self.keyed = Some(t);
        Ok(self)
    }

    /// The perturber's manifest.
    pub fn manifest(&self) -> &Manifest {
        self.model.manifest()
    }

    fn spec(&self) -> &PerturberSpec {
        // Checked in `with_noise` (role) and by manifest validation (section present).
        self.model
            .manifest()
            .perturber
            .as_ref()
            .unwrap_or_else(|| unreachable!())
    }

    /// Runs the σ network on one image in `[0,1]` at the model's size.
    ///
    /// # Errors
    /// [`Error::WrongSize`] for another size; [`Error::InvalidModel`] if inference fails.
    pub fn maps(&self, x: &ImageTensor) -> Result<PerturbationMaps> {
        if self.spec().release.is_some() {
            return Err(Error::InvalidArgument(
                "a bounded release has no per-pixel maps of the photo; use upload_base".into(),
            ));
        }
        maps_from_outputs(self.spec(), x, self.run_finite(x)?)
    }

    /// The graph's outputs on `x`, refused when any value is NaN or infinite: noise drawn with
    /// such a σ would upload a black or saturated image in silence. (A bounded release needs no
    /// such check: it renders a non-finite map value as the fill.)
    fn run_finite(&self, x: &ImageTensor) -> Result<Vec<crate::Output>> {
        let outputs = self.model.run(x)?;
        for (i, o) in outputs.iter().enumerate() {
            let bad = o.data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::InvalidModel(format!(
                    "the perturber's output {i} holds {bad} non-finite values (NaN or infinite) \
                     of {}",
                    o.data.len()
                )));
            }
        }
        Ok(outputs)
    }

    /// Perturbs one image tensor in `[0,1]` at the model's size; the result holds 8-bit levels.
    ///
    /// # Errors
    /// As [`Perturber::maps`].
    pub fn perturb_tensor(&self, x: &ImageTensor) -> Result<ImageTensor> {
        self.upload_base(x)?.draw(self.noise_kind(), &self.noise)
    }

    /// What the upload of images `x` is before its noise (the graph's run and the device's
    /// transforms): [`UploadBase::draw`] with [`Perturber::noise_kind`] and a CSPRNG source then
    /// gives an upload exactly as [`Perturber::perturb_tensor`] does. For auditors that upload
    /// the same photo many times.
    ///
    /// # Errors
    /// As [`Perturber::maps`].
    pub fn upload_base(&self, x: &ImageTensor) -> Result<UploadBase> {
        let spec = self.spec();
        match &spec.release {
            Some(r) => {
                let [_, _, h, w] = x.shape();
                // Not `run_finite`: the release maps a non-finite value to the fill by design
                // (`release.rs`), and the try-a-photo page does the same, bit for bit.
                let out = self
                    .model
                    .run(x)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::InvalidModel("missing output \"map\"".into()))?;
                let [n, c, mh, mw] = out.shape[..] else {
                    return Err(Error::InvalidModel(format!(
                        "the release map must be [N, C, H, W], got shape {:?}",
                        out.shape
                    )));
                };
                r.upload_base(
                    &ImageTensor::new([n, c, mh, mw], out.data)?,
                    spec.fill,
                    h,
                    w,
                )
            }
            None => UploadBase::from_maps(x, &self.maps(x)?),
        }
    }

    /// The bounded release this perturber renders, if it is one (then [`Perturber::maps`] does
    /// not apply: the upload has no per-pixel maps of the photo).
    pub fn release(&self) -> Option<&crate::release::BoundedRelease> {
        self.spec().release.as_ref()
    }

    /// The distribution of the noise this perturber draws.
    pub fn noise_kind(&self) -> NoiseKind {
        self.spec().noise
    }

    /// Decodes any supported image, resizes it to the model's input, perturbs it, applies the
    /// key-based transform if one is set, and encodes the result as PNG. The raw image never
    /// leaves this function.
    ///
    /// # Errors
    /// [`Error::InvalidImage`] / [`Error::ImageTooLarge`] for bad input, as [`imaging::decode`]
    /// with the default [`DecodeLimits`].
    pub fn perturb(&self, image_bytes: &[u8]) -> Result<PerturbedImage> {
        let rgb = imaging::decode(image_bytes, DecodeLimits::default())?;
        let x = imaging::to_tensor(&rgb, self.manifest().input);
        let mut y = self.perturb_tensor(&x)?;
        if let Some(t) = &self.keyed {
            y = t.apply(&y)?;
        }
        let out = imaging::tensor_to_rgb(&y)?;
        Ok(PerturbedImage {
            width: out.width(),
            height: out.height(),
            png: imaging::encode_png(&out)?,
        })
    }
}

/// The perturbation maps of images `x` from their perturber graph's `outputs` (in the order of
/// `spec.outputs`): maps at a fraction of the image's resolution are expanded (nearest), and
/// the device's own transforms (tone standardisation, then a concept erasure of its output)
/// are added to the shift. What [`Perturber::maps`] does after the run; exposed so a trainer
/// can check its export against exactly what the device computes.
///
/// # Errors
/// [`Error::InvalidModel`] for missing or misshapen outputs.
pub fn maps_from_outputs(
    spec: &PerturberSpec,
    x: &ImageTensor,
    outputs: Vec<crate::Output>,
) -> Result<PerturbationMaps> {
    let mut outs = outputs.into_iter();
    let mut maps = PerturbationMaps {
        sigma: ImageTensor::zeros(x.shape()),
        shift: None,
        keep: None,
        fill: spec.fill,
    };
    let [_, _, h, w] = x.shape();
    for name in &spec.outputs {
        let o = outs
            .next()
            .ok_or_else(|| Error::InvalidModel("missing output".into()))?;
        let t = o.into_map(h, w)?;
        match name {
            PerturberOutput::Sigma => maps.sigma = t,
            PerturberOutput::Shift => maps.shift = Some(t),
            PerturberOutput::Keep => maps.keep = Some(t),
            PerturberOutput::Map => {
                return Err(Error::InvalidModel(
                    "a \"map\" output belongs to a bounded release (Perturber::upload_base)".into(),
                ));
            }
        }
    }
    if spec.standardize || spec.erase.is_some() {
        let fixed = if spec.standardize {
            crate::noise::standardize_shift(x, spec.fill)?
        } else {
            ImageTensor::zeros(x.shape())
        };
        let mut s = fixed.clone();
        if let Some(erase) = &spec.erase {
            erase.add_to(x, &fixed, &mut s)?;
        }
        if let Some(learned) = &maps.shift {
            if learned.shape() != s.shape() {
                return Err(Error::InvalidModel(format!(
                    "shift output is {}, the image {}",
                    learned.describe(),
                    s.describe()
                )));
            }
            s.data_mut()
                .iter_mut()
                .zip(learned.data())
                .for_each(|(a, b)| *a += b);
        }
        maps.shift = Some(s);
    }
    Ok(maps)
}
