//! Selective weight encryption with hierarchical service levels (Tian, Duan, Zhou, CVPR 2021),
//! on ONNX files.
//!
//! Given a plain recognizer and, for some of its conv layers, the kernels `W[f, c]` (each `k×k`
//! slice) to protect ranked by importance, [`protect`] writes
//!
//! - an **encrypted ONNX model**: each selected kernel replaced by a draw from `N(μ_p, s_p)`,
//!   where `μ_p`, `s_p` are the mean and standard deviation of kernel position `p` over all
//!   kernels of the layer (DPRM), so the layer keeps its weight statistics and the encrypted
//!   kernels cannot be spotted statistically; the model loads and runs, near chance;
//! - a **sealed bundle** with the original values of the selected kernels, split into `M` nested
//!   levels by importance: with `S` kernels selected in a layer, level ℓ restores its
//!   `a_{ℓ-1}` most important ones, `a_m = ⌊(0.6 + 0.4 (m+1)/M) · S⌋`, and level `M` all of them
//!   (the plain model, bit for bit);
//! - one **level key** per level ([`LevelKey`]); the level-ℓ key opens levels `1..=ℓ` only.
//!
//! [`restore`] takes the encrypted model, the bundle and one key, and returns the model of that
//! level. Formats: [`crate::sealed`].
//!
//! Only conv weights that are stored as ONNX initializers (`float`, 4-D) can be protected; that
//! covers every model exported by `scrim train` and most exported CNNs.
//!
//! ```no_run
//! use scrim_seal::selective::{self, LayerSelection};
//! # fn main() -> scrim_seal::Result<()> {
//! let plain = std::fs::read("recognizer.onnx").unwrap_or_default();
//! let layers = selective::conv_layers(&plain)?;
//! let sel: Vec<LayerSelection> = layers
//!     .iter()
//!     .map(|l| LayerSelection::new(&l.name, (0..selective::selection_size(l.kernels(), 0.05)).collect()))
//!     .collect();
//! let mut rng = selective::os_rng();
//! let p = selective::protect(&plain, &sel, 4, &mut rng)?;
//! let level2 = selective::restore(&p.onnx, &p.bundle, &p.keys[1])?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use prost::Message;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use tract_onnx::pb;

use crate::proto::{decode, find, find_mut, floats, graph, graph_mut, set_floats};
use crate::sealed::{self, LevelKey};
use crate::{Error, Result};

/// A conv layer whose weight is an initializer, i.e. a candidate for protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLayer {
    /// Name of the weight initializer (what [`LayerSelection::layer`] refers to).
    pub name: String,
    /// Weight shape `[F, C/groups, kh, kw]`.
    pub shape: [usize; 4],
}

impl ConvLayer {
    /// Number of kernels `N = F · C/groups`.
    pub fn kernels(&self) -> usize {
        self.shape[0] * self.shape[1]
    }
    /// Values per kernel, `kh · kw`.
    pub fn kernel_len(&self) -> usize {
        self.shape[2] * self.shape[3]
    }
}

/// The kernels to protect in one layer, most important first (kernel `f · C + c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSelection {
    /// Weight initializer name.
    pub layer: String,
    /// Selected kernel indices by decreasing importance.
    pub ranked: Vec<usize>,
}

impl LayerSelection {
    /// A selection of `ranked` kernels of `layer`.
    pub fn new(layer: &str, ranked: Vec<usize>) -> Self {
        Self {
            layer: layer.into(),
            ranked,
        }
    }
}

/// What [`protect`] produces.
#[derive(Debug)]
pub struct Protected {
    /// The encrypted ONNX model.
    pub onnx: Vec<u8>,
    /// The sealed restoration bundle.
    pub bundle: Vec<u8>,
    /// The level keys, level 1 first.
    pub keys: Vec<LevelKey>,
}

/// `S = min(⌊N · ratio⌋ + 1, N)`: kernels selected in a layer of `n` kernels.
pub fn selection_size(n: usize, ratio: f64) -> usize {
    (((n as f64) * ratio.max(0.0)).floor() as usize + 1).min(n)
}

/// The nested prefix sizes `a_0..a_{M-1}`, `a_m = ⌊(0.6 + 0.4 (m+1)/M) · S⌋`; level ℓ ≥ 1
/// restores the `a_{ℓ-1}` most important kernels, so `a_{M-1} = S`.
pub fn level_counts(selected: usize, levels: usize) -> Vec<usize> {
    (0..levels)
        .map(|m| {
            let f = 0.6 + 0.4 * (m + 1) as f64 / levels as f64;
            // The last level restores everything, whatever rounding says.
            if m + 1 == levels {
                selected
            } else {
                ((f * selected as f64) + 1e-9).floor() as usize
            }
        })
        .collect()
}

