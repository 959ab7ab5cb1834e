//! ONNX files built to exhaust memory are refused with an error, never a panic or an abort.

mod support;

use prost::Message;
use scrim_core::{BatchMode, Error, Model};
use support::graphs::{self, manifest_for};
use tract_onnx::pb;

fn int64_tensor(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// `out = image + big`, where `nodes` make `big` from the initializers.
fn model(initializer: Vec<pb::TensorProto>, mut nodes: Vec<pb::NodeProto>) -> Vec<u8> {
    nodes.push(node("Add", &["image", "big"], "out"));
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "bomb".into(),
            node: nodes,
            initializer,
            input: vec![value("image", &[1, 3, 12, 12])],
            output: vec![value("out", &[1, 3, 12, 12])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn load(onnx: &[u8]) -> scrim_core::Result<Model> {
    Model::load(onnx, manifest_for(&graphs::classifier()), BatchMode::Single)
}

#[test]
fn constant_of_shape_bomb_is_refused_before_tract() {
    // 25 bytes of shape asking for 200000 × 200000 floats (160 GB): tract used to panic.
    let onnx = model(
        vec![int64_tensor("shape", &[200_000, 200_000])],
        vec![node("ConstantOfShape", &["shape"], "big")],
    );
    assert!(onnx.len() < 1000);
    let err = load(&onnx).expect_err("bomb");
    assert!(matches!(err, Error::InvalidModel(_)), "{err}");
    assert!(err.to_string().contains("ConstantOfShape"), "{err}");
    // Also when the shape comes from a Constant node instead of an initializer.
    let mut constant = node("Constant", &[], "shape");
    constant.attribute.push(pb::AttributeProto {
        name: "value".into(),
        r#type: pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(int64_tensor("", &[200_000, 200_000])),
        ..Default::default()
    });
    let onnx = model(
        vec![],
        vec![constant, node("ConstantOfShape", &["shape"], "big")],
    );
    let err = load(&onnx).expect_err("bomb via Constant");
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn overflowing_initializer_dims_are_refused() {
    let mut t = int64_tensor("w", &[]);
    t.data_type = pb::tensor_proto::DataType::Float as i32;
    t.dims = vec![1 << 40, 1 << 40];
    let onnx = model(vec![t], vec![node("Identity", &["w"], "big")]);
    let err = load(&onnx).expect_err("overflow");
    assert!(err.to_string().contains("2^64"), "{err}");
}

#[test]
fn an_allocation_tract_cannot_make_is_an_error_not_a_panic() {
    // `Expand` to a huge constant shape passes the declared-size checks (no tensor in the file
    // is large); whatever tract does with it must come back as an error.
    let onnx = model(
        vec![
            int64_tensor("shape", &[1 << 34, 3, 12, 12]),
            pb::TensorProto {
                name: "one".into(),
                dims: vec![1],
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: vec![1.0],
                ..Default::default()
            },
        ],
        vec![node("Expand", &["one", "shape"], "big")],
    );
    let err = load(&onnx).expect_err("expand bomb");
    assert!(matches!(err, Error::InvalidModel(_)), "{err}");
}

#[test]
fn values_that_nothing_defines_are_refused_before_tract() {
    // Found by the onnx_model fuzz target: a graph output that no node produces made tract
    // index its name table and panic.
    let onnx = model(vec![], vec![node("Identity", &["image"], "big")]);
    // The well-formed graph passes the name check (and fails later, on the manifest's labels).
    let err = load(&onnx).expect_err("no classifier");
    assert!(err.to_string().contains("labels"), "{err}");
    let mut g = pb::ModelProto::decode(&onnx[..]).expect("decode");
    let graph = g.graph.as_mut().expect("graph");
    graph.output[0].name = "nowhere".into();
    let err = load(&g.encode_to_vec()).expect_err("undefined output");
    assert!(err.to_string().contains("\"nowhere\""), "{err}");
    let onnx = model(vec![], vec![node("Identity", &["missing"], "big")]);
    let err = load(&onnx).expect_err("undefined input");
    assert!(err.to_string().contains("\"missing\""), "{err}");
}

#[test]
fn convolution_windows_of_mismatched_rank_are_refused_before_tract() {
    // Found by the onnx_model fuzz target: `strides` with one value on a 3×3 kernel made tract
    // index past the end of it and panic.
    let conv = |strides: &[i64]| {
        let mut n = node("Conv", &["image", "w"], "big");
        n.attribute = vec![
            pb::AttributeProto {
                name: "kernel_shape".into(),
                r#type: pb::attribute_proto::AttributeType::Ints as i32,
                ints: vec![1, 1],
                ..Default::default()
            },
            pb::AttributeProto {
                name: "strides".into(),
                r#type: pb::attribute_proto::AttributeType::Ints as i32,
                ints: strides.to_vec(),
                ..Default::default()
            },
        ];
        let w = pb::TensorProto {
            name: "w".into(),
            dims: vec![3, 3, 1, 1],
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![0.5; 9],
            ..Default::default()
        };
        model(vec![w], vec![n])
    };
    let err = load(&conv(&[1, 1])).expect_err("not a classifier");
    assert!(err.to_string().contains("labels"), "{err}");
    let err = load(&conv(&[129])).expect_err("one stride for two axes");
    assert!(
        err.to_string().contains("strides has 1 values, expected 2"),
        "{err}"
    );
}
