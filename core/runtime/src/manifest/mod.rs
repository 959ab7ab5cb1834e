//! The JSON manifest that travels next to every ONNX file (`model.onnx` → `model.json`).
//!
//! ONNX + manifest is the only artifact that passes from training to runtime. The manifest says
//! what the model is for, what it expects and how to read its output; it never holds a secret.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::erasure::Erasure;
use crate::noise::NoiseKind;
pub use crate::release::BoundedRelease;
pub use run::{MAX_RUN_NAME, Pairing, RUN_ID_LEN, check_pair, describe, model_card, new_run_id};

mod run;
use crate::{Error, Result};

/// The newest manifest format this build reads. It writes version 1 unless a model needs 2 (a
/// bounded release, [`PerturberSpec::release`]) or 3 (a concept erasure,
/// [`PerturberSpec::erase`]), so older SDKs keep reading every other model and refuse the ones
/// they would get wrong.
pub const MANIFEST_VERSION: u32 = 3;

/// The largest input height or width a model may declare (and the largest size any command
/// resizes to).
pub const MAX_INPUT_SIDE: usize = 4096;

/// The largest manifest file read (1 MiB; real ones are a few KiB, labels included).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What a model does in the Scrim pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs on the device: image → per-pixel noise scale σ.
    Perturber,
    /// Runs in the cloud: perturbed image → class logits.
    Recognizer,
}

/// Input image size of a model (always RGB, NCHW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Channels (3 for RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl InputSpec {
    /// An RGB input of `height × width`.
    pub fn rgb(height: usize, width: usize) -> Self {
        Self {
            channels: 3,
            height,
            width,
        }
    }
    /// `CxHxW`, for messages.
    pub fn describe(&self) -> String {
        format!("{}x{}x{}", self.channels, self.height, self.width)
    }
    /// Values per image.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// True for a zero-sized input (never valid).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-channel normalisation applied to `[0,1]` pixels before the model: `(x − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (all > 0).
    pub std: Vec<f32>,
}

impl Normalization {
    /// No normalisation: the model sees `[0,1]` pixels.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }
    /// True when applying it changes nothing.
    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }
}

/// What the perturber's output means and how the device turns it into an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerturberSpec {
    /// Upper bound of σ (the σ head is `σ_max · sigmoid`).
    pub sigma_max: f32,
    /// Noise distribution drawn on the device.
    pub noise: NoiseKind,
    /// Names of the ONNX outputs, in order. `sigma` is always first; `shift` (a deterministic
    /// per-pixel offset μ(x)) and `keep` (suppression: 1 keeps the pixel, 0 replaces it with
    /// `fill`) are optional.
    #[serde(default = "default_outputs")]
    pub outputs: Vec<PerturberOutput>,
    /// Value that suppressed pixels are replaced with.
    #[serde(default = "default_fill")]
    pub fill: f32,
    /// Tone standardisation on the device ([`crate::noise::standardize_shift`]), added to the
    /// graph's `shift` output (or the shift on its own when the graph has none). A fixed
    /// transform, computed natively rather than in the graph, where it cost more than the
    /// network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standardize: bool,
    /// A bounded-capacity release ([`crate::release`]): the graph's one output is `map`, and
    /// the upload is rendered from it with fixed noise. Needs format version 2, so that an older
    /// SDK, which would read the map as σ and upload the photo, refuses the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<BoundedRelease>,
    /// A linear concept erasure ([`crate::erasure`]) the device adds to the shift, after the
    /// tone standardisation. Needs format version 3: an older SDK would upload the label's
    /// linear trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<Erasure>,
}

impl PerturberSpec {
    /// A noise perturber: σ (and optionally shift and keep) maps, the paper's release.
    pub fn noise(
        sigma_max: f32,
        noise: NoiseKind,
        outputs: Vec<PerturberOutput>,
        fill: f32,
    ) -> Self {
        Self {
            sigma_max,
            noise,
            outputs,
            fill,
            standardize: false,
            release: None,
            erase: None,
        }
    }

    /// A bounded release: one `map` output rendered with Gaussian noise of the release's σ.
    pub fn bounded(release: BoundedRelease, fill: f32) -> Self {
        Self {
            sigma_max: release.sigma,
            noise: NoiseKind::Gaussian,
            outputs: vec![PerturberOutput::Map],
            fill,
            standardize: false,
            release: Some(release),
            erase: None,
        }
    }
}

fn default_outputs() -> Vec<PerturberOutput> {
    vec![PerturberOutput::Sigma]
}
fn default_fill() -> f32 {
    0.5
}

