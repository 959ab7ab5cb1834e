//! The fast convolution against burn's generic path: the output and the three gradients.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::*;
use crate::batch;

/// One convolution to check: input `[n, cin, h, w]`, `cout` filters of `k` (kh×kw), stride,
/// padding `((top, bottom), (left, right))`, groups, bias.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    cin: usize,
    cout: usize,
    hw: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: [(usize, usize); 2],
    groups: usize,
    bias: bool,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    n: usize,
    cin: usize,
    cout: usize,
    hw: [usize; 2],
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Case {
    Case {
        n,
        cin,
        cout,
        hw,
        k: [k, k],
        stride: [stride, stride],
        pad: [(pad, pad), (pad, pad)],
        groups,
        bias: true,
    }
}

/// Odd and non-square sides, strides 1 and 2, padding 0 and 1, groups 1, >1 and depthwise,
/// batch 1 and more than the thread count, the networks' patch stems and 1×1 kernels; the
/// last three take the shifted-view forward (`shifted`): the first in its forward, the second
/// in its input gradient, the third in its weight gradient (thin output);
/// the next two Scrim's Winograd kernel on AVX-512 CPUs (both ways; forward, 128 channels).
const CASES: &[Case] = &[
    case(1, 3, 5, [7, 9], 3, 1, 1, 1),
    case(4, 6, 4, [11, 8], 3, 2, 1, 1),
    case(3, 5, 7, [9, 13], 3, 1, 0, 1),
    case(2, 4, 6, [10, 7], 3, 2, 0, 2),
    case(5, 8, 8, [9, 10], 3, 1, 1, 8),
    case(1, 6, 6, [13, 11], 3, 2, 1, 6),
    case(9, 6, 9, [12, 10], 3, 1, 1, 3),
    case(3, 3, 12, [12, 16], 4, 4, 0, 3),
    case(2, 3, 8, [13, 15], 2, 2, 0, 1),
    case(4, 8, 5, [6, 9], 1, 1, 0, 1),
    case(17, 16, 16, [8, 8], 3, 1, 1, 1),
    case(2, 4, 4, [7, 7], 5, 2, 2, 1),
    case(3, 16, 5, [9, 33], 3, 1, 1, 1),
    case(2, 12, 16, [6, 32], 3, 1, 1, 1),
    case(3, 16, 3, [5, 33], 3, 1, 1, 1),
    case(3, 32, 40, [7, 17], 3, 1, 1, 1),
    case(5, 128, 32, [5, 6], 3, 1, 1, 1),
];

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// Random inputs of a case: x, weights, bias, upstream gradient (drawn once, then shared by
/// both runs: the tests run in parallel and share burn's seeded generator).
fn inputs(c: &Case) -> [TensorData; 4] {
    let device = Device::flex();
    let [h, w] = c.hw;
    let [ho, wo] = [0, 1].map(|i| (c.hw[i] + c.pad[i].0 + c.pad[i].1 - c.k[i]) / c.stride[i] + 1);
    let draw = |shape: Vec<usize>, d: Distribution| {
        let len = shape.iter().product::<usize>();
        TensorData::new(batch::to_vec(Tensor::<1>::random([len], d, &device)), shape)
    };
    [
        draw(vec![c.n, c.cin, h, w], Distribution::Default),
        draw(
            vec![c.cout, c.cin / c.groups, c.k[0], c.k[1]],
            Distribution::Normal(0.0, 0.5),
        ),
        draw(vec![c.cout], Distribution::Default),
        draw(vec![c.n, c.cout, ho, wo], Distribution::Normal(0.0, 1.0)),
    ]
}

/// Output, input gradient, weight gradient and bias gradient of `conv` under the loss
/// `Σ y ⊙ r` (a random upstream gradient, so no gradient is trivially uniform).
fn run(
    conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
    c: &Case,
    [x, wt, b, r]: [TensorData; 4],
) -> [Vec<f32>; 4] {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(x, &device).require_grad();
    let wt = Tensor::<4>::from_data(wt, &device).require_grad();
    let b = c
        .bias
        .then(|| Tensor::<1>::from_data(b, &device).require_grad());
    let y = conv(x.clone(), wt.clone(), b.clone());
    let grads = (y.clone() * Tensor::<4>::from_data(r, &device))
        .sum()
        .backward();
    let grad = |t: Option<Tensor<4>>| t.map(batch::to_vec).unwrap_or_default();
    [
        batch::to_vec(y),
        grad(x.grad(&grads)),
        grad(wt.grad(&grads)),
        b.and_then(|b| b.grad(&grads))
            .map(batch::to_vec)
            .unwrap_or_default(),
    ]
}