/// A ChaCha20 generator seeded from the operating system, for [`protect`].
pub fn os_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// The conv layers of an ONNX model whose weights are float initializers, in graph order.
///
/// # Errors
/// [`Error::InvalidModel`] for bytes that are not an ONNX model.
pub fn conv_layers(onnx: &[u8]) -> Result<Vec<ConvLayer>> {
    let model = decode(onnx)?;
    let graph = graph(&model)?;
    let inits: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut out = Vec::new();
    for node in graph.node.iter().filter(|n| n.op_type == "Conv") {
        let Some(t) = node.input.get(1).and_then(|w| inits.get(w.as_str())) else {
            continue;
        };
        if t.dims.len() == 4 && t.data_type == pb::tensor_proto::DataType::Float as i32 {
            let d = |i: usize| t.dims[i].max(0) as usize;
            out.push(ConvLayer {
                name: t.name.clone(),
                shape: [d(0), d(1), d(2), d(3)],
            });
        }
    }
    Ok(out)
}

/// The values of a float initializer.
///
/// # Errors
/// [`Error::InvalidModel`] when there is no such float initializer.
pub fn initializer(onnx: &[u8], name: &str) -> Result<Vec<f32>> {
    let model = decode(onnx)?;
    let t = find(graph(&model)?, name)?;
    floats(t)
}

/// Encrypts the selected kernels (DPRM) and seals their original values for `levels` nested
/// service levels. `rng` supplies the master secret, the nonces and the replacement draws: pass
/// [`os_rng`] (a seeded generator only in tests).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown layer, a kernel index out of range, a repeated
/// kernel, or `levels` outside `1..=32`; [`Error::InvalidModel`] for a malformed model.
pub fn protect<R: rand::CryptoRng>(
    plain: &[u8],
    selections: &[LayerSelection],
    levels: usize,
    rng: &mut R,
) -> Result<Protected> {
    let (bundle_id, keys) = sealed::generate_keys(levels, rng)?;
    let layers = conv_layers(plain)?;
    let mut model = decode(plain)?;
    let mut segments: Vec<Records> = vec![Records::default(); levels];
    let g = graph_mut(&mut model)?;
    for sel in selections {
        let layer = layers.iter().find(|l| l.name == sel.layer).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no conv layer with an initializer weight named {:?}",
                sel.layer
            ))
        })?;
        let (n, k) = (layer.kernels(), layer.kernel_len());
        let mut seen = vec![false; n];
        for &i in &sel.ranked {
            if i >= n || std::mem::replace(&mut seen[i], true) {
                return Err(Error::InvalidArgument(format!(
                    "layer {:?}: kernel {i} is out of range (N = {n}) or selected twice",
                    sel.layer
                )));
            }
        }
        let t = find_mut(g, &sel.layer)?;
        let mut w = floats(t)?;
        let stats = position_stats(&w, k);
        let counts = level_counts(sel.ranked.len(), levels);
        let mut start = 0;
        for (lvl, &end) in counts.iter().enumerate() {
            for &i in &sel.ranked[start..end] {
                segments[lvl].push(&sel.layer, i, &w[i * k..(i + 1) * k]);
            }
            start = end;
        }
        for &i in &sel.ranked {
            for (p, (mu, s)) in stats.iter().enumerate() {
                let draw: f32 = match Normal::new(*mu, *s) {
                    Ok(d) => d.sample(rng),
                    Err(_) => *mu,
                };
                w[i * k + p] = draw;
            }
        }
        set_floats(t, &w);
    }
    let onnx = model.encode_to_vec();
    let plaintexts: Vec<Vec<u8>> = segments.iter().map(Records::encode).collect();
    let bundle = sealed::seal(bundle_id, sealed::sha256(&onnx), &keys, &plaintexts, rng)?;
    Ok(Protected { onnx, bundle, keys })
}