/// One named output of a perturber graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerturberOutput {
    /// σ(x), the noise scale, shape of the input.
    Sigma,
    /// μ(x), a deterministic offset added before the noise.
    Shift,
    /// k(x) ∈ [0,1], the fraction of the pixel kept (1 − suppression).
    Keep,
    /// The low-resolution map of a bounded release (its only output).
    Map,
}

/// A key-based transform the recognizer was trained behind. Names the scheme, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequirement {
    /// Transform scheme: `shuffle`, `np`, `ffx` or `patch`.
    pub scheme: String,
    /// Block size in pixels.
    pub block: usize,
}

/// The manifest of one ONNX model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; this build reads [`MANIFEST_VERSION`].
    pub format_version: u32,
    /// What the model does.
    pub role: Role,
    /// A short name shown by the server and the CLI.
    pub name: String,
    /// Input image size.
    pub input: InputSpec,
    /// Normalisation applied before the model.
    pub normalization: Normalization,
    /// The desired task (e.g. `gender`), for recognizers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Class names, one per logit (recognizers only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Perturber output semantics (perturbers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturber: Option<PerturberSpec>,
    /// Key-based image transform the images must go through before this model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyRequirement>,
    /// Tool and version that wrote the model.
    #[serde(default)]
    pub producer: String,
    /// The name of the training run that wrote the model (its run folder's name). Absent in
    /// models exported before run names existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    /// The id of the training run ([`new_run_id`]): a perturber and the recognizer co-trained
    /// with it carry the same one, and [`check_pair`] refuses two that differ. Absent in models
    /// exported before run ids existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Manifest {
    /// A recognizer manifest with identity normalisation.
    pub fn recognizer(name: &str, input: InputSpec, task: &str, labels: Vec<String>) -> Self {
        Self {
            format_version: 1,
            role: Role::Recognizer,
            name: name.into(),
            normalization: Normalization::identity(input.channels),
            input,
            task: Some(task.into()),
            labels,
            perturber: None,
            key: None,
            producer: producer(),
            run_name: None,
            run_id: None,
        }
    }

    /// A perturber manifest with identity normalisation.
    pub fn perturber(name: &str, input: InputSpec, spec: PerturberSpec) -> Self {
        Self {
            format_version: if spec.erase.is_some() {
                3
            } else if spec.release.is_some() {
                2
            } else {
                1
            },
            role: Role::Perturber,
            name: name.into(),
            normalization: Normalization::identity(input.channels),
            input,
            task: None,
            labels: Vec::new(),
            perturber: Some(spec),
            key: None,
            producer: producer(),
            run_name: None,
            run_id: None,
        }
    }

    /// The same manifest, marked as written by the training run `name` with id `id`.
    pub fn with_run(mut self, name: &str, id: &str) -> Self {
        self.run_name = Some(name.into());
        self.run_id = Some(id.into());
        self
    }

    /// Parses and validates a manifest.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] naming the field at fault.
    pub fn from_json(json: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_str(json)
            .map_err(|e| Error::InvalidManifest(format!("not a valid Scrim manifest: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Reads and validates the manifest at `path` (at most [`MAX_MANIFEST_BYTES`]).
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable, [`Error::InvalidManifest`] if invalid (with the path).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::error::read_file_limited(path, MAX_MANIFEST_BYTES)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::InvalidManifest(format!("{}: not UTF-8 text", path.display())))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::InvalidManifest(msg) => {
                Error::InvalidManifest(format!("{}: {msg}", path.display()))
            }
            other => other,
        })
    }

    /// Reads the manifest that belongs beside the ONNX file `onnx` ([`Manifest::path_for`]).
    ///
    /// # Errors
    /// [`Error::MissingManifest`] naming both files when it is not there; otherwise as
    /// [`Manifest::load`].
    pub fn load_beside(onnx: &Path) -> Result<Self> {
        let path = Self::path_for(onnx);
        Self::load(&path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::MissingManifest {
                    manifest: path.clone(),
                    model: onnx.to_path_buf(),
                }
            }
            other => other,
        })
    }

    /// The manifest path that belongs to an ONNX path (`x/model.onnx` → `x/model.json`).
    pub fn path_for(onnx: &Path) -> PathBuf {
        onnx.with_extension("json")
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the manifest as pretty JSON.
    ///
    /// # Errors
    /// [`Error::Io`] on a write failure.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json() + "\n").map_err(|e| Error::io(path, e))
    }

    /// Checks every field, saying exactly what is wrong.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`].
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidManifest(msg));
        if !(1..=MANIFEST_VERSION).contains(&self.format_version) {
            return bad(format!(
                "format_version is {}, this build reads versions 1 to {MANIFEST_VERSION}",
                self.format_version
            ));
        }
        let i = &self.input;
        if i.channels != 3 {
            return bad(format!(
                "input.channels must be 3 (RGB), got {}",
                i.channels
            ));
        }
        if i.height == 0 || i.width == 0 || i.height > MAX_INPUT_SIDE || i.width > MAX_INPUT_SIDE {
            return bad(format!(
                "input.height and input.width must be in 1..={MAX_INPUT_SIDE}, got {}x{}",
                i.height, i.width
            ));
        }
        let n = &self.normalization;
        if n.mean.len() != i.channels || n.std.len() != i.channels {
            return bad(format!(
                "normalization.mean and normalization.std need {} values each, got {} and {}",
                i.channels,
                n.mean.len(),
                n.std.len()
            ));
        }
        if let Some(s) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return bad(format!(
                "normalization.std values must be positive, got {s}"
            ));
        }
        if n.mean.iter().any(|m| !m.is_finite()) {
            return bad("normalization.mean values must be finite".into());
        }
        match self.role {
            Role::Recognizer => {
                if self.labels.len() < 2 {
                    return bad(format!(
                        "a recognizer needs at least 2 labels, got {}",
                        self.labels.len()
                    ));
                }
                if self.perturber.is_some() {
                    return bad("a recognizer must not have a `perturber` section".into());
                }
            }
            Role::Perturber => {
                let Some(p) = &self.perturber else {
                    return bad("a perturber needs a `perturber` section (sigma_max, noise)".into());
                };
                if !(p.sigma_max.is_finite() && p.sigma_max > 0.0 && p.sigma_max <= 10.0) {
                    return bad(format!(
                        "perturber.sigma_max must be in (0, 10], got {}",
                        p.sigma_max
                    ));
                }
                if let Some(r) = &p.release {
                    if self.format_version < 2 {
                        return bad(
                            "a bounded release (perturber.release) needs format_version 2".into(),
                        );
                    }
                    if p.outputs != [PerturberOutput::Map] {
                        return bad("a bounded release has exactly one output, \"map\"".into());
                    }
                    if p.noise != NoiseKind::Gaussian || p.standardize || p.sigma_max != r.sigma {
                        return bad(
                            "a bounded release draws Gaussian noise of perturber.release.sigma \
                             (noise gaussian, sigma_max = release.sigma, no standardize)"
                                .into(),
                        );
                    }
                    r.validate(i.height, i.width, p.fill)?;
                } else if p.outputs.first() != Some(&PerturberOutput::Sigma)
                    || p.outputs.contains(&PerturberOutput::Map)
                {
                    return bad(
                        "perturber.outputs must start with \"sigma\" (\"map\" needs a release)"
                            .into(),
                    );
                }
                let mut seen = p.outputs.clone();
                seen.sort_by_key(|o| *o as u8);
                seen.dedup();
                if seen.len() != p.outputs.len() {
                    return bad("perturber.outputs lists an output twice".into());
                }
                if !(0.0..=1.0).contains(&p.fill) {
                    return bad(format!("perturber.fill must be in [0, 1], got {}", p.fill));
                }
                if let Some(e) = &p.erase {
                    if self.format_version < 3 {
                        return bad(
                            "a concept erasure (perturber.erase) needs format_version 3".into()
                        );
                    }
                    if p.release.is_some() {
                        return bad(
                            "a bounded release renders its upload from a map: it has no image to \
                             erase (perturber.erase)"
                                .into(),
                        );
                    }
                    e.validate(i.height, i.width)?;
                }
            }
        }
        run::validate(self)?;
        if let Some(k) = &self.key {
            if !["shuffle", "np", "ffx", "patch"].contains(&k.scheme.as_str()) {
                return bad(format!(
                    "key.scheme must be one of shuffle, np, ffx, patch; got {:?}",
                    k.scheme
                ));
            }
            if k.block == 0 || !i.height.is_multiple_of(k.block) || !i.width.is_multiple_of(k.block)
            {
                return bad(format!(
                    "key.block ({}) must divide the input size {}x{}",
                    k.block, i.height, i.width
                ));
            }
        }
        Ok(())
    }
}

fn producer() -> String {
    format!("scrim {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests;
