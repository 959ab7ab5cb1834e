//! Reading and writing the ONNX protobuf: the few steps selective encryption and patch-model
//! encryption share when they rewrite a model's initializers.

use prost::Message;
use tract_onnx::pb;

use crate::{Error, Result};

/// Parses ONNX bytes.
pub(crate) fn decode(onnx: &[u8]) -> Result<pb::ModelProto> {
    pb::ModelProto::decode(onnx).map_err(|e| Error::InvalidModel(format!("not an ONNX model: {e}")))
}

/// The model's graph.
pub(crate) fn graph(model: &pb::ModelProto) -> Result<&pb::GraphProto> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| Error::InvalidModel("the ONNX model has no graph".into()))
}

/// The model's graph, to edit.
pub(crate) fn graph_mut(model: &mut pb::ModelProto) -> Result<&mut pb::GraphProto> {
    model
        .graph
        .as_mut()
        .ok_or_else(|| Error::InvalidModel("the ONNX model has no graph".into()))
}

/// The initializer named `name`.
pub(crate) fn find<'a>(g: &'a pb::GraphProto, name: &str) -> Result<&'a pb::TensorProto> {
    g.initializer
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::InvalidModel(format!("no initializer named {name:?}")))
}

/// The initializer named `name`, to edit.
pub(crate) fn find_mut<'a>(
    g: &'a mut pb::GraphProto,
    name: &str,
) -> Result<&'a mut pb::TensorProto> {
    g.initializer
        .iter_mut()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::InvalidModel(format!("no initializer named {name:?}")))
}

/// A float initializer's values, from `raw_data` (little-endian) or `float_data`.
pub(crate) fn floats(t: &pb::TensorProto) -> Result<Vec<f32>> {
    if t.data_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(Error::InvalidModel(format!(
            "initializer {:?} is not float32",
            t.name
        )));
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return Err(Error::InvalidModel(format!(
                "initializer {:?} has a truncated raw_data",
                t.name
            )));
        }
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}

/// Writes values back in the storage the initializer already uses.
pub(crate) fn set_floats(t: &mut pb::TensorProto, w: &[f32]) {
    if t.raw_data.is_empty() && !t.float_data.is_empty() {
        t.float_data = w.to_vec();
    } else {
        t.raw_data = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
}