fn options(c: &Case) -> ConvOptions<2> {
    ConvOptions::new_with_padding(c.stride, c.pad, [1, 1], c.groups)
}

fn check(c: &Case) {
    let data = inputs(c);
    let fast = run(|x, w, b| conv2d(x, w, b, options(c)), c, data.clone());
    let burn = run(
        |x, w, b| burn::tensor::module::conv2d(x, w, b, options(c)),
        c,
        data,
    );
    for (what, (f, b)) in ["output", "input grad", "weight grad", "bias grad"]
        .iter()
        .zip(fast.iter().zip(&burn))
    {
        let e = rel_err(f, b);
        assert!(e <= 1e-4, "{c:?}: {what} relative error {e:e}");
    }
}

#[test]
fn matches_burn_on_every_case() {
    for c in CASES {
        check(c);
    }
}

#[test]
fn matches_burn_without_bias_and_with_asymmetric_padding() {
    for c in [
        Case {
            bias: false,
            ..case(3, 4, 6, [9, 8], 3, 1, 1, 1)
        },
        Case {
            pad: [(0, 1), (1, 0)],
            ..case(2, 4, 6, [10, 9], 3, 2, 0, 2)
        },
        Case {
            k: [3, 1],
            pad: [(1, 1), (0, 0)],
            ..case(2, 3, 4, [6, 5], 3, 1, 0, 1)
        },
    ] {
        check(&c);
    }
}

#[test]
fn the_shifted_weight_gradient_matches_the_unrolled_one() {
    // Batches of 1, below, at and above the thread count (chunks of unequal length), one-pixel
    // and non-square sides, one channel in or out.
    for (n, cin, cout, [h, w]) in [
        (1, 3, 5, [7, 9]),
        (3, 16, 16, [8, 8]),
        (5, 4, 3, [1, 6]),
        (2, 1, 4, [5, 1]),
        (9, 6, 1, [11, 12]),
        (4, 20, 16, [6, 32]),
    ] {
        let c = case(n, cin, cout, [h, w], 3, 1, 1, 1);
        let [x, _, _, dy] = inputs(&c);
        let [xs, dys] = [x, dy].map(|d| d.try_into_vec::<f32>().expect("f32"));
        let got = super::shifted::weight_grad(&xs, [n, cin, h, w], &dys, cout);
        let want = kernels::weight_grad_unrolled(
            kernels::tensor(xs.clone(), [n, cin, h, w]),
            kernels::tensor(dys.clone(), [n, cout, h, w]),
            [cout, cin, 3, 3],
            options(&c),
        );
        let want = kernels::contiguous(&want);
        let e = rel_err(&got, want.as_slice());
        assert!(e <= 1e-5, "{c:?}: relative error {e:e}");
    }
}

#[test]
fn only_the_input_gradient_when_the_weights_are_constant() {
    // As the pooling helper uses it: fixed depthwise weights, gradient to the input only.
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Default, &device).require_grad();
    let w = Tensor::<4>::ones([3, 1, 3, 3], &device) / 9.0;
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 3);
    let fast = conv2d(x.clone(), w.clone(), None, opts.clone())
        .sum()
        .backward();
    let slow = burn::tensor::module::conv2d(x.clone(), w, None, opts)
        .sum()
        .backward();
    let [f, s] = [fast, slow].map(|g| batch::to_vec(x.grad(&g).expect("input grad")));
    assert!(rel_err(&f, &s) <= 1e-4);
}

#[test]
fn runs_without_autodiff() {
    let device = Device::flex();
    let conv: FastConv2d = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device)
        .into();
    let x = Tensor::<4>::random([2, 3, 5, 6], Distribution::Default, &device);
    let plain: Conv2d = conv.clone().into();
    let e = rel_err(
        &batch::to_vec(conv.forward(x.clone())),
        &batch::to_vec(plain.forward(x)),
    );
    assert!(e <= 1e-6, "{e}");
}

