//! The image dimensions an ONNX graph declares, checked against its manifest before tract
//! plans it.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::plans::root_cause;
use crate::manifest::Manifest;
use crate::{Error, Result};

/// A graph that declares fixed image dimensions must declare the manifest's.
pub(super) fn check_declared_input(model: &InferenceModel, manifest: &Manifest) -> Result<()> {
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
