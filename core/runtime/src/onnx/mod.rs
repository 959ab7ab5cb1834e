//! Writes ONNX graphs from plain weights.
//!
//! burn 0.22 cannot export ONNX by itself, so training code describes its layers to a
//! [`GraphBuilder`], which emits an ONNX `ModelProto` (opset 13) through the protobuf types that
//! tract-onnx already carries. The output loads in tract and in onnxruntime and passes
//! `onnx.checker`; both are tested. Inputs are NCHW `float32` with a symbolic batch `N` and static
//! channels, height and width.
//!
//! ```
//! use scrim_core::onnx::{Conv, GraphBuilder};
//! let mut g = GraphBuilder::new("tiny");
//! let x = g.image_input("image", 3, 8, 8);
//! let w = vec![0.1f32; 4 * 3 * 3 * 3];
//! let y = g.conv(&x, Conv::new(&w, [4, 3, 3, 3]).pad(1));
//! let y = g.relu(&y);
//! g.output(&y, "features");
//! let bytes = g.finish();
//! assert!(!bytes.is_empty());
//! ```

mod proto;

use prost::Message;
use tract_onnx::pb;

use proto::{Dim, FLOAT, IR_VERSION, OPSET, float, int, ints, string, value_info};

/// Writes `manifest`'s model card ([`crate::manifest::model_card`]: role, name, run name and id,
/// task and labels) into the `metadata_props` of an ONNX model, replacing any `scrim.` entries
/// it had and keeping the others, so that the file says which run it comes from even without
/// its manifest.
///
/// # Errors
/// [`crate::Error::InvalidModel`] for bytes that are not an ONNX model.
pub fn with_model_card(onnx: &[u8], manifest: &crate::Manifest) -> crate::Result<Vec<u8>> {
    let mut model = pb::ModelProto::decode(onnx)
        .map_err(|e| crate::Error::InvalidModel(format!("not an ONNX model: {e}")))?;
    model
        .metadata_props
        .retain(|p| !p.key.starts_with("scrim."));
    model.metadata_props.extend(
        crate::manifest::model_card(manifest)
            .into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value }),
    );
    Ok(model.encode_to_vec())
}

/// A named tensor in the graph under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    /// The tensor's name in the ONNX graph.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A 2-D convolution's parameters. Weight layout is ONNX's (and burn's): `[out, in/groups, kh, kw]`.
#[derive(Debug, Clone)]
pub struct Conv<'a> {
    weight: &'a [f32],
    shape: [usize; 4],
    bias: Option<&'a [f32]>,
    stride: [usize; 2],
    pads: [usize; 4],
    groups: usize,
}

