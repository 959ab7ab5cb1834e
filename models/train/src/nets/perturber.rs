//! The on-device perturber: image → σ (and optionally μ, k), in the layout its configuration
//! names.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation;

use super::config::{PerturberConfig, PerturberLayout};
use super::encoder::BoundedEncoder;
use super::erase::ConceptErasure;
use super::fast_conv::FastConv2d;
use super::global::{GLOBAL_MAP_DIVISOR, GlobalView};
use super::layers::{conv3_strided, depthwise3, patch_stem, positive_init, upsample_nearest};

pub use super::tone::{gray_shift, standardize_shift};
/// The device's constants of the grey and tone transforms: training uses the same.
pub use scrim_core::noise::{LUMA, STANDARD_EPS, STANDARD_STD};

/// The perturber: `[N, 3, H, W]` in `[0,1]` → σ `[N, 3, H, W]` in `(0, σ_max)`, and optionally
/// a shift μ and a keep fraction k (see [`PerturberConfig`]).
#[derive(Module, Debug)]
pub struct Perturber {
    /// Hidden 3×3 convs with ReLU.
    pub hidden: Vec<FastConv2d>,
    /// The σ head (3×3 conv to 3 channels).
    pub head: FastConv2d,
    /// The shift head (3×3 conv to 3 channels), when `shift_max > 0`.
    pub shift: Option<FastConv2d>,
    /// The input-independent σ logits `[1, 3, S, S]` (Cloak-style baseline).
    pub map: Option<Param<Tensor<4>>>,
    /// σ_max.
    pub sigma_max: f64,
    /// Bound of the learned shift.
    pub shift_max: f64,
    /// Suppression on.
    pub suppress: bool,
    /// Grey conversion on.
    pub gray: bool,
    /// Tone standardisation on (see [`PerturberConfig::standardize`]).
    pub standardize: bool,
    /// Fill value of suppressed pixels.
    pub fill: f64,
    /// σ-map resolution divisor (see [`PerturberConfig::downsample`]).
    pub downsample: usize,
    /// The encoder of a bounded release (layout `bounded`); the other fields are then unused.
    pub bounded: Option<BoundedEncoder>,
    /// The features of a global view (layout `global`), read by the heads in place of
    /// `hidden` (then empty).
    pub global: Option<GlobalView>,
    /// The concept erasure ([`PerturberConfig::erase`]), fitted by the trainer: `None` in a
    /// freshly initialised perturber.
    pub erase: Option<ConceptErasure>,
}

/// The perturber's outputs for one batch.
#[derive(Debug, Clone)]
pub struct PerturberOut {
    /// σ(x), `[N, 3, H, W]`.
    pub sigma: Tensor<4>,
    /// log σ(x), computed stably from the head's logits.
    pub log_sigma: Tensor<4>,
    /// μ(x), the deterministic offset (grey conversion and/or the learned shift).
    pub shift: Option<Tensor<4>>,
    /// k(x), the kept fraction of each pixel (suppression).
    pub keep: Option<Tensor<4>>,
    /// What suppressed pixels fade to.
    pub fill: f64,
    /// The bounded release's map `[N, C, R, R]`: the upload is this map, upsampled, plus noise
    /// of σ (`sigma` is then that constant everywhere).
    pub map: Option<Tensor<4>>,
}

/// How the perturber's convolutions are laid out: [`PerturberLayout`] without the baseline,
/// whose map has no network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Dense 3×3 convolutions and 3×3 heads.
    Dense,
    /// Patch stem, depthwise 3×3 convolutions, 1×1 heads.
    Separable,
    /// Per-channel patch stem, depthwise 3×3 convolutions and depthwise 3×3 heads.
    Depthwise,
}

/// A head: 3 output maps from `cin` features (1×1 in the separable layout, depthwise 3×3 in the
/// depthwise one, else 3×3).
fn head_conv(
    cin: usize,
    stride: usize,
    layout: Layout,
    zeros: bool,
    device: &Device,
) -> FastConv2d {
    let (k, pad) = if layout == Layout::Separable {
        (1, PaddingConfig2d::Valid)
    } else {
        (3, PaddingConfig2d::Explicit(1, 1, 1, 1))
    };
    let groups = if layout == Layout::Depthwise { 3 } else { 1 };
    let config = Conv2dConfig::new([cin, 3], [k, k])
        .with_stride([stride, stride])
        .with_padding(pad)
        .with_groups(groups);
    if zeros {
        config
            .with_initializer(Initializer::Zeros)
            .init(device)
            .into()
    } else {
        config.init(device).into()
    }
}