#[test]
fn loads_a_checkpoint_of_burns_conv2d() {
    let device = Device::flex();
    let conv = Conv2dConfig::new([3, 4], [3, 3]).init(&device);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("conv.bpk");
    conv.clone().save_file(&path).expect("save");
    let fresh: FastConv2d = Conv2dConfig::new([3, 4], [3, 3]).init(&device).into();
    let loaded = fresh.try_load_file(&path).expect("load");
    assert_eq!(
        batch::to_vec(loaded.weight.val()),
        batch::to_vec(conv.weight.val())
    );
    let bias = |b: Option<Param<Tensor<1>>>| b.map(|b| batch::to_vec(b.val()));
    assert_eq!(bias(loaded.bias), bias(conv.bias));
}

/// Forward, input and weight gradient timed apart: `-- --ignored conv_parts --nocapture`.
#[test]
#[ignore = "a benchmark"]
fn conv_parts() {
    use burn::backend::flex::FlexTensor;
    use std::time::Instant;
    let median = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..12)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[6]
    };
    let flex = |shape: Vec<usize>| {
        let len = shape.iter().product::<usize>();
        let data: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        FlexTensor::from_data(TensorData::new(data, shape))
    };
    for (cin, cout, side) in [
        (3, 16, 32),
        (3, 32, 32),
        (16, 16, 32),
        (16, 3, 32),
        (32, 64, 16),
        (64, 128, 8),
    ] {
        let n = 64;
        let x = flex(vec![n, cin, side, side]);
        let w = flex(vec![cout, cin, 3, 3]);
        let dy = flex(vec![n, cout, side, side]);
        let o = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let fwd = median(&mut || {
            let _ = kernels::forward(x.clone(), w.clone(), None, o.clone());
        });
        let xg = median(&mut || {
            let _ = kernels::input_grad([n, cin, side, side], w.clone(), dy.clone(), o.clone());
        });
        let wg = median(&mut || {
            let _ =
                kernels::weight_grad_unrolled(x.clone(), dy.clone(), [cout, cin, 3, 3], o.clone());
        });
        let swg = median(&mut || {
            let _ = kernels::weight_grad(x.clone(), dy.clone(), [cout, cin, 3, 3], o.clone());
        });
        type M = burn::backend::Flex;
        use burn::backend::ops::ModuleOps;
        let gxg = median(&mut || {
            let _ =
                <M as ModuleOps<M>>::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), o.clone());
        });
        let gwg = median(&mut || {
            let _ = <M as ModuleOps<M>>::conv2d_weight_backward(
                x.clone(),
                w.clone(),
                dy.clone(),
                o.clone(),
            );
        });
        println!(
            "{cin}→{cout} @{side}: forward {fwd:.2} | input grad {xg:.2} (generic {gxg:.2}) | weight grad {swg:.2} (unrolled {wg:.2}, generic {gwg:.2}) ms"
        );
    }
}

/// Scrim's batch-norm training against burn's, on one input: output, the three gradients and
/// the running statistics after one step.
fn check_batch_norm(shape: [usize; 4]) {
    use burn::nn::BatchNormConfig;
    let device = Device::flex().autodiff();
    let c = shape[1];
    let x = Tensor::<4>::random(shape, Distribution::Normal(0.3, 2.0), &device);
    let w = Tensor::<4>::random(shape, Distribution::Default, &device);
    let gamma = Tensor::<1>::random([c], Distribution::Normal(1.0, 0.5), &device);
    let beta = Tensor::<1>::random([c], Distribution::Default, &device);
    let (xd, wd, gd, bd) = (
        x.into_data(),
        w.into_data(),
        gamma.into_data(),
        beta.into_data(),
    );
    let run = |ours: bool| {
        let mut bn = BatchNormConfig::new(c).init(&device);
        bn.gamma = burn::module::Param::from_data(gd.clone(), &device);
        bn.beta = burn::module::Param::from_data(bd.clone(), &device);
        let x = Tensor::<4>::from_data(xd.clone(), &device).require_grad();
        let y = if ours {
            batch_norm(&bn, x.clone())
        } else {
            bn.forward(x.clone())
        };
        // A loss that weighs every output differently, so every gradient term matters.
        let g = (y.clone() * Tensor::<4>::from_data(wd.clone(), &device))
            .sum()
            .backward();
        let dx = batch::to_vec(x.grad(&g).expect("dx"));
        let dg = batch::to_vec(bn.gamma.val().grad(&g).expect("dgamma"));
        let db = batch::to_vec(bn.beta.val().grad(&g).expect("dbeta"));
        let rm = batch::to_vec(bn.running_mean.value());
        let rv = batch::to_vec(bn.running_var.value());
        [batch::to_vec(y.inner()), dx, dg, db, rm, rv]
    };
    let (ours, burns) = (run(true), run(false));
    for (what, (a, b)) in [
        "output",
        "dx",
        "dgamma",
        "dbeta",
        "running mean",
        "running var",
    ]
    .iter()
    .zip(ours.iter().zip(&burns))
    {
        let e = rel_err(a, b);
        assert!(e <= 1e-4, "{shape:?} {what}: relative error {e}");
    }
}

