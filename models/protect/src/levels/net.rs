//! A frozen burn copy of an ONNX recognizer, for training the PSS gates of one conv layer.
//!
//! Selection works on ONNX files, but PSS needs gradients through the network. [`OnnxNet`]
//! rebuilds the network in burn from the ONNX graph and its initializers, with every weight a
//! constant. It supports the operators that `scrim train` exports (Conv, BatchNormalization,
//! Relu, MaxPool, GlobalAveragePool, Flatten, Gemm, Identity) plus LeakyRelu, Sigmoid, Tanh and
//! scalar Add/Sub/Mul/Div, i.e. plain conv-BN-ReLU-pool (VGG-style) recognizers; anything else is
//! refused with the operator's name. The random and |mean| baselines need none of this and work
//! on any ONNX model.

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use scrim_core::manifest::Normalization;
use scrim_core::onnx_graph::{Graph, Initializer, Node};
use scrim_train::nets::conv2d;

use crate::{Error, Result};

#[derive(Debug, Clone)]
enum Op {
    Conv {
        weight: String,
        w: Tensor<4>,
        b: Option<Tensor<1>>,
        opts: ConvOptions<2>,
    },
    Affine {
        scale: Tensor<4>,
        shift: Tensor<4>,
    },
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    MaxPool(MaxPoolOptions<2>),
    GlobalAvgPool,
    Flatten,
    Gemm {
        w: Tensor<2>,
        b: Option<Tensor<2>>,
    },
    Identity,
    Scalar {
        op: char,
        c: f32,
        const_first: bool,
    },
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    input: String,
    output: String,
}

#[derive(Debug, Clone)]
enum Val {
    R4(Tensor<4>),
    R2(Tensor<2>),
}

/// A frozen network rebuilt from ONNX. `forward` maps `[N, 3, H, W]` images in `[0, 1]` to logits.
#[derive(Debug, Clone)]
pub struct OnnxNet {
    steps: Vec<Step>,
    input: String,
    output: String,
    mean: Tensor<4>,
    inv_std: Tensor<4>,
}

