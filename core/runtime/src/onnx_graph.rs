//! A plain, read-only view of an ONNX graph: nodes with their attributes, and float
//! initializers as `(shape, values)`.
//!
//! It lets crates without protobuf or tract (the burn side in `scrim-models`) walk a model, e.g.
//! to rebuild a recognizer for gate training in selective encryption. Non-float initializers and
//! attribute kinds other than ints, floats and strings are left out.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb;

use crate::{Error, Result};

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
    /// `STRING` (lossy UTF-8).
    String(String),
    /// Any other kind (tensors, graphs, ...).
    Other,
}

/// One node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The operator, e.g. `Conv`.
    pub op: String,
    /// Input value names (empty = not given).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    /// An `INT` attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }
    /// An `INTS` attribute as `usize`s, if present.
    pub fn ints(&self, name: &str) -> Option<Vec<usize>> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v.iter().map(|&x| x.max(0) as usize).collect()),
            _ => None,
        }
    }
    /// A `FLOAT` attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }
}

/// A float initializer.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// The graph of an ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<String>,
    /// Graph outputs.
    pub outputs: Vec<String>,
    /// Nodes in file order (ONNX requires topological order).
    pub nodes: Vec<Node>,
    /// Float initializers by name.
    pub initializers: HashMap<String, Initializer>,
}

impl Graph {
    /// Parses an ONNX model.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] for bytes that are not an ONNX model with a graph.
    pub fn parse(onnx: &[u8]) -> Result<Self> {
        let model = pb::ModelProto::decode(onnx)
            .map_err(|e| Error::InvalidModel(format!("not an ONNX model: {e}")))?;
        let g = model
            .graph
            .ok_or_else(|| Error::InvalidModel("the ONNX model has no graph".into()))?;
        let mut initializers = HashMap::new();
        for t in &g.initializer {
            if t.data_type != pb::tensor_proto::DataType::Float as i32 {
                continue;
            }
            let values: Vec<f32> = if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                if !t.raw_data.len().is_multiple_of(4) {
                    return Err(Error::InvalidModel(format!(
                        "initializer {:?}: {} bytes of raw data, not a whole number of 4-byte floats",
                        t.name,
                        t.raw_data.len()
                    )));
                }
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let mut shape = Vec::with_capacity(t.dims.len());
            for &d in &t.dims {
                shape.push(usize::try_from(d).map_err(|_| {
                    Error::InvalidModel(format!("initializer {:?}: negative dimension {d}", t.name))
                })?);
            }
            let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if count != Some(values.len()) {
                return Err(Error::InvalidModel(format!(
                    "initializer {:?}: {} values for shape {shape:?}",
                    t.name,
                    values.len()
                )));
            }
            initializers.insert(t.name.clone(), Initializer { shape, values });
        }
        let names: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name.as_str()).collect();
        let nodes = g
            .node
            .iter()
            .map(|n| Node {
                op: n.op_type.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs: n
                    .attribute
                    .iter()
                    .map(|a| (a.name.clone(), attr(a)))
                    .collect(),
            })
            .collect();
        Ok(Self {
            inputs: g
                .input
                .iter()
                .filter(|v| !names.contains(v.name.as_str()))
                .map(|v| v.name.clone())
                .collect(),
            outputs: g.output.iter().map(|v| v.name.clone()).collect(),
            nodes,
            initializers,
        })
    }
}

/// The `metadata_props` of an ONNX model (the model card that
/// [`crate::onnx::with_model_card`] writes is under `scrim.`).
///
/// # Errors
/// [`Error::InvalidModel`] for bytes that are not an ONNX model.
pub fn metadata(onnx: &[u8]) -> Result<std::collections::BTreeMap<String, String>> {
    let model = pb::ModelProto::decode(onnx)
        .map_err(|e| Error::InvalidModel(format!("not an ONNX model: {e}")))?;
    Ok(model
        .metadata_props
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect())
}

fn attr(a: &pb::AttributeProto) -> Attr {
    use pb::attribute_proto::AttributeType as T;
    match T::try_from(a.r#type) {
        Ok(T::Int) => Attr::Int(a.i),
        Ok(T::Ints) => Attr::Ints(a.ints.clone()),
        Ok(T::Float) => Attr::Float(a.f),
        Ok(T::String) => Attr::String(String::from_utf8_lossy(&a.s).into_owned()),
        _ => Attr::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{Conv, GraphBuilder};

    /// A one-node graph whose only initializer is `tensor`.
    fn model_with(tensor: pb::TensorProto) -> Vec<u8> {
        let model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer: vec![tensor],
                ..Default::default()
            }),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    fn float_tensor(dims: Vec<i64>, raw_data: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: "w".into(),
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data,
            ..Default::default()
        }
    }

    #[test]
    fn malformed_initializers_are_errors_not_truncations_or_wraps() {
        // Raw data that is not a whole number of floats used to be cut silently.
        let err =
            Graph::parse(&model_with(float_tensor(vec![1], vec![0; 5]))).expect_err("malformed");
        assert!(err.to_string().contains("not a whole number"), "{err}");
        // Dimensions whose product overflows used to wrap (to 0 here) in release builds.
        let huge = 1i64 << 32;
        let err = Graph::parse(&model_with(float_tensor(vec![huge, huge], vec![])))
            .expect_err("malformed");
        assert!(err.to_string().contains("values for shape"), "{err}");
        let err =
            Graph::parse(&model_with(float_tensor(vec![-1], vec![0; 4]))).expect_err("malformed");
        assert!(err.to_string().contains("negative dimension"), "{err}");
        // A well-formed one still reads.
        let ok = Graph::parse(&model_with(float_tensor(vec![2], vec![0; 8]))).expect("parse");
        assert_eq!(ok.initializers["w"].values, vec![0.0, 0.0]);
    }

    #[test]
    fn reads_what_the_writer_wrote() {
        let mut g = GraphBuilder::new("t");
        let x = g.image_input("image", 3, 4, 4);
        let w: Vec<f32> = (0..2 * 3 * 9).map(|i| i as f32).collect();
        let y = g.conv(&x, Conv::new(&w, [2, 3, 3, 3]).pad(1));
        let y = g.max_pool(&y, 2, 2, 0);
        g.output(&y, "out");
        let graph = Graph::parse(&g.finish()).expect("parse");
        assert_eq!(graph.inputs, vec!["image".to_string()]);
        assert_eq!(graph.outputs, vec!["out".to_string()]);
        let conv = &graph.nodes[0];
        assert_eq!(conv.op, "Conv");
        assert_eq!(conv.ints("pads"), Some(vec![1; 4]));
        assert_eq!(conv.int("group", 0), 1);
        let init = &graph.initializers[&conv.inputs[1]];
        assert_eq!(init.shape, vec![2, 3, 3, 3]);
        assert_eq!(init.values, w);
        assert_eq!(graph.nodes[1].op, "MaxPool");
    }
}
