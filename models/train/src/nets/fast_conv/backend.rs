//! The backend extension: one operation, `fast_conv2d`, for flex and for autodiff over flex.
//!
//! burn 0.22 runs every tensor through its runtime `Dispatch` backend; a
//! `#[backend_extension]` trait is the supported way to add an operation to it. The macro
//! routes a call to the implementation of the backend the tensors live on (here `Flex`, or
//! `Autodiff<Flex, _>` when they track gradients); it derives no backward pass, so the autodiff
//! implementation below registers its own graph node, the way burn-autodiff's own `conv2d`
//! does, with the gradients of `kernels` in place of burn's generic ones.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};

use super::kernels;

/// A 2-D convolution whose backward pass is scrim's (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub trait FastConvBackend: Backend {
    /// `x [N, C_in, H, W]`, `weight [C_out, C_in/groups, kh, kw]`, `bias [C_out]` →
    /// `[N, C_out, H_out, W_out]`, as `ModuleOps::conv2d`.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// [`fast_conv2d`](Self::fast_conv2d) without a bias. (Two methods, because the macro's
    /// generated routing passes an `Option` of tensors through unconverted.)
    fn fast_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;
}

impl FastConvBackend for Flex {
    fn fast_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        kernels::forward(x, weight, Some(bias), options)
    }

    fn fast_conv2d_no_bias(
        x: FlexTensor,
        weight: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        kernels::forward(x, weight, None, options)
    }
}

/// The state a convolution node keeps for its backward pass: its input, its weights (as
/// checkpointed nodes) and its options.
type ConvState = (NodeId, NodeId, ConvOptions<2>);

#[derive(Debug)]
struct ConvWithBias;

#[derive(Debug)]
struct ConvNoBias;

impl Backward<Flex, 3> for ConvWithBias {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        // Laid out once for the three gradients (a loss's sum hands down a broadcast view).
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, kernels::bias_grad(dy.clone()));
        }
        backward_xw(
            ops.state,
            [node_x.map(|n| n.id), node_w.map(|n| n.id)],
            dy,
            grads,
            ckpt,
        );
    }
}

impl Backward<Flex, 2> for ConvNoBias {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 2>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [node_x, node_w] = ops.parents;
        backward_xw(
            ops.state,
            [node_x.map(|n| n.id), node_w.map(|n| n.id)],
            dy,
            grads,
            ckpt,
        );
    }
}

/// The input and weight gradients, each only when its node asks for one.
fn backward_xw(
    (x_state, w_state, options): ConvState,
    [node_x, node_w]: [Option<NodeId>; 2],
    dy: FlexTensor,
    grads: &mut Gradients,
    ckpt: &mut Checkpointer,
) {
    let x = ckpt.retrieve_node_output::<FlexTensor>(x_state);
    let w = ckpt.retrieve_node_output::<FlexTensor>(w_state);
    let fast = kernels::supported(&x, &w, &options);
    if let Some(node) = node_x {
        let grad = if fast {
            kernels::input_grad(x.shape().dims(), w.clone(), dy.clone(), options.clone())
        } else {
            <Flex as ModuleOps<Flex>>::conv2d_x_backward(
                x.clone(),
                w.clone(),
                dy.clone(),
                options.clone(),
            )
        };
        grads.register::<Flex>(node, grad);
    }
    if let Some(node) = node_w {
        let grad = if fast {
            kernels::weight_grad(x, dy, w.shape().dims(), options)
        } else {
            <Flex as ModuleOps<Flex>>::conv2d_weight_backward(x, w, dy, options)
        };
        grads.register::<Flex>(node, grad);
    }
}

impl<C: CheckpointStrategy> FastConvBackend for Autodiff<Flex, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match ConvWithBias
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    options.clone(),
                );
                let y = kernels::forward(
                    x.into_primitive(),
                    weight.into_primitive(),
                    Some(bias.into_primitive()),
                    options,
                );
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::forward(
                x.into_primitive(),
                weight.into_primitive(),
                Some(bias.into_primitive()),
                options,
            )),
        }
    }

    fn fast_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match ConvNoBias
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    options.clone(),
                );
                let y =
                    kernels::forward(x.into_primitive(), weight.into_primitive(), None, options);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(kernels::forward(
                x.into_primitive(),
                weight.into_primitive(),
                None,
                options,
            )),
        }
    }
}