#[test]
fn batch_norm_matches_burn() {
    for shape in [[4, 3, 5, 7], [9, 8, 4, 4], [2, 16, 9, 1], [1, 5, 3, 3]] {
        check_batch_norm(shape);
    }
}

#[test]
fn batch_norm_in_inference_is_burns() {
    use burn::nn::BatchNormConfig;
    let device = Device::flex();
    let bn = BatchNormConfig::new(3).init(&device);
    let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &device);
    let (a, b) = (batch_norm(&bn, x.clone()), bn.forward(x));
    assert_eq!(batch::to_vec(a), batch::to_vec(b));
}

/// Batch-norm training forward and backward, scrim's against burn's:
/// `-- --ignored batch_norm_parts --nocapture`.
#[test]
#[ignore = "a benchmark"]
fn batch_norm_parts() {
    use burn::nn::BatchNormConfig;
    use std::time::Instant;
    let device = Device::flex().autodiff();
    for (c, side) in [(32usize, 32usize), (64, 16), (128, 8)] {
        let bn = BatchNormConfig::new(c).init(&device);
        let x =
            Tensor::<4>::random([64, c, side, side], Distribution::Default, &device).require_grad();
        let time = |ours: bool| {
            let mut t: Vec<f64> = (0..12)
                .map(|_| {
                    let s = Instant::now();
                    let y = if ours {
                        batch_norm(&bn, x.clone())
                    } else {
                        bn.forward(x.clone())
                    };
                    let g = y.sum().backward();
                    let _ = x.grad(&g);
                    s.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[6]
        };
        let (ours, burns) = (time(true), time(false));
        println!(
            "batch norm {c}@{side}, 64 images: scrim {ours:.2} ms, burn {burns:.2} ms (forward + backward)"
        );
    }
}

/// Scrim's 2×2 max pooling against burn's, output and input gradient, on values with many ties
/// (small integers, half of them zero as after a ReLU): equal to the last bit.
fn check_max_pool(shape: [usize; 4]) {
    use burn::nn::pool::MaxPool2dConfig;
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::random(shape, Distribution::Uniform(-3.0, 3.0), &device)
        .round()
        .clamp_min(0.0);
    let [n, c, h, w] = shape;
    let w_out = Tensor::<4>::random([n, c, h / 2, w / 2], Distribution::Default, &device);
    let (xd, wd) = (x.into_data(), w_out.into_data());
    let pool = MaxPool2dConfig::new([2, 2]).init();
    let run = |ours: bool| {
        let x = Tensor::<4>::from_data(xd.clone(), &device).require_grad();
        let y = if ours {
            max_pool2d(&pool, x.clone())
        } else {
            pool.forward(x.clone())
        };
        let g = (y.clone() * Tensor::<4>::from_data(wd.clone(), &device))
            .sum()
            .backward();
        [
            batch::to_vec(y.inner()),
            batch::to_vec(x.grad(&g).expect("dx")),
        ]
    };
    let (ours, burns) = (run(true), run(false));
    assert_eq!(ours[0], burns[0], "{shape:?}: output");
    assert_eq!(ours[1], burns[1], "{shape:?}: input gradient");
}

#[test]
fn max_pool_matches_burn_exactly() {
    for shape in [
        [2, 3, 6, 8],
        [3, 4, 7, 5],
        [64, 8, 4, 4],
        [1, 1, 2, 2],
        [2, 2, 3, 9],
    ] {
        check_max_pool(shape);
    }
    // Other pools, and no autodiff, take burn's path or give burn's values.
    let device = Device::flex();
    let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Default, &device);
    let three = burn::nn::pool::MaxPool2dConfig::new([3, 3]).init();
    let two = burn::nn::pool::MaxPool2dConfig::new([2, 2]).init();
    assert_eq!(
        batch::to_vec(max_pool2d(&three, x.clone())),
        batch::to_vec(three.forward(x.clone()))
    );
    assert_eq!(
        batch::to_vec(max_pool2d(&two, x.clone())),
        batch::to_vec(two.forward(x))
    );
}