impl<'a> Conv<'a> {
    /// A stride-1, unpadded, ungrouped convolution without bias.
    pub fn new(weight: &'a [f32], shape: [usize; 4]) -> Self {
        Self {
            weight,
            shape,
            bias: None,
            stride: [1, 1],
            pads: [0; 4],
            groups: 1,
        }
    }
    /// Adds a bias (one value per output channel).
    pub fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Same stride in both directions.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// Same zero padding on every side.
    pub fn pad(mut self, p: usize) -> Self {
        self.pads = [p; 4];
        self
    }
    /// Grouped convolution (`groups = in` for depthwise).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Builds one ONNX graph.
#[derive(Debug)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    counter: usize,
    doc: String,
    /// Inferred shape of every value, so outputs can be declared with their shapes.
    shapes: std::collections::HashMap<String, Vec<Dim>>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            counter: 0,
            doc: String::new(),
            shapes: std::collections::HashMap::new(),
        }
    }

    /// A documentation string stored in the model.
    pub fn doc(&mut self, doc: &str) -> &mut Self {
        self.doc = doc.into();
        self
    }

    /// Declares the image input `[N, c, h, w]` (N symbolic).
    pub fn image_input(&mut self, name: &str, c: usize, h: usize, w: usize) -> Value {
        let dims = vec![Dim::Sym("N"), Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)];
        self.inputs.push(value_info(name, &dims));
        self.shapes.insert(name.into(), dims);
        Value(name.into())
    }

    /// Adds a constant tensor.
    pub fn constant(&mut self, hint: &str, shape: &[usize], data: &[f32]) -> Value {
        let name = self.fresh(hint);
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self.shapes
            .insert(name.clone(), shape.iter().map(|&d| Dim::Fixed(d)).collect());
        Value(name)
    }

    /// `Conv`.
    pub fn conv(&mut self, x: &Value, p: Conv<'_>) -> Value {
        let w = self.constant("conv_w", &p.shape, p.weight);
        let mut inputs = vec![x.clone(), w];
        if let Some(b) = p.bias {
            inputs.push(self.constant("conv_b", &[p.shape[0]], b));
        }
        let attrs = vec![
            ints("kernel_shape", &[p.shape[2], p.shape[3]]),
            ints("strides", &p.stride),
            ints("pads", &p.pads),
            ints("dilations", &[1, 1]),
            int("group", p.groups as i64),
        ];
        let shape = self.spatial(
            x,
            p.shape[0],
            [p.shape[2], p.shape[3]],
            p.stride,
            [p.pads[0], p.pads[2]],
        );
        self.node_shaped("Conv", &inputs, attrs, shape)
    }

    /// `BatchNormalization` in inference mode (running statistics).
    pub fn batch_norm(
        &mut self,
        x: &Value,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f32,
    ) -> Value {
        let c = gamma.len();
        let inputs = [
            x.clone(),
            self.constant("bn_gamma", &[c], gamma),
            self.constant("bn_beta", &[c], beta),
            self.constant("bn_mean", &[c], mean),
            self.constant("bn_var", &[c], var),
        ];
        self.node("BatchNormalization", &inputs, vec![float("epsilon", eps)])
    }

    /// `Relu`.
    pub fn relu(&mut self, x: &Value) -> Value {
        self.node("Relu", std::slice::from_ref(x), vec![])
    }
    /// `LeakyRelu`.
    pub fn leaky_relu(&mut self, x: &Value, alpha: f32) -> Value {
        self.node(
            "LeakyRelu",
            std::slice::from_ref(x),
            vec![float("alpha", alpha)],
        )
    }
    /// `Sigmoid`.
    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.node("Sigmoid", std::slice::from_ref(x), vec![])
    }
    /// `Tanh`.
    pub fn tanh(&mut self, x: &Value) -> Value {
        self.node("Tanh", std::slice::from_ref(x), vec![])
    }
    /// Exact GELU, `x · ½ · (1 + erf(x/√2))`, written with opset-13 ops.
    pub fn gelu(&mut self, x: &Value) -> Value {
        let sqrt2 = self.constant("sqrt2", &[1], &[std::f32::consts::SQRT_2]);
        let one = self.constant("one", &[1], &[1.0]);
        let half = self.constant("half", &[1], &[0.5]);
        let d = self.node("Div", &[x.clone(), sqrt2], vec![]);
        let e = self.node("Erf", &[d], vec![]);
        let a = self.node("Add", &[e, one], vec![]);
        let m = self.node("Mul", &[x.clone(), a], vec![]);
        self.node("Mul", &[m, half], vec![])
    }
    /// Element-wise `Add` (with broadcasting).
    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Add", &[a.clone(), b.clone()], vec![])
    }
    /// Element-wise `Sub` (with broadcasting).
    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Sub", &[a.clone(), b.clone()], vec![])
    }
    /// Element-wise `Mul` (with broadcasting).
    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Mul", &[a.clone(), b.clone()], vec![])
    }
    /// Element-wise `Div` (with broadcasting).
    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Div", &[a.clone(), b.clone()], vec![])
    }
    /// Element-wise `Sqrt`.
    pub fn sqrt(&mut self, x: &Value) -> Value {
        self.node("Sqrt", std::slice::from_ref(x), vec![])
    }
    /// Multiplies by a scalar constant.
    pub fn scale(&mut self, x: &Value, s: f32) -> Value {
        let k = self.constant("scale", &[1], &[s]);
        self.mul(x, &k)
    }
    /// Adds a scalar constant.
    pub fn offset(&mut self, x: &Value, s: f32) -> Value {
        let k = self.constant("offset", &[1], &[s]);
        self.add(x, &k)
    }
    /// `MaxPool` with a square kernel.
    pub fn max_pool(&mut self, x: &Value, kernel: usize, stride: usize, pad: usize) -> Value {
        let attrs = vec![
            ints("kernel_shape", &[kernel, kernel]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad; 4]),
        ];
        let c = self.dim(x, 1);
        let shape = self.spatial(x, c, [kernel, kernel], [stride, stride], [pad, pad]);
        self.node_shaped("MaxPool", std::slice::from_ref(x), attrs, shape)
    }
    /// `AveragePool` with a square kernel; padding is not counted in the average.
    pub fn avg_pool(&mut self, x: &Value, kernel: usize, stride: usize, pad: usize) -> Value {
        let attrs = vec![
            ints("kernel_shape", &[kernel, kernel]),
            ints("strides", &[stride, stride]),
            ints("pads", &[pad; 4]),
            int("count_include_pad", 0),
        ];
        let c = self.dim(x, 1);
        let shape = self.spatial(x, c, [kernel, kernel], [stride, stride], [pad, pad]);
        self.node_shaped("AveragePool", std::slice::from_ref(x), attrs, shape)
    }
    /// `GlobalAveragePool`: `[N, C, H, W] → [N, C, 1, 1]`.
    pub fn global_avg_pool(&mut self, x: &Value) -> Value {
        let shape = vec![
            Dim::Sym("N"),
            Dim::Fixed(self.dim(x, 1)),
            Dim::Fixed(1),
            Dim::Fixed(1),
        ];
        self.node_shaped("GlobalAveragePool", std::slice::from_ref(x), vec![], shape)
    }
    /// `Flatten` from axis 1: `[N, ...] → [N, prod]`.
    pub fn flatten(&mut self, x: &Value) -> Value {
        let rest = self.shapes.get(&x.0).map_or(1, |s| {
            s[1..]
                .iter()
                .map(|d| if let Dim::Fixed(n) = d { *n } else { 1 })
                .product()
        });
        self.node_shaped(
            "Flatten",
            std::slice::from_ref(x),
            vec![int("axis", 1)],
            vec![Dim::Sym("N"), Dim::Fixed(rest)],
        )
    }
    /// Nearest-neighbour upsampling of H and W by an integer factor (`Resize`).
    pub fn upsample_nearest(&mut self, x: &Value, factor: usize) -> Value {
        // An empty name is ONNX's "input not given" (no region of interest).
        let roi = Value(String::new());
        let f = factor as f32;
        let scales = self.constant("scales", &[4], &[1.0, 1.0, f, f]);
        let attrs = vec![
            string("mode", "nearest"),
            string("coordinate_transformation_mode", "asymmetric"),
            string("nearest_mode", "floor"),
        ];
        let shape = vec![
            Dim::Sym("N"),
            Dim::Fixed(self.dim(x, 1)),
            Dim::Fixed(self.dim(x, 2) * factor),
            Dim::Fixed(self.dim(x, 3) * factor),
        ];
        self.node_shaped("Resize", &[x.clone(), roi, scales], attrs, shape)
    }
    /// Fully connected layer `x · W + b` with burn's weight layout `W: [in, out]`.
    pub fn linear(
        &mut self,
        x: &Value,
        weight: &[f32],
        shape: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Value {
        let w = self.constant("fc_w", &shape, weight);
        let mut inputs = vec![x.clone(), w];
        if let Some(b) = bias {
            inputs.push(self.constant("fc_b", &[shape[1]], b));
        }
        self.node_shaped(
            "Gemm",
            &inputs,
            vec![int("transB", 0)],
            vec![Dim::Sym("N"), Dim::Fixed(shape[1])],
        )
    }

    /// Marks `v` as a graph output named `name` (through an `Identity`, so names are free).
    pub fn output(&mut self, v: &Value, name: &str) {
        self.nodes.push(pb::NodeProto {
            input: vec![v.0.clone()],
            output: vec![name.into()],
            name: format!("output_{name}"),
            op_type: "Identity".into(),
            ..Default::default()
        });
        let dims = self.shapes.get(&v.0).cloned().unwrap_or_default();
        self.outputs.push(value_info(name, &dims));
    }

    /// Serialises the model.
    pub fn finish(self) -> Vec<u8> {
        let graph = pb::GraphProto {
            name: self.name.clone(),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "scrim".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: self.doc,
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Dimension `k` of a value's shape (1 when unknown or symbolic).
    fn dim(&self, v: &Value, k: usize) -> usize {
        match self.shapes.get(&v.0).and_then(|s| s.get(k)) {
            Some(Dim::Fixed(n)) => *n,
            _ => 1,
        }
    }

    /// `[N, channels, H', W']` of a windowed op over `x`.
    fn spatial(
        &self,
        x: &Value,
        channels: usize,
        k: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> Vec<Dim> {
        let out = |d: usize, i: usize| (d + 2 * pad[i]).saturating_sub(k[i]) / stride[i].max(1) + 1;
        vec![
            Dim::Sym("N"),
            Dim::Fixed(channels),
            Dim::Fixed(out(self.dim(x, 2), 0)),
            Dim::Fixed(out(self.dim(x, 3), 1)),
        ]
    }

    /// A node whose output has the shape of its first input, or the broadcast of its inputs.
    fn node(&mut self, op: &str, inputs: &[Value], attribute: Vec<pb::AttributeProto>) -> Value {
        let shape = inputs
            .iter()
            .filter_map(|v| self.shapes.get(&v.0))
            .max_by_key(|s| {
                (
                    s.len(),
                    s.iter()
                        .map(|d| if let Dim::Fixed(n) = d { *n } else { 0 })
                        .sum::<usize>(),
                )
            })
            .cloned()
            .unwrap_or_default();
        self.node_shaped(op, inputs, attribute, shape)
    }

    fn node_shaped(
        &mut self,
        op: &str,
        inputs: &[Value],
        attribute: Vec<pb::AttributeProto>,
        shape: Vec<Dim>,
    ) -> Value {
        let out = self.fresh(&op.to_lowercase());
        self.shapes.insert(out.clone(), shape);
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|v| v.0.clone()).collect(),
            output: vec![out.clone()],
            name: format!("node_{out}"),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        Value(out)
    }
}
