//! Inference over tract: with `runtime/plans.rs` and `runtime/scrim_conv.rs` (Scrim's direct
//! convolution as a tract op), the only code in Scrim that names tract's runtime types.
//!
//! A [`Model`] is loaded once (parsed, typed, optimised) and then run from any number of threads
//! at once: the optimised plans are shared, and each plan keeps the run states it has built in a
//! pool, so a state is built once per concurrent caller rather than once per run. The second
//! engine, onnxruntime (`ort` feature, [`Engine::Onnxruntime`]), lives in `ort_engine.rs`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tract_onnx::prelude::*;

use crate::manifest::{Manifest, Role};
use crate::tensor::ImageTensor;
use crate::{Error, Result};

mod declared;
mod direct_conv;
mod options;
mod output;
mod plans;
mod scrim_chain;
mod scrim_conv;
mod scrim_pool;

pub use direct_conv::winograd::{
    conv3x3, conv3x3_suits, conv3x3_weight_grad, conv3x3_weight_grad_suits,
};
pub use options::{BatchMode, Engine};
pub use output::{Output, PlanChoice, PlanKernels};
pub use scrim_chain::set_blocked_chains;
pub use scrim_conv::{direct_convolutions, set_direct_convolutions};

use declared::check_declared_input;
use plans::{Plan, TractPlans, root_cause};

/// Images already checked, normalised and copied into the engine's own tensors for one model
/// ([`Model::prepare`]); running it again costs no copy.
pub struct PreparedInput {
    /// Which loaded model prepared it (clones share it).
    owner: u64,
    /// Images in the input.
    n: usize,
    data: Prepared,
}

enum Prepared {
    /// One tensor per plan run: (index of the plan, the tensor, its real images).
    Tract(Vec<(usize, TValue, usize)>),
    /// The normalised pixels, `[n, c, h, w]`.
    #[cfg_attr(not(feature = "ort"), allow(dead_code))]
    Flat(Vec<f32>),
}

impl std::fmt::Debug for PreparedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedInput")
            .field("images", &self.n)
            .finish_non_exhaustive()
    }
}

enum Backend {
    Tract(Arc<TractPlans>),
    #[cfg(feature = "ort")]
    Ort(Arc<crate::ort_engine::OrtModel>),
}

impl Backend {
    /// tract's plans (`None` for onnxruntime).
    fn tract(&self) -> Option<&TractPlans> {
        match self {
            Self::Tract(plans) => Some(plans),
            #[cfg(feature = "ort")]
            Self::Ort(_) => None,
        }
    }
}

impl Clone for Backend {
    fn clone(&self) -> Self {
        match self {
            Self::Tract(p) => Self::Tract(Arc::clone(p)),
            #[cfg(feature = "ort")]
            Self::Ort(m) => Self::Ort(Arc::clone(m)),
        }
    }
}

/// An ONNX model with its manifest, optimised for repeated runs.
#[derive(Clone)]
pub struct Model {
    backend: Backend,
    id: u64,
    manifest: Manifest,
    batch: BatchMode,
    engine: Engine,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("role", &self.manifest.role)
            .field("input", &self.manifest.input)
            .field("batch", &self.batch)
            .field("engine", &self.engine.name())
            .finish_non_exhaustive()
    }
}

