//! What a model costs to run: multiply-adds per image, counted by tract's cost model on the
//! decluttered graph: convolutions, matrix products and linear layers, with the bias adds and
//! the few element-wise operations tract also counts as multiply-adds. Pooling, activations and
//! the device's noise are not counted. FLOPs are about twice this.

use tract_onnx::prelude::*;

use crate::manifest::InputSpec;
use crate::{Error, Result};

/// Multiply-adds to run the ONNX graph `onnx` on one image of `input`.
///
/// # Errors
/// [`Error::InvalidModel`] when tract cannot read or analyse the graph.
pub fn multiply_adds(onnx: &[u8], input: InputSpec) -> Result<u64> {
    let err = |e: TractError| Error::InvalidModel(format!("cannot count multiply-adds: {e}"));
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .map_err(err)?;
    model
        .set_input_fact(
            0,
            f32::fact([1, input.channels, input.height, input.width]).into(),
        )
        .map_err(err)?;
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(err)?;
    let mut total = 0u64;
    for node in typed.nodes() {
        let inputs = typed.node_input_facts(node.id).map_err(err)?;
        for (cost, n) in node.op.cost(&inputs).map_err(err)? {
            if matches!(cost, tract_onnx::tract_core::ops::Cost::FMA(_)) {
                let n = n.to_i64().map_err(|e| {
                    Error::InvalidModel(format!("a cost that depends on a symbol: {e}"))
                })?;
                total += u64::try_from(n).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_convolutions_of_a_fixture() {
        // fixtures::recognizer: a 4×4 stride-4 conv 3→8 on 16×16 (4×4 outputs), then a
        // linear layer 8→2.
        let (onnx, m) = crate::fixtures::recognizer(16, &["a", "b"]);
        let macs = multiply_adds(&onnx, m.input).expect("count");
        // 16 outputs × 8 channels × 3·4·4 weights = 6,144, plus what tract counts for the bias
        // adds and the 8→2 linear layer.
        let conv = 16 * 8 * 3 * 4 * 4;
        assert!(macs >= conv && macs <= conv + 200, "{macs}");
        // The bounded fixture: an average pool (each of the 768 inputs added once, at most)
        // and a 1×1 conv 3→1 on a 4×4 map.
        let (onnx, m) = crate::fixtures::bounded_perturber(16, 4, 0.2);
        let macs = multiply_adds(&onnx, m.input).expect("count");
        assert!((48..=1000).contains(&macs), "{macs}");
    }
}
