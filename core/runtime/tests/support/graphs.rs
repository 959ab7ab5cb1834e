//! Graphs that exercise every layer of the ONNX writer, with a direct (naive) computation of
//! each, shared by the tract tests (here and in scrim-seal) and the examples that write fixtures
//! for onnxruntime.
#![allow(dead_code)]

use std::path::Path;

use scrim_core::manifest::{Manifest, PerturberOutput, PerturberSpec};
use scrim_core::onnx::{Conv, GraphBuilder};
use scrim_core::{BatchMode, ImageTensor, InputSpec, Model, NoiseKind};

/// Deterministic pseudo-random values in `[-scale, scale]`.
pub fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A tensor for the naive reference: shape `[c, h, w]` of one image.
#[derive(Clone, Debug)]
pub struct T {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub d: Vec<f32>,
}

impl T {
    fn at(&self, c: usize, y: isize, x: isize) -> Option<f32> {
        if y < 0 || x < 0 || y as usize >= self.h || x as usize >= self.w {
            None
        } else {
            Some(self.d[(c * self.h + y as usize) * self.w + x as usize])
        }
    }
    fn map(mut self, f: impl Fn(f32) -> f32) -> T {
        self.d.iter_mut().for_each(|v| *v = f(*v));
        self
    }
}

pub fn conv(
    x: &T,
    w: &[f32],
    shape: [usize; 4],
    b: Option<&[f32]>,
    stride: usize,
    pad: usize,
    groups: usize,
) -> T {
    let [o, ipg, kh, kw] = shape;
    let oh = (x.h + 2 * pad - kh) / stride + 1;
    let ow = (x.w + 2 * pad - kw) / stride + 1;
    let opg = o / groups;
    let mut d = vec![0.0; o * oh * ow];
    for oc in 0..o {
        let g = oc / opg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = b.map_or(0.0, |b| b[oc]);
                for ic in 0..ipg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * stride + ky) as isize - pad as isize;
                            let xx = (ox * stride + kx) as isize - pad as isize;
                            if let Some(v) = x.at(g * ipg + ic, y, xx) {
                                acc += v * w[((oc * ipg + ic) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                d[(oc * oh + oy) * ow + ox] = acc;
            }
        }
    }
    T {
        c: o,
        h: oh,
        w: ow,
        d,
    }
}

fn pool(x: &T, k: usize, stride: usize, pad: usize, max: bool) -> T {
    let oh = (x.h + 2 * pad - k) / stride + 1;
    let ow = (x.w + 2 * pad - k) / stride + 1;
    let mut d = Vec::with_capacity(x.c * oh * ow);
    for c in 0..x.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let vals: Vec<f32> = (0..k * k)
                    .filter_map(|i| {
                        let y = (oy * stride + i / k) as isize - pad as isize;
                        let xx = (ox * stride + i % k) as isize - pad as isize;
                        x.at(c, y, xx)
                    })
                    .collect();
                d.push(if max {
                    vals.iter().copied().fold(f32::MIN, f32::max)
                } else {
                    vals.iter().sum::<f32>() / vals.len() as f32
                });
            }
        }
    }
    T {
        c: x.c,
        h: oh,
        w: ow,
        d,
    }
}