/// Identifies a loaded model, so that an input prepared by one is never run by another.
fn next_model_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Model {
    /// Loads an ONNX model from bytes into tract and checks it against its manifest with a trial
    /// run.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] when tract cannot parse or optimise the graph, or when its outputs
    /// do not match what the manifest says; [`Error::InvalidManifest`] for a bad manifest.
    pub fn load(onnx: &[u8], manifest: Manifest, batch: BatchMode) -> Result<Self> {
        Self::load_with(onnx, manifest, batch, &Engine::Tract)
    }

    /// [`Model::load`] with a choice of engine.
    ///
    /// # Errors
    /// As [`Model::load`]; [`Error::InvalidArgument`] for onnxruntime when this build lacks the
    /// `ort` feature or its library cannot be loaded.
    pub fn load_with(
        onnx: &[u8],
        manifest: Manifest,
        batch: BatchMode,
        engine: &Engine,
    ) -> Result<Self> {
        manifest.validate()?;
        crate::model_limits::check(onnx)?;
        let backend = match engine {
            Engine::Tract => Backend::Tract(Arc::new(Self::tract_plans(onnx, &manifest, batch)?)),
            #[cfg(feature = "ort")]
            Engine::Onnxruntime { library } => Backend::Ort(Arc::new(
                crate::ort_engine::OrtModel::load(library, onnx, &manifest)?,
            )),
            #[cfg(not(feature = "ort"))]
            Engine::Onnxruntime { .. } => {
                return Err(Error::InvalidArgument(
                    "this build has no onnxruntime engine (scrim-core's `ort` cargo feature)"
                        .into(),
                ));
            }
        };
        let model = Self {
            backend,
            id: next_model_id(),
            manifest,
            batch,
            engine: engine.clone(),
        };
        model.check_outputs()?;
        Ok(model)
    }

    fn tract_plans(onnx: &[u8], manifest: &Manifest, batch: BatchMode) -> Result<TractPlans> {
        let sizes: Vec<Option<usize>> = match batch.planned_sizes() {
            Some(sizes) => sizes.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut plans = Vec::with_capacity(sizes.len());
        for size in sizes {
            // A hostile graph may still make tract allocate without bound while it folds
            // constants; tract panics then ("failed to allocate"), which is the file's fault,
            // not a crash.
            let runnable = std::panic::catch_unwind(|| Self::plan(onnx, manifest, size)).map_err(
                |panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown reason".into());
                    Error::InvalidModel(format!("tract failed while loading the graph: {why}"))
                },
            )??;
            plans.push(Plan::new(size, runnable));
        }
        let mut plans = TractPlans {
            plans,
            choices: Vec::new(),
        };
        if matches!(batch, BatchMode::Tuned { .. }) {
            let i = manifest.input;
            plans.keep_faster([i.channels, i.height, i.width])?;
        }
        Ok(plans)
    }

    /// Parses, types and optimises the graph for the manifest's input and a batch of `batch`
    /// images (`None`: any number).
    fn plan(
        onnx: &[u8],
        manifest: &Manifest,
        batch: Option<usize>,
    ) -> Result<Arc<TypedRunnableModel>> {
        let i = manifest.input;
        let model_err = |stage: &str, e: TractError| {
            Error::InvalidModel(format!("{stage}: {}", root_cause(&e)))
        };
        let mut inference = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(|e| model_err("not a loadable ONNX model", e))?;
        if inference.inputs.len() != 1 {
            return Err(Error::InvalidModel(format!(
                "expected a model with one image input, found {} inputs",
                inference.inputs.len()
            )));
        }
        check_declared_input(&inference, manifest)?;
        let fact = match batch {
            Some(n) => f32::fact([n, i.channels, i.height, i.width]).into(),
            None => {
                let n = inference.symbols.sym("N");
                f32::fact(&[
                    n.to_dim(),
                    i.channels.to_dim(),
                    i.height.to_dim(),
                    i.width.to_dim(),
                ])
                .into()
            }
        };
        inference
            .set_input_fact(0, fact)
            .map_err(|e| model_err("cannot set the input shape", e))?;
        let build_err = |e| {
            model_err(
                &format!("cannot build the graph for input 1x{}", i.describe()),
                e,
            )
        };
        let mut typed = inference
            .into_typed()
            .and_then(TypedModel::into_decluttered)
            .map_err(build_err)?;
        if scrim_conv::direct_convolutions() {
            scrim_conv::rewrite(&mut typed).map_err(build_err)?;
            scrim_pool::rewrite(&mut typed).map_err(build_err)?;
        }
        let plan = typed
            .into_optimized()
            .map_err(build_err)?
            .into_runnable()
            .map_err(|e| model_err("cannot plan the graph", e))?;
        Ok(plan)
    }

    /// Loads `path` and the manifest next to it (`model.onnx` → `model.json`).
    ///
    /// # Errors
    /// As [`Model::load`], plus [`Error::MissingManifest`] when the manifest is not beside the
    /// model and [`Error::Io`] for unreadable files.
    pub fn load_path(path: &Path, batch: BatchMode) -> Result<Self> {
        Self::load_path_with(path, batch, &Engine::Tract)
    }

    /// [`Model::load_path`] with a choice of engine.
    ///
    /// # Errors
    /// As [`Model::load_path`] and [`Model::load_with`].
    pub fn load_path_with(path: &Path, batch: BatchMode, engine: &Engine) -> Result<Self> {
        let manifest = Manifest::load_beside(path)?;
        let bytes = crate::error::read_file_limited(path, crate::model_limits::MAX_MODEL_BYTES)?;
        Self::load_with(&bytes, manifest, batch, engine).map_err(|e| match e {
            Error::InvalidModel(msg) => Error::InvalidModel(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// The manifest the model was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The batch mode the plan was built for.
    pub fn batch_mode(&self) -> BatchMode {
        self.batch
    }

    /// The engine that runs the model.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// For a [`BatchMode::Tuned`] model in tract, every fixed-batch plan built, its time per
    /// image at load and whether it was kept (empty otherwise).
    pub fn plan_choices(&self) -> Vec<PlanChoice> {
        self.backend
            .tract()
            .map(|p| p.choices.clone())
            .unwrap_or_default()
    }

    /// For each tract plan, the method tract picked for every convolution and max pooling
    /// (empty for onnxruntime, which does not say).
    pub fn kernels(&self) -> Vec<PlanKernels> {
        self.backend
            .tract()
            .map(TractPlans::kernels)
            .unwrap_or_default()
    }

    /// Runs the model on images in `[0, 1]` (the manifest's normalisation is applied here).
    ///
    /// # Errors
    /// [`Error::WrongSize`] when the images are not the manifest's input size (or, for a
    /// single-image model, when more than one is given); [`Error::InvalidModel`] if the engine
    /// fails.
    pub fn run(&self, images: &ImageTensor) -> Result<Vec<Output>> {
        self.run_prepared(&self.prepare(images)?)
    }

    /// Checks, normalises and copies images into the runtime's own tensor once, for repeated
    /// runs on the same input ([`Model::run_prepared`]): what [`Model::run`] does before each
    /// run. Benchmarks use it to time the network alone, as other runtimes are timed on an
    /// input already in their format.
    ///
    /// # Errors
    /// As [`Model::run`], for the size.
    pub fn prepare(&self, images: &ImageTensor) -> Result<PreparedInput> {
        let i = self.manifest.input;
        let [n, c, h, w] = images.shape();
        let batch_ok = match self.batch {
            BatchMode::Single => n == 1,
            BatchMode::Dynamic | BatchMode::Planned { .. } | BatchMode::Tuned { .. } => n >= 1,
        };
        if (c, h, w) != (i.channels, i.height, i.width) || !batch_ok {
            let batch = if self.batch == BatchMode::Single {
                "1"
            } else {
                "N"
            };
            return Err(Error::WrongSize {
                expected: format!("{batch}x{}", i.describe()),
                found: format!("{n}x{}", images.describe()),
            });
        }
        let data = if self.manifest.normalization.is_identity() {
            std::borrow::Cow::Borrowed(images.data())
        } else {
            std::borrow::Cow::Owned(self.normalize(images))
        };
        let prepared = match &self.backend {
            Backend::Tract(plans) => Prepared::Tract(plans.chunks(&data, n, [c, h, w])?),
            #[cfg(feature = "ort")]
            Backend::Ort(_) => Prepared::Flat(data.into_owned()),
        };
        Ok(PreparedInput {
            owner: self.id,
            n,
            data: prepared,
        })
    }

    /// Runs the model on an input from [`Model::prepare`] (of this model, or of a clone).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an input prepared by another model;
    /// [`Error::InvalidModel`] if the engine fails.
    pub fn run_prepared(&self, input: &PreparedInput) -> Result<Vec<Output>> {
        if input.owner != self.id {
            return Err(Error::InvalidArgument(
                "this input was prepared by another model (its size or normalisation may differ)"
                    .into(),
            ));
        }
        match (&self.backend, &input.data) {
            (Backend::Tract(plans), Prepared::Tract(chunks)) => plans.run(chunks, input.n),
            #[cfg(feature = "ort")]
            (Backend::Ort(model), Prepared::Flat(data)) => {
                let i = self.manifest.input;
                model.run(data, [input.n, i.channels, i.height, i.width])
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::InvalidArgument(
                "this input was prepared for another engine".into(),
            )),
        }
    }

    fn normalize(&self, images: &ImageTensor) -> Vec<f32> {
        let norm = &self.manifest.normalization;
        let plane = images.shape()[2] * images.shape()[3];
        let c = images.shape()[1];
        images
            .data()
            .iter()
            .enumerate()
            .map(|(k, v)| {
                let ch = (k / plane) % c;
                (v - norm.mean[ch]) / norm.std[ch]
            })
            .collect()
    }

    /// A trial run on a grey image: the outputs must be what the manifest's role promises.
    fn check_outputs(&self) -> Result<()> {
        let i = self.manifest.input;
        let probe = ImageTensor::new([1, 3, i.height, i.width], vec![0.5; i.len()])?;
        let outs = self.run(&probe)?;
        let image_shape = vec![1, 3, i.height, i.width];
        match self.manifest.role {
            Role::Recognizer => {
                let want = vec![1, self.manifest.labels.len()];
                match outs.first() {
                    Some(o) if o.shape == want => Ok(()),
                    Some(o) => Err(Error::InvalidModel(format!(
                        "recognizer output has shape {:?}, but the manifest lists {} labels \
                         (expected {want:?})",
                        o.shape,
                        self.manifest.labels.len()
                    ))),
                    None => Err(Error::InvalidModel("the model has no output".into())),
                }
            }
            Role::Perturber => {
                let spec =
                    self.manifest.perturber.as_ref().ok_or_else(|| {
                        Error::InvalidManifest("perturber section missing".into())
                    })?;
                if outs.len() != spec.outputs.len() {
                    return Err(Error::InvalidModel(format!(
                        "the perturber graph has {} outputs, the manifest lists {:?}",
                        outs.len(),
                        spec.outputs
                    )));
                }
                if let Some(r) = &spec.release {
                    let want = vec![1, r.channels, r.side, r.side];
                    return match outs.first() {
                        Some(o) if o.shape == want => Ok(()),
                        Some(o) => Err(Error::InvalidModel(format!(
                            "the release map has shape {:?}, the manifest's release says {want:?}",
                            o.shape
                        ))),
                        None => Err(Error::InvalidModel("the model has no output".into())),
                    };
                }
                // Each map is at the image's resolution or at an integer fraction of it (a σ
                // map computed at low resolution, expanded by the device).
                for (o, name) in outs.iter().zip(&spec.outputs) {
                    let fits = matches!(o.shape[..], [1, 3, h, w]
                        if crate::tensor::upsample_factor([h, w], [i.height, i.width]).is_some());
                    if !fits {
                        return Err(Error::InvalidModel(format!(
                            "perturber output {name:?} has shape {:?}, expected {image_shape:?} \
                             (the input's shape) or an integer fraction of its sides",
                            o.shape
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}
