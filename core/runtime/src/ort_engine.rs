//! The second engine: onnxruntime through the `ort` crate, for the cloud (`ort` feature).
//!
//! The shared library is loaded at run time (`ort`'s `load-dynamic`): nothing is downloaded at
//! build time, and a build with the feature runs fine where the library is absent until a model
//! asks for it. PyPI's `onnxruntime` wheel ships the library as
//! `onnxruntime/capi/libonnxruntime.so.<version>`. `ort` 2.0.0-rc.15 speaks onnxruntime's C API
//! version 17 and newer libraries keep answering it (1.32 was tested).
//!
//! A session runs one batch at a time (`Session::run` takes `&mut self`), so an [`OrtModel`]
//! keeps a pool of single-threaded sessions: one per concurrent caller, each built once, the
//! same shape as tract's pool of run states. The thread count of the caller is the parallelism.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

use crate::manifest::Manifest;
use crate::runtime::Output;
use crate::{Error, Result};

/// The process's onnxruntime environment and the library it came from: onnxruntime can be
/// loaded once per process.
static ENVIRONMENT: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

fn environment(library: &Path) -> Result<&'static ort::environment::Environment> {
    let _guard = LOADING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((loaded, env)) = ENVIRONMENT.get() {
        return if loaded == library {
            Ok(env)
        } else {
            Err(Error::InvalidArgument(format!(
                "onnxruntime is already loaded from {} in this process; cannot load {} too",
                loaded.display(),
                library.display()
            )))
        };
    }
    if !library.is_file() {
        return Err(Error::InvalidArgument(format!(
            "no onnxruntime library at {} (pip install onnxruntime, then point at \
             site-packages/onnxruntime/capi/libonnxruntime.so.*)",
            library.display()
        )));
    }
    let builder = ort::init_from(library).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot load onnxruntime from {}: {e}",
            library.display()
        ))
    })?;
    let env = builder
        .with_name("scrim")
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start onnxruntime: {e}")))?;
    Ok(&ENVIRONMENT.get_or_init(|| (library.to_path_buf(), env)).1)
}

/// A model in onnxruntime: its bytes (to build more sessions) and the idle sessions.
pub(crate) struct OrtModel {
    onnx: Vec<u8>,
    env: &'static ort::environment::Environment,
    idle: Mutex<Vec<Session>>,
    /// The batch size the graph declares, when it declares one (then images run one batch of
    /// that size at a time).
    fixed_batch: Option<usize>,
}

impl OrtModel {
    /// Loads onnxruntime from `library` (once per process) and builds a first session.
    pub(crate) fn load(library: &Path, onnx: &[u8], manifest: &Manifest) -> Result<Self> {
        let env = environment(library)?;
        let mut model = Self {
            onnx: onnx.to_vec(),
            env,
            idle: Mutex::new(Vec::new()),
            fixed_batch: None,
        };
        let session = model.session()?;
        if session.inputs().len() != 1 {
            return Err(Error::InvalidModel(format!(
                "expected a model with one image input, found {} inputs",
                session.inputs().len()
            )));
        }
        let declared = session.inputs()[0]
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let i = manifest.input;
        if declared.len() == 4 {
            let want = [i.channels, i.height, i.width];
            for (got, want) in declared[1..].iter().zip(want) {
                if *got > 0 && usize::try_from(*got).ok() != Some(want) {
                    return Err(Error::InvalidModel(format!(
                        "the ONNX input is declared as {declared:?} but the manifest says {}",
                        i.describe()
                    )));
                }
            }
            model.fixed_batch = usize::try_from(declared[0]).ok().filter(|&b| b > 0);
        }
        model.give_back(session);
        Ok(model)
    }

    fn session(&self) -> Result<Session> {
        let err = |e: String| Error::InvalidModel(format!("onnxruntime: {e}"));
        Session::builder(self.env)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| err(e.to_string()))?
            .commit_from_memory(&self.onnx)
            .map_err(|e| err(e.to_string()))
    }

    fn give_back(&self, session: Session) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
    }

    /// Runs `data` (`shape`, already normalised) and returns every output.
    pub(crate) fn run(&self, data: &[f32], shape: [usize; 4]) -> Result<Vec<Output>> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut session = match pooled {
            Some(s) => s,
            None => self.session()?,
        };
        let outputs = match self.fixed_batch {
            Some(b) if b != shape[0] => self.run_in_chunks(&mut session, data, shape, b),
            _ => run_once(&mut session, data, shape),
        }?;
        self.give_back(session);
        Ok(outputs)
    }

    /// For a graph that declares its batch size: images in runs of exactly that many.
    fn run_in_chunks(
        &self,
        session: &mut Session,
        data: &[f32],
        shape: [usize; 4],
        batch: usize,
    ) -> Result<Vec<Output>> {
        let per_image = shape[1] * shape[2] * shape[3];
        let mut joined: Vec<Output> = Vec::new();
        let mut start = 0;
        while start < shape[0] {
            let real = (shape[0] - start).min(batch);
            let mut chunk = vec![0.0; batch * per_image];
            chunk[..real * per_image]
                .copy_from_slice(&data[start * per_image..(start + real) * per_image]);
            let outs = run_once(session, &chunk, [batch, shape[1], shape[2], shape[3]])?;
            if joined.is_empty() {
                joined = outs
                    .iter()
                    .map(|o| Output {
                        shape: o.shape.clone(),
                        data: Vec::new(),
                    })
                    .collect();
            }
            for (j, o) in joined.iter_mut().zip(outs) {
                let per_row = o.data.len() / batch.max(1);
                j.data.extend_from_slice(&o.data[..real * per_row]);
            }
            start += real;
        }
        for j in &mut joined {
            if let Some(rows) = j.shape.first_mut() {
                *rows = shape[0];
            }
        }
        Ok(joined)
    }
}

fn run_once(session: &mut Session, data: &[f32], shape: [usize; 4]) -> Result<Vec<Output>> {
    let err = |e: String| Error::InvalidModel(format!("inference failed (onnxruntime): {e}"));
    let input = TensorRef::from_array_view((shape, data)).map_err(|e| err(e.to_string()))?;
    let outputs = session
        .run(ort::inputs![input])
        .map_err(|e| err(e.to_string()))?;
    let mut all = Vec::with_capacity(outputs.len());
    for (_, value) in outputs.iter() {
        let (shape, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| err(format!("non-f32 output: {e}")))?;
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative dimension {d}"))))
            .collect::<Result<Vec<_>>>()?;
        all.push(Output {
            shape,
            data: values.to_vec(),
        });
    }
    Ok(all)
}
