//! Size limits checked on an ONNX file before tract sees it.
//!
//! tract folds constants while it optimises a graph, so a 25 KB file holding
//! `ConstantOfShape([200000, 200000])` asks for 160 GB at load time: tract panics ("failed to
//! allocate") or the process is killed. Scrim's models are a few megabytes of weights with
//! activations of a few megabytes per image, so every tensor the file declares (initializers,
//! `Constant` nodes, and the shapes given to `ConstantOfShape`) must stay under
//! [`MAX_TENSOR_ELEMENTS`]; anything else a hostile graph could still make tract allocate is
//! caught as a panic by [`Model::load`](crate::Model::load).

use prost::Message;
use tract_onnx::pb;

use crate::{Error, Result};

/// The most elements any one tensor declared in a model may hold: 2^28 (1 GiB of `f32`), about
/// 100× the largest weight tensor of any Scrim model.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

/// The largest ONNX file loaded (256 MiB).
pub const MAX_MODEL_BYTES: u64 = 256 << 20;

/// Checks the tensors an ONNX model declares against [`MAX_TENSOR_ELEMENTS`].
///
/// # Errors
/// [`Error::InvalidModel`] naming the tensor or node, for a count over the limit, one that
/// overflows, or a negative dimension. Bytes that are not ONNX pass (tract reports them).
pub(crate) fn check(onnx: &[u8]) -> Result<()> {
    let Ok(model) = pb::ModelProto::decode(onnx) else {
        return Ok(());
    };
    let Some(graph) = model.graph else {
        return Ok(());
    };
    check_names(&graph)?;
    check_graph(&graph)
}

/// Every value the graph reads or outputs must be defined: a graph input, an initializer or a
/// node's output (tract indexes its name table with them and panics on a missing one). Only the
/// top-level graph: a subgraph may read its parent's values.
fn check_names(graph: &pb::GraphProto) -> Result<()> {
    let defined: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    for node in &graph.node {
        if let Some(missing) = node
            .input
            .iter()
            .find(|i| !i.is_empty() && !defined.contains(i.as_str()))
        {
            return Err(Error::InvalidModel(format!(
                "{} node {:?} reads {missing:?}, which no input, initializer or node defines",
                node.op_type, node.name
            )));
        }
    }
    if let Some(missing) = graph
        .output
        .iter()
        .find(|o| !defined.contains(o.name.as_str()))
    {
        return Err(Error::InvalidModel(format!(
            "graph output {:?} is not defined by any input, initializer or node",
            missing.name
        )));
    }
    Ok(())
}

fn check_graph(graph: &pb::GraphProto) -> Result<()> {
    for t in &graph.initializer {
        elements(&t.dims, || format!("initializer {:?}", t.name))?;
    }
    for node in &graph.node {
        let what = || format!("{} node {:?}", node.op_type, node.name);
        for a in &node.attribute {
            if let Some(t) = &a.t {
                elements(&t.dims, what)?;
            }
            for g in a.g.iter().chain(&a.graphs) {
                check_graph(g)?;
            }
        }
        check_window(graph, node)?;
        if node.op_type == "ConstantOfShape"
            && let Some(shape) = node.input.first().and_then(|name| constant(graph, name))
        {
            elements(&int64_values(shape), what)?;
        }
    }
    Ok(())
}

/// The window attributes of a convolution or pooling node must agree in rank: `strides` and
/// `dilations` as long as `kernel_shape`, `pads` twice as long, and a convolution's kernel as
/// many spatial axes as its weight initializer (tract indexes one by the other and panics).
fn check_window(graph: &pb::GraphProto, node: &pb::NodeProto) -> Result<()> {
    if !matches!(
        node.op_type.as_str(),
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool"
    ) {
        return Ok(());
    }
    let ints = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.len())
    };
    let weight_rank = node
        .input
        .get(1)
        .filter(|_| node.op_type.starts_with("Conv"))
        .and_then(|w| graph.initializer.iter().find(|t| &t.name == w))
        .map(|t| t.dims.len().saturating_sub(2));
    let Some(rank) = ints("kernel_shape").or(weight_rank) else {
        return Ok(());
    };
    let expected = [
        ("kernel_shape", rank),
        ("strides", rank),
        ("dilations", rank),
        ("pads", 2 * rank),
    ];
    let bad = expected
        .iter()
        .find(|(name, n)| ints(name).is_some_and(|len| len != *n))
        .map(|(name, n)| {
            format!(
                "{name} has {} values, expected {n}",
                ints(name).unwrap_or(0)
            )
        })
        .or_else(|| {
            weight_rank
                .filter(|&w| w != rank)
                .map(|w| format!("kernel_shape has {rank} axes, its weight {w}"))
        });
    match bad {
        Some(why) => Err(Error::InvalidModel(format!(
            "{} node {:?}: {why}",
            node.op_type, node.name
        ))),
        None => Ok(()),
    }
}

/// The tensor behind value `name` when it is an initializer or the output of a `Constant` node.
fn constant<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::TensorProto> {
    graph
        .initializer
        .iter()
        .find(|t| t.name == name)
        .or_else(|| {
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))
                .flat_map(|n| &n.attribute)
                .find_map(|a| a.t.as_ref())
        })
}

/// The values of an `INT64` tensor, from `int64_data` or raw little-endian bytes.
fn int64_values(t: &pb::TensorProto) -> Vec<i64> {
    if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    }
}

/// The element count of `dims`, or an error when it passes the limit.
fn elements(dims: &[i64], what: impl Fn() -> String) -> Result<u64> {
    let mut n: u64 = 1;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| {
            Error::InvalidModel(format!("{}: negative dimension {d} in {dims:?}", what()))
        })?;
        n = n.saturating_mul(d);
    }
    if n > MAX_TENSOR_ELEMENTS {
        return Err(Error::InvalidModel(format!(
            "{}: shape {dims:?} asks for {} elements, more than the limit of {MAX_TENSOR_ELEMENTS} \
             (a model this large is not a Scrim model, or the file is hostile)",
            what(),
            if n == u64::MAX {
                "more than 2^64".to_string()
            } else {
                n.to_string()
            }
        )));
    }
    Ok(n)
}