/// The model of `key`'s level: the encrypted model with the kernels of levels `1..=ℓ` restored.
/// With the level-M key this is the plain model, bit for bit.
///
/// # Errors
/// [`Error::Authentication`] for a wrong key or a modified bundle; [`Error::InvalidKey`] for a
/// malformed bundle, or a key or bundle that belongs to another model; [`Error::InvalidModel`]
/// when the restoration data does not fit the model.
pub fn restore(encrypted: &[u8], bundle: &[u8], key: &LevelKey) -> Result<Vec<u8>> {
    let segments = sealed::open(bundle, sealed::sha256(encrypted), key)?;
    let mut model = decode(encrypted)?;
    let g = graph_mut(&mut model)?;
    let mut weights: HashMap<String, Vec<f32>> = HashMap::new();
    for seg in &segments {
        for r in Records::decode(seg)? {
            if !weights.contains_key(&r.layer) {
                let w = floats(find_mut(g, &r.layer)?)?;
                weights.insert(r.layer.clone(), w);
            }
            let w = weights
                .get_mut(&r.layer)
                .ok_or_else(|| Error::InvalidModel(format!("no initializer {:?}", r.layer)))?;
            let k = r.values.len();
            let range = r.kernel * k..(r.kernel + 1) * k;
            if range.end > w.len() {
                return Err(Error::InvalidModel(format!(
                    "restoration data for kernel {} does not fit layer {:?}",
                    r.kernel, r.layer
                )));
            }
            w[range].copy_from_slice(&r.values);
        }
    }
    for (name, w) in &weights {
        set_floats(find_mut(g, name)?, w);
    }
    Ok(model.encode_to_vec())
}

/// [`restore`] on files: the encrypted ONNX model, its bundle and a level key file.
///
/// # Errors
/// As [`restore`], plus [`Error::Io`] for unreadable files; messages name the files.
pub fn restore_files(
    encrypted: &std::path::Path,
    bundle: &std::path::Path,
    key: &std::path::Path,
) -> Result<Vec<u8>> {
    let model = crate::error::read_file(encrypted)?;
    let sealed = crate::error::read_file(bundle)?;
    let key_ = LevelKey::load(key)?;
    restore(&model, &sealed, &key_).map_err(|e| match e {
        Error::Authentication(m) => Error::Authentication(format!(
            "{} with key {}: {m}",
            bundle.display(),
            key.display()
        )),
        Error::InvalidKey(m) => Error::InvalidKey(format!(
            "{} with key {}: {m}",
            bundle.display(),
            key.display()
        )),
        other => other,
    })
}

/// Per-position mean and standard deviation over all kernels of a layer (`k` values each).
pub fn position_stats(w: &[f32], k: usize) -> Vec<(f32, f32)> {
    let n = (w.len() / k.max(1)).max(1) as f64;
    (0..k)
        .map(|p| {
            let vals = w.iter().skip(p).step_by(k.max(1)).map(|&v| f64::from(v));
            let mean = vals.clone().sum::<f64>() / n;
            let var = vals.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            (mean as f32, var.sqrt() as f32)
        })
        .collect()
}

/// One restored kernel.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    layer: String,
    kernel: usize,
    values: Vec<f32>,
}

/// Plaintext of one bundle segment: `count: u32`, then per kernel `name_len: u16`, name (UTF-8),
/// `kernel: u32`, `len: u16`, `len` × `f32`, all little-endian.
#[derive(Debug, Clone, Default)]
struct Records(Vec<u8>, u32);

impl Records {
    fn push(&mut self, layer: &str, kernel: usize, values: &[f32]) {
        self.0
            .extend_from_slice(&(layer.len() as u16).to_le_bytes());
        self.0.extend_from_slice(layer.as_bytes());
        self.0.extend_from_slice(&(kernel as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(values.len() as u16).to_le_bytes());
        for v in values {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self.1 += 1;
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.1.to_le_bytes().to_vec();
        out.extend_from_slice(&self.0);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Record>> {
        let bad = || Error::InvalidModel("malformed restoration data".into());
        let mut r = Reader(bytes);
        let count = r.u32().ok_or_else(bad)?;
        let mut out = Vec::with_capacity(count.min(1 << 20) as usize);
        for _ in 0..count {
            let len = r.u16().ok_or_else(bad)? as usize;
            let name = std::str::from_utf8(r.take(len).ok_or_else(bad)?).map_err(|_| bad())?;
            let kernel = r.u32().ok_or_else(bad)? as usize;
            let k = r.u16().ok_or_else(bad)? as usize;
            let vals = r.take(4 * k).ok_or_else(bad)?;
            out.push(Record {
                layer: name.to_string(),
                kernel,
                values: vals
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            });
        }
        Ok(out)
    }
}

struct Reader<'a>(&'a [u8]);
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
