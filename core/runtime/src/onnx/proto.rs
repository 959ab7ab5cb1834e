//! The ONNX protobuf pieces the graph builder writes: the opset, typed value declarations and
//! node attributes.

use tract_onnx::pb;

/// The operator set the writer targets.
pub(super) const OPSET: i64 = 13;
/// The ONNX IR version of the files it writes.
pub(super) const IR_VERSION: i64 = 7;
/// `float32`, the element type of every value.
pub(super) const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;

/// One dimension of a value's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dim {
    /// A known size.
    Fixed(usize),
    /// A symbolic size, e.g. the batch `N`.
    Sym(&'static str),
}

fn float_type(dims: &[Dim]) -> pb::TypeProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let shape = Some(pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                    Dim::Sym(s) => dimension::Value::DimParam((*s).into()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: FLOAT,
            shape,
        })),
        ..Default::default()
    }
}

/// Declares a `float32` graph input or output of shape `dims`.
pub(super) fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(float_type(dims)),
        ..Default::default()
    }
}

fn attr(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

/// An `INTS` attribute.
pub(super) fn ints(name: &str, v: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        ints: v.iter().map(|&x| x as i64).collect(),
        ..attr(name, pb::attribute_proto::AttributeType::Ints)
    }
}

/// An `INT` attribute.
pub(super) fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i: v,
        ..attr(name, pb::attribute_proto::AttributeType::Int)
    }
}

/// A `FLOAT` attribute.
pub(super) fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        f: v,
        ..attr(name, pb::attribute_proto::AttributeType::Float)
    }
}

/// A `STRING` attribute.
pub(super) fn string(name: &str, v: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        s: v.as_bytes().to_vec(),
        ..attr(name, pb::attribute_proto::AttributeType::String)
    }
}