impl PerturberConfig {
    fn layout(&self) -> Layout {
        match self.layout {
            PerturberLayout::Dense
            | PerturberLayout::InputIndependent
            | PerturberLayout::Bounded => Layout::Dense,
            // The global view's heads are 1×1, as the separable layout's.
            PerturberLayout::Separable | PerturberLayout::Global => Layout::Separable,
            PerturberLayout::Depthwise => Layout::Depthwise,
        }
    }

    /// Builds a freshly initialised perturber for 32×32 images ([`PerturberConfig::init_for`]
    /// for another size; only the bounded layout depends on it).
    pub fn init(&self, device: &Device) -> Perturber {
        self.init_for(32, device)
    }

    /// Builds a freshly initialised perturber for images of side `size`.
    pub fn init_for(&self, size: usize, device: &Device) -> Perturber {
        let mut hidden = Vec::new();
        let mut cin = 3;
        let layers = if self.layout == PerturberLayout::InputIndependent {
            0
        } else {
            self.hidden_layers
        };
        // The first convolution carries the stride of a reduced-resolution σ map.
        let stride = if self.layout == PerturberLayout::InputIndependent {
            1
        } else {
            self.downsample.max(1)
        };
        let layout = self.layout();
        let global =
            (self.layout == PerturberLayout::Global).then(|| GlobalView::new(self, size, device));
        match layout {
            _ if global.is_some() => {}
            Layout::Separable | Layout::Depthwise => {
                let (width, groups) = if layout == Layout::Depthwise {
                    (3, 3)
                } else {
                    (self.channels, 1)
                };
                let mut stem = patch_stem(width, stride, groups, device);
                cin = width;
                let mut convs: Vec<FastConv2d> =
                    (0..layers).map(|_| depthwise3(cin, device)).collect();
                if layout == Layout::Depthwise {
                    // Three channels leave no spare ones: a signed random start can zero a
                    // channel after a ReLU for every input, and then it never learns. Positive
                    // weights start each layer as a local mean, alive for every image.
                    stem = positive_init(stem, device);
                    convs = convs
                        .into_iter()
                        .map(|c| positive_init(c, device))
                        .collect();
                }
                hidden.push(stem);
                hidden.extend(convs);
            }
            Layout::Dense => {
                for k in 0..layers {
                    let s = if k == 0 { stride } else { 1 };
                    hidden.push(conv3_strided(cin, self.channels, s, device));
                    cin = self.channels;
                }
            }
        }
        if let Some(g) = &global {
            cin = g.width();
        }
        let head_stride = if hidden.is_empty() && global.is_none() {
            stride
        } else {
            1
        };
        let mut head = head_conv(cin, head_stride, layout, false, device);
        // A fresh trainable parameter: mapping the initialised one would yield a constant.
        head.bias = Some(Param::from_tensor(Tensor::full(
            [3],
            self.head_bias,
            device,
        )));
        // The shift head starts at μ = 0 exactly (zero weights still get gradients).
        let shift = (self.shift_max > 0.0 && !(self.layout == PerturberLayout::InputIndependent))
            .then(|| head_conv(cin, head_stride, layout, true, device));
        let map = (self.layout == PerturberLayout::InputIndependent).then(|| {
            Param::from_tensor(Tensor::full(
                [1, 3, self.map_size, self.map_size],
                self.head_bias,
                device,
            ))
        });
        Perturber {
            hidden,
            head,
            shift,
            map,
            sigma_max: self.sigma_max,
            shift_max: self.shift_max,
            suppress: self.suppress,
            gray: self.gray,
            standardize: self.standardize,
            fill: self.fill,
            downsample: if global.is_some() {
                GLOBAL_MAP_DIVISOR
            } else {
                stride
            },
            bounded: (self.layout == PerturberLayout::Bounded)
                .then(|| BoundedEncoder::new(self, size, device)),
            global,
            erase: None,
        }
    }
}

