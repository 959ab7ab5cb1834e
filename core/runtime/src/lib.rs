//! # scrim-core
//!
//! The device runtime of Scrim, shared by the mobile SDK, the cloud server and the CLI. It does
//! no network I/O and does not depend on burn: models arrive as ONNX files with a JSON manifest.
//! The provider's model protection (selective weight encryption, sealed level bundles,
//! patch-model encryption) is the separate crate `scrim-seal`, which the phone library does not
//! link.
//!
//! - [`imaging`]: decode JPEG/PNG/WebP safely, resize, convert to tensors, encode PNG.
//! - [`noise`]: CSPRNG noise and the perturbation formula.
//! - [`release`]: the bounded-capacity release (a low-resolution map and fixed noise), and the
//!   bound on what one upload can carry.
//! - [`erasure`]: linear concept erasure (LEACE), a fixed low-rank correction of the image that
//!   leaves no linear trace of a sensitive label.
//! - [`upload`]: an upload before its noise, for drawing the same photo's upload again.
//! - [`cost`]: multiply-adds per image of any ONNX graph (tract's cost model).
//! - [`runtime`]: [`Model`], ONNX inference over tract (or, with the `ort` feature, over
//!   onnxruntime loaded at run time: [`Engine`]).
//! - [`manifest`]: the JSON description that travels with every ONNX file.
//! - [`onnx`]: an ONNX graph writer for the models trained in `scrim-models`; [`onnx_graph`]: a
//!   read-only view of an ONNX graph.
//! - [`perturb`]: [`Perturber`], the one on-device perturbation path.
//! - [`keys`]: secret key files and per-purpose key derivation (HKDF-SHA256 → ChaCha20).
//! - [`blockwise`]: key-based block-wise image transforms (shuffle, negative/positive, FFX, patch).
//! - [`fixtures`]: tiny untrained models for tests of crates without burn.
//!
//! ```no_run
//! use scrim_core::{BatchMode, Model, Perturber};
//! # fn main() -> scrim_core::Result<()> {
//! let model = Model::load_path("runs/demo/perturber.onnx".as_ref(), BatchMode::Single)?;
//! let perturber = Perturber::new(model)?;
//! let upload = perturber.perturb(&std::fs::read("photo.jpg").unwrap_or_default())?;
//! println!("{}x{} PNG, {} bytes", upload.width, upload.height, upload.png.len());
//! # Ok(()) }
//! ```

pub mod blockwise;
pub mod cost;
pub mod erasure;
mod error;
pub mod fixtures;
pub mod imaging;
pub mod keys;
pub mod manifest;
pub mod model_limits;
pub mod noise;
pub mod onnx;
pub mod onnx_graph;
#[cfg(feature = "ort")]
mod ort_engine;
pub mod perturb;
pub mod release;
pub mod runtime;
mod tensor;
pub mod upload;

pub use blockwise::{BlockTransform, Scheme};
pub use error::{Error, Result, read_file_limited};
pub use imaging::DecodeLimits;
pub use keys::SecretKey;
pub use manifest::{InputSpec, Manifest, Role};
pub use noise::{NoiseKind, NoiseSource};
pub use perturb::{PerturbedImage, Perturber};
pub use runtime::{
    BatchMode, Engine, Model, Output, PlanChoice, PlanKernels, PreparedInput, direct_convolutions,
    set_blocked_chains, set_direct_convolutions,
};
pub use tensor::ImageTensor;
pub use upload::UploadBase;