fn erf(x: f32) -> f32 {
    // Abramowitz–Stegun 7.1.26 is only 1.5e-7 accurate; use a series/continued form in f64.
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

/// Computes a case's expected outputs from its input.
pub type Reference = Box<dyn Fn(&T) -> Vec<Vec<f32>>>;

/// A model: its ONNX bytes, its input shape and a reference function.
pub struct Case {
    pub name: &'static str,
    pub onnx: Vec<u8>,
    pub input: [usize; 3],
    pub outputs: Vec<&'static str>,
    pub reference: Reference,
}

/// Perturber-like stack: Conv(+bias) → BatchNorm → Relu → depthwise strided Conv → LeakyRelu →
/// MaxPool → AveragePool(pad) → nearest upsample → 1×1 Conv → Sigmoid → scale; a second output
/// uses Tanh, Sub and Add.
pub fn conv_stack() -> Case {
    let (c1, h, w) = (8, 16, 16);
    let w1 = values(1, c1 * 3 * 9, 0.4);
    let b1 = values(2, c1, 0.1);
    let gamma = values(3, c1, 0.5)
        .iter()
        .map(|v| v + 1.0)
        .collect::<Vec<_>>();
    let beta = values(4, c1, 0.2);
    let mean = values(5, c1, 0.2);
    let var = values(6, c1, 0.3)
        .iter()
        .map(|v| v.abs() + 0.5)
        .collect::<Vec<_>>();
    let wd = values(7, c1 * 9, 0.5);
    let wp = values(8, 3 * c1, 0.5);
    let bp = values(9, 3, 0.1);

    let mut g = GraphBuilder::new("conv_stack");
    let x = g.image_input("image", 3, h, w);
    let y = g.conv(&x, Conv::new(&w1, [c1, 3, 3, 3]).bias(&b1).pad(1));
    let y = g.batch_norm(&y, &gamma, &beta, &mean, &var, 1e-5);
    let y = g.relu(&y);
    let y = g.conv(
        &y,
        Conv::new(&wd, [c1, 1, 3, 3]).stride(2).pad(1).groups(c1),
    );
    let y = g.leaky_relu(&y, 0.1);
    let y = g.max_pool(&y, 2, 2, 0);
    let y = g.avg_pool(&y, 3, 1, 1);
    let y = g.upsample_nearest(&y, 4);
    let y = g.conv(&y, Conv::new(&wp, [3, c1, 1, 1]).bias(&bp));
    let s = g.sigmoid(&y);
    let s = g.scale(&s, 0.7);
    g.output(&s, "sigma");
    let t = g.tanh(&y);
    let t2 = g.sub(&t, &x);
    let t3 = g.add(&t2, &x);
    let t3 = g.offset(&t3, 0.25);
    g.output(&t3, "shift");

    let reference = move |x: &T| {
        let y = conv(x, &w1, [c1, 3, 3, 3], Some(&b1), 1, 1, 1);
        let plane = y.h * y.w;
        let mut y = y;
        for (i, v) in y.d.iter_mut().enumerate() {
            let c = i / plane;
            *v = (*v - mean[c]) / (var[c] + 1e-5).sqrt() * gamma[c] + beta[c];
        }
        let y = y.map(|v| v.max(0.0));
        let y = conv(&y, &wd, [c1, 1, 3, 3], None, 2, 1, c1);
        let y = y.map(|v| if v < 0.0 { 0.1 * v } else { v });
        let y = pool(&y, 2, 2, 0, true);
        let y = pool(&y, 3, 1, 1, false);
        let up = T {
            c: y.c,
            h: y.h * 4,
            w: y.w * 4,
            d: (0..y.c * y.h * 4 * y.w * 4)
                .map(|i| {
                    let (c, r) = (i / (y.h * 4 * y.w * 4), i % (y.h * 4 * y.w * 4));
                    let (yy, xx) = (r / (y.w * 4), r % (y.w * 4));
                    y.d[(c * y.h + yy / 4) * y.w + xx / 4]
                })
                .collect(),
        };
        let y = conv(&up, &wp, [3, c1, 1, 1], Some(&bp), 1, 0, 1);
        let sigma = y.clone().map(|v| 0.7 / (1.0 + (-v).exp()));
        let shift: Vec<f32> =
            y.d.iter()
                .zip(&x.d)
                .map(|(v, xv)| v.tanh() - xv + xv + 0.25)
                .collect();
        vec![sigma.d, shift]
    };
    Case {
        name: "conv_stack",
        onnx: g.finish(),
        input: [3, h, w],
        outputs: vec!["sigma", "shift"],
        reference: Box::new(reference),
    }
}

/// Classifier-like stack: strided Conv → GELU → Mul → GlobalAveragePool → Flatten → Gemm.
pub fn classifier() -> Case {
    let (c1, h, w, k) = (6, 12, 12, 4);
    let w1 = values(11, c1 * 3 * 16, 0.3);
    let b1 = values(12, c1, 0.2);
    let fc = values(13, c1 * k, 0.6);
    let fb = values(14, k, 0.1);

    let mut g = GraphBuilder::new("classifier");
    let x = g.image_input("image", 3, h, w);
    let y = g.conv(&x, Conv::new(&w1, [c1, 3, 4, 4]).bias(&b1).stride(4));
    let y = g.gelu(&y);
    let y = g.mul(&y, &y);
    let y = g.global_avg_pool(&y);
    let y = g.flatten(&y);
    let y = g.linear(&y, &fc, [c1, k], Some(&fb));
    g.output(&y, "logits");

    let reference = move |x: &T| {
        let y = conv(x, &w1, [c1, 3, 4, 4], Some(&b1), 4, 0, 1);
        let y = y.map(|v| {
            let gl = v * 0.5 * (1.0 + erf(v / std::f32::consts::SQRT_2));
            gl * gl
        });
        let plane = y.h * y.w;
        let pooled: Vec<f32> = (0..y.c)
            .map(|c| y.d[c * plane..(c + 1) * plane].iter().sum::<f32>() / plane as f32)
            .collect();
        let logits = (0..k)
            .map(|j| fb[j] + (0..c1).map(|i| pooled[i] * fc[i * k + j]).sum::<f32>())
            .collect();
        vec![logits]
    };
    Case {
        name: "classifier",
        onnx: g.finish(),
        input: [3, h, w],
        outputs: vec!["logits"],
        reference: Box::new(reference),
    }
}

pub fn all() -> Vec<Case> {
    vec![conv_stack(), classifier()]
}

/// A manifest that fits a case: a perturber with σ and shift outputs for the stack, a recognizer
/// with 4 labels for the classifiers.
pub fn manifest_for(case: &Case) -> Manifest {
    let [_, h, w] = case.input;
    if case.outputs[0] == "sigma" {
        let spec = PerturberSpec {
            sigma_max: 0.7,
            noise: NoiseKind::Gaussian,
            outputs: vec![PerturberOutput::Sigma, PerturberOutput::Shift],
            fill: 0.5,
            standardize: false,
            release: None,
            erase: None,
        };
        Manifest::perturber(case.name, InputSpec::rgb(h, w), spec)
    } else {
        let labels = (0..4).map(|i| format!("class{i}")).collect();
        Manifest::recognizer(case.name, InputSpec::rgb(h, w), "test", labels)
    }
}

/// Runs a case in tract, one image and a dynamic batch of three, and checks every output against
/// the case's direct computation (max error 1e-4).
pub fn check_against_reference(case: &Case) {
    let [c, h, w] = case.input;
    for batch in [BatchMode::Single, BatchMode::Dynamic] {
        let model = Model::load(&case.onnx, manifest_for(case), batch)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let n = if batch == BatchMode::Single { 1 } else { 3 };
        let data = values(99, n * c * h * w, 1.0)
            .iter()
            .map(|v| v * 0.5 + 0.5)
            .collect();
        let input = ImageTensor::new([n, c, h, w], data).expect("shape");
        let outs = model.run(&input).expect("run");
        assert_eq!(outs.len(), case.outputs.len(), "{}", case.name);
        for i in 0..n {
            let x = T {
                c,
                h,
                w,
                d: input.image(i).to_vec(),
            };
            let want = (case.reference)(&x);
            for (o, (got, want)) in outs.iter().zip(&want).enumerate() {
                let per = got.data.len() / n;
                let got = &got.data[i * per..(i + 1) * per];
                assert_eq!(got.len(), want.len(), "{} output {o}", case.name);
                let max_err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    max_err <= 1e-4,
                    "{} output {o} image {i}: max error {max_err}",
                    case.name
                );
            }
        }
    }
}

/// Writes a case's ONNX file, and an input with tract's outputs beside it as `NAME.json`, for the
/// onnxruntime / onnx.checker comparison in `tests/python/check_onnx.py`.
pub fn write_fixture(case: &Case, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let [c, h, w] = case.input;
    let n = 2;
    let input: Vec<f32> = values(7, n * c * h * w, 0.5)
        .iter()
        .map(|v| v + 0.5)
        .collect();
    // Run in tract with a dynamic batch; the manifest role only decides the output check.
    let model = Model::load(&case.onnx, manifest_for(case), BatchMode::Dynamic)?;
    let outs = model.run(&ImageTensor::new([n, c, h, w], input.clone())?)?;
    let onnx_path = out.join(format!("{}.onnx", case.name));
    std::fs::write(&onnx_path, &case.onnx)?;
    let fixture = serde_json::json!({
        "input_shape": [n, c, h, w],
        "input": input,
        "outputs": case.outputs.iter().zip(&outs).map(|(name, o)| serde_json::json!({
            "name": name, "shape": o.shape, "data": o.data,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(out.join(format!("{}.json", case.name)), fixture.to_string())?;
    println!("wrote {}", onnx_path.display());
    Ok(())
}
