//! A 2-D convolution with its own backward pass on burn's CPU backend, flex.
//!
//! burn-flex 0.22.1 has a fast forward convolution but no backward of its own, so autodiff runs
//! burn's generic one: the input gradient through `conv_transpose2d` (a matrix product, then a
//! scatter) and the weight gradient as a convolution with batch and channels swapped, whose
//! "kernel" is the whole output gradient — slow on every shape the networks here use. This
//! module computes the weight gradient as per-image unrolling plus one matrix product per image,
//! accumulated per thread, and the input gradient as the forward convolution of the output
//! gradient with the flipped weights (see `kernels`; a 3×3 stride-1 forward over enough
//! channels and columns runs without the unrolled matrix, and so does the weight gradient of
//! one with at most four output channels, see `shifted`).
//!
//! [`FastConv2d`] is burn's `Conv2d` with that forward: the same fields, so the same record
//! (checkpoints and ONNX export read `weight`, `bias`, `stride`, `padding`, `groups` as before).
//! [`conv2d`] is the functional form. Both fall back to burn's own convolution on other
//! backends, dtypes other than f32, and dilated kernels.
//!
//! ```
//! use burn::nn::conv::Conv2dConfig;
//! use burn::prelude::*;
//! use scrim_train::nets::FastConv2d;
//!
//! let device = Device::flex().autodiff();
//! let conv: FastConv2d = Conv2dConfig::new([3, 8], [3, 3]).init(&device).into();
//! let y = conv.forward(Tensor::<4>::ones([2, 3, 10, 10], &device));
//! assert_eq!(y.dims(), [2, 8, 8, 8]);
//! ```

mod backend;
mod kernels;
mod norm;
mod pool;
mod shifted;

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Dispatch, DispatchDevice};
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

pub use backend::FastConvBackend;
pub use norm::batch_norm;
pub use pool::{FastPoolBackend, max_pool2d};

static BURN_GENERIC: AtomicBool = AtomicBool::new(false);

/// Sends every [`FastConv2d`], [`conv2d`], [`batch_norm`] and [`max_pool2d`] of this process
/// through burn's own convolution, batch norm and pooling (`true`) or back through scrim's (`false`, the default). For
/// benchmarks that time both in one process (`scrim bench`); training never calls it.
pub fn use_burn_generic(on: bool) {
    BURN_GENERIC.store(on, Ordering::Relaxed);
}

/// burn's `Conv2d`, whose forward pass records scrim's backward on flex.
#[derive(Module, Debug)]
pub struct FastConv2d {
    /// `[C_out, C_in/groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    /// `[C_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Kernel size.
    pub kernel_size: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
    /// Padding.
    #[module(skip)]
    pub padding: PaddingConfig2d,
}

impl From<Conv2d> for FastConv2d {
    fn from(c: Conv2d) -> Self {
        Self {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            kernel_size: c.kernel_size,
            dilation: c.dilation,
            groups: c.groups,
            padding: c.padding,
        }
    }
}

impl From<FastConv2d> for Conv2d {
    fn from(c: FastConv2d) -> Self {
        Self {
            weight: c.weight,
            bias: c.bias,
            stride: c.stride,
            kernel_size: c.kernel_size,
            dilation: c.dilation,
            groups: c.groups,
            padding: c.padding,
        }
    }
}

impl FastConv2d {
    /// The convolution's options for an input of side `height`×`width`.
    pub fn options(&self, height: usize, width: usize) -> ConvOptions<2> {
        let pads = match self.padding {
            PaddingConfig2d::Valid => [(0, 0), (0, 0)],
            PaddingConfig2d::Same => [
                same_padding(self.kernel_size[0], self.stride[0], height),
                same_padding(self.kernel_size[1], self.stride[1], width),
            ],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        };
        ConvOptions::new_with_padding(self.stride, pads, self.dilation, self.groups)
    }

    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, C_out, H_out, W_out]`, as burn's `Conv2d::forward`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = input.dims();
        conv2d(
            input,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.options(h, w),
        )
    }
}

/// burn-nn's `Same` padding (private there): the output side is ⌈side/stride⌉, any odd
/// padding goes at the end.
fn same_padding(kernel: usize, stride: usize, side: usize) -> (usize, usize) {
    let out = side.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(side)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

/// `burn::tensor::module::conv2d` with scrim's backward on flex (burn's own elsewhere).
///
/// # Shapes
/// `x [N, C_in, H, W]`, `weight [C_out, C_in/groups, kh, kw]`, `bias [C_out]` →
/// `[N, C_out, H_out, W_out]`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if BURN_GENERIC.load(Ordering::Relaxed)
        || !on_flex(&x)
        || !on_flex(&weight)
        || x.dtype() != DType::F32
        || options.dilation != [1, 1]
    {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let [_, cin, _, _] = x.dims();
    let [_, cin_g, _, _] = weight.dims();
    assert_eq!(
        cin,
        cin_g * options.groups,
        "conv2d: the input has {cin} channels, the weights expect {cin_g} × {} groups",
        options.groups
    );
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(b) => {
            <Dispatch as FastConvBackend>::fast_conv2d(x, weight, b.into_dispatch(), options)
        }
        None => <Dispatch as FastConvBackend>::fast_conv2d_no_bias(x, weight, options),
    })
}

/// Whether `t` lives on flex (with or without autodiff).
fn on_flex<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(
        t.device().as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

#[cfg(test)]
mod tests;