fn tensor<const D: usize>(values: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn unsupported(node: &Node, why: &str) -> Error {
    Error::PssUnsupported {
        op: node.op.clone(),
        reason: why.to_string(),
    }
}

impl OnnxNet {
    /// Rebuilds `graph` on `device` (use an autodiff device to train gates), with the manifest's
    /// input normalisation in front.
    ///
    /// # Errors
    /// [`Error::PssUnsupported`] naming the first unsupported operator or attribute;
    /// [`Error::NoGraphEnd`] for a graph without an input or output.
    pub fn new(graph: &Graph, norm: &Normalization, device: &Device) -> Result<Self> {
        let init = |node: &Node, i: usize| -> Result<&Initializer> {
            node.inputs
                .get(i)
                .and_then(|n| graph.initializers.get(n))
                .ok_or_else(|| unsupported(node, &format!("input {i} is not a float initializer")))
        };
        let mut steps = Vec::new();
        for node in &graph.nodes {
            let input = node.inputs.first().cloned().unwrap_or_default();
            let output = node.outputs.first().cloned().unwrap_or_default();
            let op = match node.op.as_str() {
                "Conv" => {
                    if matches!(node.attrs.get("auto_pad"), Some(scrim_core::onnx_graph::Attr::String(s)) if s != "NOTSET")
                    {
                        return Err(unsupported(node, "uses auto_pad"));
                    }
                    let w = init(node, 1)?;
                    let [f, c, kh, kw] = <[usize; 4]>::try_from(w.shape.as_slice())
                        .map_err(|_| unsupported(node, "has a weight that is not 4-D"))?;
                    let pads = node.ints("pads").unwrap_or(vec![0; 4]);
                    let stride = node.ints("strides").unwrap_or(vec![1, 1]);
                    let dil = node.ints("dilations").unwrap_or(vec![1, 1]);
                    if pads.len() != 4 || stride.len() != 2 || dil.len() != 2 {
                        return Err(unsupported(node, "is not 2-D"));
                    }
                    let b = match node.inputs.get(2).filter(|n| !n.is_empty()) {
                        Some(_) => Some(tensor(&init(node, 2)?.values, [f], device)),
                        None => None,
                    };
                    Op::Conv {
                        weight: node.inputs[1].clone(),
                        w: tensor(&w.values, [f, c, kh, kw], device),
                        b,
                        opts: ConvOptions::new_with_padding(
                            [stride[0], stride[1]],
                            [(pads[0], pads[2]), (pads[1], pads[3])],
                            [dil[0], dil[1]],
                            node.int("group", 1).max(1) as usize,
                        ),
                    }
                }
                "BatchNormalization" => {
                    let eps = node.float("epsilon", 1e-5);
                    let (g, b, m, v) = (
                        init(node, 1)?,
                        init(node, 2)?,
                        init(node, 3)?,
                        init(node, 4)?,
                    );
                    let c = g.values.len();
                    let scale: Vec<f32> = (0..c)
                        .map(|i| g.values[i] / (v.values[i] + eps).sqrt())
                        .collect();
                    let shift: Vec<f32> = (0..c)
                        .map(|i| b.values[i] - m.values[i] * scale[i])
                        .collect();
                    Op::Affine {
                        scale: tensor(&scale, [1, c, 1, 1], device),
                        shift: tensor(&shift, [1, c, 1, 1], device),
                    }
                }
                "Relu" => Op::Relu,
                "LeakyRelu" => Op::LeakyRelu(f64::from(node.float("alpha", 0.01))),
                "Sigmoid" => Op::Sigmoid,
                "Tanh" => Op::Tanh,
                "Identity" => Op::Identity,
                "GlobalAveragePool" => Op::GlobalAvgPool,
                "Flatten" if node.int("axis", 1) == 1 => Op::Flatten,
                "MaxPool" => {
                    let k = node
                        .ints("kernel_shape")
                        .filter(|k| k.len() == 2)
                        .ok_or_else(|| unsupported(node, "is not 2-D"))?;
                    let s = node.ints("strides").unwrap_or(vec![1, 1]);
                    let p = node.ints("pads").unwrap_or(vec![0; 4]);
                    let mut opts = MaxPoolOptions::new([k[0], k[1]]).with_stride([s[0], s[1]]);
                    opts.padding = [(p[0], p[2]), (p[1], p[3])];
                    opts.ceil_mode = node.int("ceil_mode", 0) != 0;
                    Op::MaxPool(opts)
                }
                "Gemm" if node.int("transA", 0) == 0 => {
                    let w = init(node, 1)?;
                    let [r, c] = <[usize; 2]>::try_from(w.shape.as_slice())
                        .map_err(|_| unsupported(node, "has a weight that is not 2-D"))?;
                    let alpha = node.float("alpha", 1.0);
                    let beta = node.float("beta", 1.0);
                    let wv: Vec<f32> = w.values.iter().map(|v| v * alpha).collect();
                    let mut wt = tensor(&wv, [r, c], device);
                    if node.int("transB", 0) != 0 {
                        wt = wt.transpose();
                    }
                    let out = wt.dims()[1];
                    let b = match node.inputs.get(2).filter(|n| !n.is_empty()) {
                        Some(_) => {
                            let bv = &init(node, 2)?.values;
                            if bv.len() != out {
                                return Err(unsupported(node, "has a bias that is not [out]"));
                            }
                            let bv: Vec<f32> = bv.iter().map(|v| v * beta).collect();
                            Some(tensor(&bv, [1, out], device))
                        }
                        None => None,
                    };
                    Op::Gemm { w: wt, b }
                }
                op @ ("Add" | "Sub" | "Mul" | "Div") => {
                    let scalar = |i: usize| {
                        node.inputs
                            .get(i)
                            .and_then(|n| graph.initializers.get(n))
                            .filter(|t| t.values.len() == 1)
                            .map(|t| t.values[0])
                    };
                    let (c, const_first, input) = match (scalar(0), scalar(1)) {
                        (None, Some(c)) => (c, false, node.inputs[0].clone()),
                        (Some(c), None) => (c, true, node.inputs[1].clone()),
                        _ => return Err(unsupported(node, "is not a tensor-with-scalar op")),
                    };
                    steps.push(Step {
                        op: Op::Scalar {
                            op: op.chars().next().unwrap_or('A'),
                            c,
                            const_first,
                        },
                        input,
                        output,
                    });
                    continue;
                }
                _ => return Err(unsupported(node, "is not supported")),
            };
            steps.push(Step { op, input, output });
        }
        let input = graph
            .inputs
            .first()
            .cloned()
            .ok_or(Error::NoGraphEnd("input"))?;
        let output = graph
            .outputs
            .first()
            .cloned()
            .ok_or(Error::NoGraphEnd("output"))?;
        let c = norm.mean.len();
        let inv: Vec<f32> = norm.std.iter().map(|s| 1.0 / s).collect();
        Ok(Self {
            steps,
            input,
            output,
            mean: tensor(&norm.mean, [1, c, 1, 1], device),
            inv_std: tensor(&inv, [1, c, 1, 1], device),
        })
    }

    /// The logits of `x` (`[N, 3, H, W]` in `[0, 1]`) → `[N, K]`. With `gate = Some((name, z))`
    /// the conv weight initializer `name` is multiplied by `z` (`[F, C, 1, 1]`, one gate per
    /// kernel).
    ///
    /// # Errors
    /// [`Error::PssGraph`] when the graph uses a value before defining it or has ranks it cannot
    /// handle; [`Error::OutputNotComputed`].
    pub fn forward(&self, x: Tensor<4>, gate: Option<(&str, Tensor<4>)>) -> Result<Tensor<2>> {
        let x = (x - self.mean.clone()) * self.inv_std.clone();
        let mut vals: HashMap<&str, Val> = HashMap::new();
        vals.insert(&self.input, Val::R4(x));
        let bad = |s: &Step, reason: &'static str| Error::PssGraph {
            value: s.output.clone(),
            reason,
        };
        for s in &self.steps {
            let v = vals
                .get(s.input.as_str())
                .cloned()
                .ok_or_else(|| bad(s, "input not computed (graph not supported)"))?;
            let out = match (&s.op, v) {
                (Op::Conv { weight, w, b, opts }, Val::R4(x)) => {
                    let w = match &gate {
                        Some((name, z)) if name == weight => w.clone() * z.clone(),
                        _ => w.clone(),
                    };
                    Val::R4(conv2d(x, w, b.clone(), opts.clone()))
                }
                (Op::Affine { scale, shift }, Val::R4(x)) => {
                    Val::R4(x * scale.clone() + shift.clone())
                }
                (Op::Relu, Val::R4(x)) => Val::R4(activation::relu(x)),
                (Op::Relu, Val::R2(x)) => Val::R2(activation::relu(x)),
                (Op::LeakyRelu(a), Val::R4(x)) => Val::R4(activation::leaky_relu(x, *a)),
                (Op::LeakyRelu(a), Val::R2(x)) => Val::R2(activation::leaky_relu(x, *a)),
                (Op::Sigmoid, Val::R4(x)) => Val::R4(activation::sigmoid(x)),
                (Op::Sigmoid, Val::R2(x)) => Val::R2(activation::sigmoid(x)),
                (Op::Tanh, Val::R4(x)) => Val::R4(x.tanh()),
                (Op::Tanh, Val::R2(x)) => Val::R2(x.tanh()),
                (Op::Identity, v) => v,
                (Op::MaxPool(o), Val::R4(x)) => Val::R4(max_pool2d(x, o.clone())),
                (Op::GlobalAvgPool, Val::R4(x)) => Val::R4(x.mean_dims(&[2, 3])),
                (Op::Flatten, Val::R4(x)) => {
                    let [n, c, h, w] = x.dims();
                    Val::R2(x.reshape([n, c * h * w]))
                }
                (Op::Flatten, v @ Val::R2(_)) => v,
                (Op::Gemm { w, b }, Val::R2(x)) => {
                    let y = x.matmul(w.clone());
                    Val::R2(match b {
                        Some(b) => y + b.clone(),
                        None => y,
                    })
                }
                (Op::Scalar { op, c, const_first }, v) => {
                    let f = |t: Tensor<4>| scalar(t, *op, *c, *const_first);
                    match v {
                        Val::R4(t) => Val::R4(f(t)),
                        Val::R2(t) => {
                            let [n, k] = t.dims();
                            Val::R2(f(t.reshape([n, k, 1, 1])).reshape([n, k]))
                        }
                    }
                }
                _ => return Err(bad(s, "tensor rank not supported for this operator")),
            };
            vals.insert(&s.output, out);
        }
        match vals.remove(self.output.as_str()) {
            Some(Val::R2(y)) => Ok(y),
            Some(Val::R4(y)) => {
                let [n, c, h, w] = y.dims();
                Ok(y.reshape([n, c * h * w]))
            }
            None => Err(Error::OutputNotComputed),
        }
    }
}

fn scalar(t: Tensor<4>, op: char, c: f32, const_first: bool) -> Tensor<4> {
    match (op, const_first) {
        ('A', _) => t.add_scalar(c),
        ('M', _) => t.mul_scalar(c),
        ('S', false) => t.sub_scalar(c),
        ('S', true) => t.neg().add_scalar(c),
        ('D', false) => t.div_scalar(c),
        _ => t.recip().mul_scalar(c),
    }
}
