//! Inference over tract: the only file in Scrim that names tract's runtime types.
//!
//! A [`Model`] is loaded once (parsed, typed, optimised) and then run from any number of threads
//! at once: the optimised plan is shared, each run gets its own state.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::manifest::{Manifest, Role};
use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// How many images a loaded model accepts per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchMode {
    /// Exactly one image: fastest for the phone.
    #[default]
    Single,
    /// Any batch size (a symbolic batch dimension): for servers that micro-batch.
    Dynamic,
}

/// One output of a model run.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Shape, batch first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Output {
    /// A perturber map as an image tensor at `height × width`: a map computed at an integer
    /// fraction of the image's resolution is expanded (nearest), one at full size is kept.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for an output that is not `[N, C, h, w]`;
    /// [`Error::InvalidArgument`] when `h × w` is not an integer fraction of the target.
    pub fn into_map(self, height: usize, width: usize) -> Result<ImageTensor> {
        let [n, c, h, w] = self.shape[..] else {
            return Err(Error::InvalidModel(format!(
                "a perturber map must be [N, C, H, W], got shape {:?}",
                self.shape
            )));
        };
        ImageTensor::new([n, c, h, w], self.data)?.upsample_nearest(height, width)
    }
}

/// Images already checked, normalised and copied into tract's tensor for one model
/// ([`Model::prepare`]); running it again costs no copy.
pub struct PreparedInput {
    value: TValue,
    plan: std::sync::Weak<TypedRunnableModel>,
}

impl std::fmt::Debug for PreparedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedInput")
            .field("shape", &self.value.shape())
            .finish_non_exhaustive()
    }
}

/// An ONNX model with its manifest, optimised for repeated runs.
#[derive(Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    manifest: Manifest,
    batch: BatchMode,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("role", &self.manifest.role)
            .field("input", &self.manifest.input)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads an ONNX model from bytes and checks it against its manifest with a trial run.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] when tract cannot parse or optimise the graph, or when its outputs
    /// do not match what the manifest says; [`Error::InvalidManifest`] for a bad manifest.
    pub fn load(onnx: &[u8], manifest: Manifest, batch: BatchMode) -> Result<Self> {
        manifest.validate()?;
        crate::model_limits::check(onnx)?;
        // A hostile graph may still make tract allocate without bound while it folds constants;
        // tract panics then ("failed to allocate"), which is the file's fault, not a crash.
        let plan = std::panic::catch_unwind(|| Self::plan(onnx, &manifest, batch)).map_err(
            |panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown reason".into());
                Error::InvalidModel(format!("tract failed while loading the graph: {why}"))
            },
        )??;
        let model = Self {
            plan,
            manifest,
            batch,
        };
        model.check_outputs()?;
        Ok(model)
    }

    /// Parses, types and optimises the graph for the manifest's input and `batch`.
    fn plan(onnx: &[u8], manifest: &Manifest, batch: BatchMode) -> Result<Arc<TypedRunnableModel>> {
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
            BatchMode::Single => f32::fact([1, i.channels, i.height, i.width]).into(),
            BatchMode::Dynamic => {
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
        let plan = inference
            .into_optimized()
            .map_err(|e| {
                model_err(
                    &format!("cannot build the graph for input 1x{}", i.describe()),
                    e,
                )
            })?
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
        let manifest = Manifest::load_beside(path)?;
        let bytes = crate::error::read_file_limited(path, crate::model_limits::MAX_MODEL_BYTES)?;
        Self::load(&bytes, manifest, batch).map_err(|e| match e {
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

    /// Runs the model on images in `[0, 1]` (the manifest's normalisation is applied here).
    ///
    /// # Errors
    /// [`Error::WrongSize`] when the images are not the manifest's input size (or, for a
    /// single-image model, when more than one is given); [`Error::InvalidModel`] if tract fails.
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
            BatchMode::Dynamic => n >= 1,
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
        let input = if self.manifest.normalization.is_identity() {
            Tensor::from_shape(&[n, c, h, w], images.data())
        } else {
            Tensor::from_shape(&[n, c, h, w], &self.normalize(images))
        }
        .map_err(|e| Error::InvalidModel(root_cause(&e)))?;
        Ok(PreparedInput {
            value: input.into_tvalue(),
            plan: Arc::downgrade(&self.plan),
        })
    }

    /// Runs the model on an input from [`Model::prepare`] (of this model, or of a clone).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an input prepared by another model;
    /// [`Error::InvalidModel`] if tract fails.
    pub fn run_prepared(&self, input: &PreparedInput) -> Result<Vec<Output>> {
        if !std::ptr::eq(input.plan.as_ptr(), Arc::as_ptr(&self.plan)) {
            return Err(Error::InvalidArgument(
                "this input was prepared by another model (its size or normalisation may differ)"
                    .into(),
            ));
        }
        let outputs = self
            .plan
            .run(tvec!(input.value.clone()))
            .map_err(|e| Error::InvalidModel(format!("inference failed: {}", root_cause(&e))))?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_plain_array_view::<f32>().map_err(|e| {
                    Error::InvalidModel(format!("non-f32 output: {}", root_cause(&e)))
                })?;
                Ok(Output {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                })
            })
            .collect()
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

/// A graph that declares fixed image dimensions must declare the manifest's.
fn check_declared_input(model: &InferenceModel, manifest: &Manifest) -> Result<()> {
    let i = manifest.input;
    let fact = model
        .input_fact(0)
        .map_err(|e| Error::InvalidModel(format!("unreadable input: {}", root_cause(&e))))?;
    let dims: Vec<Option<usize>> = fact
        .shape
        .dims()
        .map(|d| {
            d.concretize()
                .and_then(|d| d.as_i64())
                .and_then(|v| usize::try_from(v).ok())
        })
        .collect();
    if dims.len() == 4 {
        let want = [Some(i.channels), Some(i.height), Some(i.width)];
        for (k, (got, want)) in dims[1..].iter().zip(want).enumerate() {
            if got.is_some() && *got != want {
                let show = |d: &Option<usize>| d.map_or("?".to_string(), |v| v.to_string());
                return Err(Error::InvalidModel(format!(
                    "the ONNX input is declared as Nx{}x{}x{} but the manifest says {} (dimension {})",
                    show(&dims[1]),
                    show(&dims[2]),
                    show(&dims[3]),
                    i.describe(),
                    k + 1
                )));
            }
        }
    } else if !dims.is_empty() {
        return Err(Error::InvalidModel(format!(
            "expected a 4-D NCHW image input, the ONNX input has rank {}",
            dims.len()
        )));
    }
    Ok(())
}

/// The innermost message of a tract error chain, which is usually the informative one, with the
/// outer context in front.
fn root_cause(e: &TractError) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    match chain.as_slice() {
        [] => "unknown error".into(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}: {last}"),
    }
}