impl Perturber {
    /// # Shapes
    /// `x: [N, 3, H, W]` → σ and log σ `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> PerturberOut {
        let [n, c, h, w] = x.dims();
        if let Some(b) = &self.bounded {
            let device = x.device();
            return PerturberOut {
                sigma: Tensor::full([n, c, h, w], b.sigma, &device),
                log_sigma: Tensor::full([n, c, h, w], b.sigma.ln(), &device),
                shift: None,
                keep: None,
                fill: b.fill,
                map: Some(b.forward(x)),
            };
        }
        let (z, learned_shift) = match &self.map {
            Some(map) => (map.val().expand([n, c, h, w]), None),
            None => {
                let f = match &self.global {
                    Some(g) => g.forward(x.clone()),
                    None => self
                        .hidden
                        .iter()
                        .fold(x.clone(), |f, conv| activation::relu(conv.forward(f))),
                };
                let d = self.downsample;
                let shift = self.shift.as_ref().map(|s| {
                    upsample_nearest(activation::tanh(s.forward(f.clone())), d)
                        .mul_scalar(self.shift_max)
                });
                (upsample_nearest(self.head.forward(f), d), shift)
            }
        };
        let shift = match (self.fixed_shift(x), learned_shift) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let keep = self.suppress.then(|| activation::sigmoid(z.clone().neg()));
        let log_sigma = activation::log_sigmoid(z.clone()).add_scalar(self.sigma_max.ln());
        let sigma = activation::sigmoid(z).mul_scalar(self.sigma_max);
        PerturberOut {
            sigma,
            log_sigma,
            shift,
            keep,
            fill: self.fill,
            map: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nets::RecognizerConfig;
    use burn::optim::GradientsParams;

    #[test]
    fn every_parameter_is_trainable_and_shapes_hold() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new().init(&device);
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x.clone());
        assert_eq!(out.sigma.dims(), [2, 3, 8, 8]);
        // σ starts at σ_max·sigmoid(head_bias) on average (weights are small around it).
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        // 2 hidden convs and the head, each with weight and bias: a frozen parameter (e.g. a
        // bias rebuilt from an initialised one) would be missing here.
        assert_eq!(grads.len(), 6);
        let c = RecognizerConfig::new(3)
            .with_widths(vec![4, 8])
            .init(&device);
        let logits = c.forward(x);
        assert_eq!(logits.dims(), [2, 3]);
        let grads = GradientsParams::from_grads(logits.mean().backward(), &c);
        // conv w+b and BN γ+β per block, and the linear head's w+b.
        assert_eq!(grads.len(), 2 * 4 + 2);
    }

    #[test]
    fn separable_layout_has_a_patch_stem_depthwise_convs_and_pointwise_heads() {
        let device = Device::flex().autodiff();
        let config = PerturberConfig::new()
            .with_downsample(4)
            .with_channels(8)
            .with_layout(PerturberLayout::Separable);
        let p = config.clone().with_shift_max(0.1).init(&device);
        assert_eq!(p.hidden[0].weight.dims(), [8, 3, 4, 4]);
        assert_eq!(p.hidden[0].stride, [4, 4]);
        for dw in &p.hidden[1..] {
            assert_eq!(dw.weight.dims(), [8, 1, 3, 3]);
            assert_eq!(dw.groups, 8);
        }
        assert_eq!(p.hidden.len(), 3);
        assert_eq!(p.head.weight.dims(), [3, 8, 1, 1]);
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x);
        assert_eq!(out.sigma.dims(), [2, 3, 16, 16]);
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        // Stem, two depthwise convs and the σ head, weight and bias each (the shift head has
        // no path to log σ).
        assert_eq!(grads.len(), 8);
        // Each 4×4 patch shares one σ.
        let v = crate::batch::to_vec(out.sigma);
        assert_eq!(v[0], v[3]);
        assert_eq!(v[0], v[16 * 3 + 3]);
        // …and the patches are not all one σ. With random weights every feature can be below
        // zero after a ReLU for every patch, and then each patch gets the head's bias alone:
        // about one initialisation in 40 (1 failure in 40 runs when this checked one). A
        // layout that really gave one σ would do so for every initialisation, so several
        // fresh ones must not all.
        let patches =
            |v: &[f32]| -> Vec<f32> { (0..16).map(|p| v[(p / 4) * 64 + (p % 4) * 4]).collect() };
        let varies = |v: &[f32]| {
            let p = patches(v);
            p.iter().any(|&s| s != p[0])
        };
        let fresh = || {
            let p = config.init(&device);
            let x =
                Tensor::<4>::random([1, 3, 16, 16], burn::tensor::Distribution::Default, &device);
            crate::batch::to_vec(p.forward(x).sigma)
        };
        assert!(
            varies(&v) || (0..5).any(|_| varies(&fresh())),
            "one σ for every patch in six initialisations: {:?}",
            patches(&v)
        );
    }

    #[test]
    fn depthwise_layout_keeps_every_colour_channel_apart() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new()
            .with_downsample(4)
            .with_layout(PerturberLayout::Depthwise)
            .with_shift_max(0.1)
            .init(&device);
        assert_eq!(p.hidden.len(), 3);
        assert_eq!(p.hidden[0].weight.dims(), [3, 1, 4, 4]);
        assert_eq!(p.hidden[0].stride, [4, 4]);
        for conv in p
            .hidden
            .iter()
            .chain([&p.head, p.shift.as_ref().expect("shift")])
        {
            assert_eq!(conv.groups, 3);
            assert_eq!(conv.weight.dims()[..2], [3, 1]);
        }
        assert_eq!(p.head.weight.dims(), [3, 1, 3, 3]);
        // Perturbing one channel of the input moves σ in that channel only.
        let x = Tensor::<4>::random([1, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let bump = Tensor::<4>::zeros([1, 3, 16, 16], &device).slice_assign(
            [0..1, 1..2, 0..16, 0..16],
            Tensor::ones([1, 1, 16, 16], &device),
        );
        let a = crate::batch::to_vec(p.forward(x.clone()).sigma);
        let b = crate::batch::to_vec(p.forward(x + bump).sigma);
        let moved = |c: usize| {
            (c * 256..(c + 1) * 256)
                .map(|i| (a[i] - b[i]).abs())
                .fold(0.0f32, f32::max)
        };
        assert_eq!(moved(0), 0.0);
        assert_eq!(moved(2), 0.0);
        assert!(moved(1) > 0.0, "σ of the bumped channel did not move");
    }

    #[test]
    fn global_view_maps_depend_on_the_whole_face_at_half_resolution() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new()
            .with_layout(PerturberLayout::Global)
            .with_encoder_widths(vec![16, 16, 16, 16])
            .with_suppress(true)
            .with_shift_max(0.1)
            .init_for(16, &device);
        assert!(p.hidden.is_empty());
        assert_eq!(p.head.weight.dims(), [3, 16, 1, 1]);
        let x = Tensor::<4>::random([1, 3, 16, 16], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x.clone());
        assert_eq!(out.sigma.dims(), [1, 3, 16, 16]);
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        // Four encoder convs, the skip and the σ head, weight and bias each.
        assert_eq!(grads.len(), 12);
        let a = crate::batch::to_vec(p.forward(x.clone()).sigma);
        // Each 2×2 block shares its maps.
        assert_eq!(a[0], a[1]);
        assert_eq!(a[0], a[16]);
        // A change in the top-left corner moves σ in the bottom-right one: a 7×7 neighbourhood
        // could not see that far.
        let bump = Tensor::<4>::zeros([1, 3, 16, 16], &device).slice_assign(
            [0..1, 0..3, 0..2, 0..2],
            Tensor::ones([1, 3, 2, 2], &device),
        );
        let b = crate::batch::to_vec(p.forward(x + bump).sigma);
        // The bottom-right quarter, 8 pixels and more away (one cell may have every feature
        // below zero after the ReLU with random weights; not all of them).
        let far = (8..16).flat_map(|y| (8..16).map(move |x| y * 16 + x));
        let moved = far.filter(|&i| a[i] != b[i]).count();
        assert!(moved > 0, "σ 8 pixels and more away did not move");
    }

    #[test]
    fn half_resolution_sigma_keeps_the_input_shape() {
        let device = Device::flex().autodiff();
        let p = PerturberConfig::new().with_downsample(2).init(&device);
        let x = Tensor::<4>::random([2, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let out = p.forward(x);
        assert_eq!(out.sigma.dims(), [2, 3, 8, 8]);
        let grads = GradientsParams::from_grads(out.log_sigma.mean().backward(), &p);
        assert_eq!(grads.len(), 6);
        // Nearest upsampling: each 2×2 block of σ is one value.
        let v = crate::batch::to_vec(out.sigma);
        assert_eq!(v[0], v[1]);
        assert_eq!(v[0], v[8]);
    }
}
