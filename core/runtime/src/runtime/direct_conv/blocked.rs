//! Chains of 3×3 convolutions (stride 1 or 2, padding 1, output channels a multiple of 8) run
//! in a channel-blocked layout kept from layer to layer: the perturbers' encoders, a stack of
//! stride-2 halvings, the face default's among them.
//!
//! Layout: between layers an image is `[c / 8][h + 2][w + 2][8]` (eight channels of a pixel
//! side by side, a zero border of one pixel), so the next layer reads its padding as it is and
//! a layer writes its output straight into the next one's input. The chain's first layer reads
//! the plain NCHW image where it is: its inner pixels straight from the caller's tensor, the
//! pixels whose taps reach past the image (its first row and column, the last ones of an odd
//! side) from small zero-bordered strips copied per border row or column. The last layer's
//! output goes back to NCHW.
//!
//! A register tile is `OV` vectors of 8 output channels by `P` output pixels of one row
//! (8 or 9 accumulators, fewer at a row's end): for each input channel and tap it
//! loads `OV` weight vectors and broadcasts the `P` input values, so a strided convolution reads
//! its inputs where they are, with no phase split (the direct kernel's position vectors need
//! contiguous inputs, which stride 2 does not give). The weights of a block of output channels
//! are packed in the order the tile reads them.
//!
//! Measured (docs/PERFORMANCE.md §1g): the bounded encoder's five halvings in 0.84–0.85 ms
//! where the direct kernel, layer by layer with its phase splits, took 1.2–1.3.
//!
//! On CPUs with AVX-512 (detected at run time, [`Isa`]) a vector holds 16 output channels, two
//! blocks (`avx512.rs`), for layers whose output channels are a multiple of 16; the packed
//! weights follow the tiles. The bounded encoder at 224 px: 0.75–0.82 ms with the AVX2 tiles,
//! 0.48–0.55 with these (§1k).

use std::cell::RefCell;

use super::kept_entry;
use first::first_layer;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod first;

/// Channels per block.
pub(crate) const CB: usize = 8;
/// Chains whose buffers a thread keeps.
const KEPT_CHAINS: usize = 4;

/// The instructions a chain's tiles run with; the packed weights depend on it (a tile's
/// output channels, [`Layer::ov`]), so a chain packs and runs with the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Loops without intrinsics (aarch64, CPUs without AVX2).
    Portable,
    /// AVX2 + FMA: 8 output channels per vector.
    Avx2,
    /// AVX-512F: 16 output channels per vector, for layers whose output channels are a
    /// multiple of 16 (the others take the AVX2 tiles).
    Avx512,
}

impl Isa {
    /// The widest this CPU has.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                return Self::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// The tiles `l` runs with: AVX-512 only for output channels in whole vectors of 16.
    fn for_layer(self, l: &Layer) -> Self {
        match self {
            Self::Avx512 if !l.o.is_multiple_of(2 * CB) => Self::Avx2,
            isa => isa,
        }
    }
}

/// One layer of a chain: input `[c, h, w]`, `o` output channels, 3×3 kernel, padding 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Layer {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) stride: usize,
    /// Whether a ReLU follows.
    pub(crate) relu: bool,
}

impl Layer {
    pub(crate) fn out_h(&self) -> usize {
        (self.h - 1) / self.stride + 1
    }

    pub(crate) fn out_w(&self) -> usize {
        (self.w - 1) / self.stride + 1
    }

    /// Blocks of 8 output channels per tile with `isa`'s tiles: with AVX2 the most, up to 4,
    /// that divide the layer's (the tile's pixels follow from it, `avx2::by_shape`; two for 32
    /// channels, two tiles' worth of blocks, measured 2% slower on the bounded encoder); with
    /// AVX-512 the most vectors of 16, up to 3, likewise (`avx512::by_shape`).
    fn ov(&self, isa: Isa) -> usize {
        let blocks = self.o / CB;
        let choices: &[usize] = match isa.for_layer(self) {
            Isa::Avx512 => &[6, 4, 2],
            Isa::Avx2 | Isa::Portable => &[4, 3, 2, 1],
        };
        choices
            .iter()
            .copied()
            .find(|&v| blocks.is_multiple_of(v))
            .unwrap_or(1)
    }

    /// Input channels per group of the packed weights: 8 (blocked input) or 1 (the first
    /// layer's plain input, a channel's nine taps in a row).
    fn group(&self, first: bool) -> usize {
        if first { 1 } else { CB }
    }

    /// Multiply-adds per image.
    pub(crate) fn macs(&self) -> usize {
        self.o * self.c * 9 * self.out_h() * self.out_w()
    }

    /// Length of the packed weights of the chain's first layer or a later one.
    pub(crate) fn packed_len(&self, first: bool) -> usize {
        let g = self.group(first);
        self.o * self.c.div_ceil(g) * g * 9
    }
}

/// Whether `layers` can run as one chain: each a 3×3 convolution of padding 1 and stride 1 or
/// 2 whose output channels are a multiple of 8, each reading the one before.
pub(crate) fn is_chain(layers: &[Layer]) -> bool {
    !layers.is_empty()
        && layers.iter().all(|l| {
            l.c > 0 && l.h > 0 && l.w > 0 && l.o > 0 && l.o % CB == 0 && matches!(l.stride, 1 | 2)
        })
        && layers
            .windows(2)
            .all(|p| p[1].c == p[0].o && p[1].h == p[0].out_h() && p[1].w == p[0].out_w())
}

/// Weights `[o, c, 3, 3]` packed as `[o / (8·OV)][c / g][3][3][g][8·OV]` (`g` from
/// [`Layer::group`], `OV` from [`Layer::ov`] for this CPU's [`Isa`]), input channels padded with
/// zeros to a whole block.
pub(crate) fn pack_weights(l: &Layer, first: bool, oihw: &[f32]) -> Vec<f32> {
    pack_weights_for(l, first, oihw, Isa::detect())
}

/// [`pack_weights`] for the tiles of `isa`.
fn pack_weights_for(l: &Layer, first: bool, oihw: &[f32], isa: Isa) -> Vec<f32> {
    let (g, lanes) = (l.group(first), l.ov(isa) * CB);
    let groups = l.c.div_ceil(g);
    let mut packed = vec![0.0; l.packed_len(first)];
    for (o, filter) in oihw.chunks_exact(l.c * 9).take(l.o).enumerate() {
        for (c, taps) in filter.chunks_exact(9).enumerate() {
            for (t, &v) in taps.iter().enumerate() {
                let block = ((o / lanes) * groups + c / g) * 9 + t;
                packed[(block * g + c % g) * lanes + o % lanes] = v;
            }
        }
    }
    packed
}

/// A thread's buffers for one chain: each later layer's zero-bordered blocked input (none for
/// the first, read in place), the first layer's border strip and the last layer's blocked
/// output; borders are zero and never written.
struct Scratch {
    key: Vec<Layer>,
    inputs: Vec<Vec<f32>>,
    strip: Vec<f32>,
    output: Vec<f32>,
}

impl Scratch {
    fn new(layers: &[Layer]) -> Self {
        let inputs = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    Vec::new()
                } else {
                    vec![0.0; l.c.div_ceil(CB) * CB * (l.h + 2) * (l.w + 2)]
                }
            })
            .collect();
        let (first, last) = (layers[0], layers[layers.len() - 1]);
        Self {
            key: layers.to_vec(),
            inputs,
            strip: vec![0.0; first.c * 3 * (first.h.max(first.w) + 2)],
            output: vec![0.0; last.o * (last.out_h() + 2) * (last.out_w() + 2)],
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Runs the chain on `n` images: `x` is `[n, c, h, w]` of the first layer, `weights[i]` from
/// [`pack_weights`] (on this CPU), `biases[i]` of length `o`, `out` is `[n, o, out_h, out_w]` of
/// the last.
///
/// The caller checks the lengths; a mismatch panics on an assertion or a slice index.
pub(crate) fn run(
    layers: &[Layer],
    n: usize,
    x: &[f32],
    weights: &[&[f32]],
    biases: &[&[f32]],
    out: &mut [f32],
) {
    run_with(layers, n, x, weights, biases, out, Isa::detect());
}

/// [`run`] with `isa`'s tiles (which the CPU must have), weights from [`pack_weights_for`] with
/// the same.
fn run_with(
    layers: &[Layer],
    n: usize,
    x: &[f32],
    weights: &[&[f32]],
    biases: &[&[f32]],
    out: &mut [f32],
    isa: Isa,
) {
    assert!(
        is_chain(layers)
            && weights.len() == layers.len()
            && biases.len() == layers.len()
            && layers
                .iter()
                .zip(weights.iter().zip(biases))
                .enumerate()
                .all(|(i, (l, (w, b)))| w.len() == l.packed_len(i == 0) && b.len() == l.o),
        "blocked convolution chain: weights do not match {layers:?}"
    );
    let (first, last) = (layers[0], layers[layers.len() - 1]);
    let image_in = first.c * first.h * first.w;
    let image_out = last.o * last.out_h() * last.out_w();
    assert!(
        x.len() == n * image_in && out.len() == n * image_out,
        "blocked convolution chain: buffers do not match {layers:?}"
    );
    SCRATCH.with_borrow_mut(|kept| {
        let s = kept_entry(
            kept,
            KEPT_CHAINS,
            |s| s.key == layers,
            || Scratch::new(layers),
        );
        for (xi, yi) in x
            .chunks_exact(image_in)
            .zip(out.chunks_exact_mut(image_out))
        {
            for (i, layer) in layers.iter().enumerate() {
                let (done, rest) = s.inputs.split_at_mut(i + 1);
                let dst = match rest.first_mut() {
                    Some(next) => next,
                    None => &mut s.output,
                };
                let (w, b) = (weights[i], biases[i]);
                if i == 0 {
                    first_layer(layer, xi, &mut s.strip, w, b, dst, isa);
                } else {
                    let geo = Geo::blocked(layer);
                    let all = Region {
                        oy: (0, layer.out_h()),
                        ox: (0, layer.out_w()),
                    };
                    layer_conv(layer, &geo, all, &done[i], w, b, dst, isa);
                }
            }
            unblock(&last, &s.output, yi);
        }
    });
}

/// The last layer's blocked, bordered output as `[o, out_h, out_w]`.
fn unblock(l: &Layer, src: &[f32], y: &mut [f32]) {
    let (oh, ow) = (l.out_h(), l.out_w());
    let wp = ow + 2;
    for (o, plane) in y.chunks_exact_mut(oh * ow).enumerate() {
        let block = &src[(o / CB) * (oh + 2) * wp * CB..];
        for (r, row) in plane.chunks_exact_mut(ow).enumerate() {
            let at = ((r + 1) * wp + 1) * CB + o % CB;
            for (j, v) in row.iter_mut().enumerate() {
                *v = block[at + j * CB];
            }
        }
    }
}

/// What every tile of one layer reads and where it writes.
#[derive(Clone, Copy)]
struct Geo {
    /// Input channel groups and the channels in each.
    groups: usize,
    group: usize,
    /// Strides in the input: between groups, rows, pixels and channels of a group.
    group_stride: usize,
    row_stride: usize,
    pixel: usize,
    channel: usize,
    /// Floats between the output's channel blocks.
    out_block: usize,
    relu: bool,
    /// Whether the input is blocked (else plain, one channel per group).
    blocked: bool,
    /// Where output (0, 0)'s first tap would be in the input, in floats: output (oy, ox)'s
    /// is at `origin + oy·stride·row_stride + ox·pixel`, never negative for the pixels a
    /// [`Region`] covers (`origin` may be, for a source that starts past output 0).
    origin: isize,
}

impl Geo {
    /// A plain source of `rows` rows of `row_stride` floats per channel.
    fn plain(l: &Layer, row_stride: usize, rows: usize, origin: isize) -> Self {
        Self {
            groups: l.c,
            group: l.group(true),
            group_stride: rows * row_stride,
            row_stride,
            pixel: l.stride,
            channel: 0,
            out_block: (l.out_h() + 2) * (l.out_w() + 2) * CB,
            relu: l.relu,
            blocked: false,
            origin,
        }
    }

    /// A later layer's zero-bordered blocked input.
    fn blocked(l: &Layer) -> Self {
        let (hp, wp) = (l.h + 2, l.w + 2);
        Self {
            groups: l.c.div_ceil(CB),
            group: l.group(false),
            group_stride: hp * wp * CB,
            row_stride: wp * CB,
            pixel: l.stride * CB,
            channel: 1,
            out_block: (l.out_h() + 2) * (l.out_w() + 2) * CB,
            relu: l.relu,
            blocked: true,
            origin: 0,
        }
    }

    /// Index of output (oy, ox)'s first tap.
    fn at(&self, stride: usize, oy: usize, ox: usize) -> usize {
        let at = self.origin + (oy * stride * self.row_stride + ox * self.pixel) as isize;
        usize::try_from(at).expect("blocked convolution: a tile starts before its input")
    }
}

/// The output pixels one pass of the tiles computes: rows `oy.0..oy.1`, columns `ox.0..ox.1`.
#[derive(Clone, Copy, Debug)]
struct Region {
    oy: (usize, usize),
    ox: (usize, usize),
}

/// One layer's `region` of output pixels: `src` its input as `geo` lays it out, `dst` the
/// next layer's bordered blocked input.
#[allow(clippy::too_many_arguments)]
fn layer_conv(
    l: &Layer,
    geo: &Geo,
    region: Region,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
    isa: Isa,
) {
    let (oh, ow) = (l.out_h(), l.out_w());
    let Region { oy, ox } = region;
    assert!(
        oy.0 < oy.1 && oy.1 <= oh && ox.0 < ox.1 && ox.1 <= ow,
        "blocked convolution: region {region:?} outside {l:?}"
    );
    let group = geo.group;
    let isa = isa.for_layer(l);
    let ov = l.ov(isa);
    let lanes = ov * CB;
    let block_len = l.c.div_ceil(group) * 9 * group * lanes;
    // Every read and write of the tiles below stays inside these lengths (`at` checks that the
    // first is not before the start).
    let reach = geo.at(l.stride, oy.1 - 1, ox.1 - 1)
        + (geo.groups - 1) * geo.group_stride
        + 2 * geo.row_stride
        + 2 * (geo.pixel / l.stride)
        + (group - 1) * geo.channel;
    let _ = geo.at(l.stride, oy.0, ox.0);
    assert!(
        reach < src.len()
            && packed.len() >= (l.o / lanes) * block_len
            && bias.len() >= l.o
            && dst.len() >= (l.o / CB) * geo.out_block,
        "blocked convolution: buffers do not match {l:?}"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        match isa {
            Isa::Avx512 if has!("avx512f") => {
                // SAFETY: AVX-512F was detected just above; the bounds were checked.
                #[allow(unsafe_code)]
                unsafe {
                    avx512::rows_avx512(l, geo, region, ov, src, packed, bias, dst);
                }
                return;
            }
            Isa::Avx2 if has!("avx2") && has!("fma") => {
                // SAFETY: AVX2 and FMA were detected just above; the bounds were checked.
                #[allow(unsafe_code)]
                unsafe {
                    avx2::rows_avx2(l, geo, region, ov, src, packed, bias, dst);
                }
                return;
            }
            _ => {}
        }
    }
    rows_portable(l, geo, region, ov, src, packed, bias, dst);
}

/// The same loops without intrinsics (aarch64 and CPUs without AVX2), one pixel at a time.
#[allow(clippy::too_many_arguments)]
fn rows_portable(
    l: &Layer,
    geo: &Geo,
    region: Region,
    ov: usize,
    src: &[f32],
    packed: &[f32],
    bias: &[f32],
    dst: &mut [f32],
) {
    let ow = l.out_w();
    let lanes = ov * CB;
    let block_len = geo.groups * 9 * geo.group * lanes;
    let step = geo.pixel / l.stride;
    let mut acc = vec![0.0f32; lanes];
    for oy in region.oy.0..region.oy.1 {
        for ob in 0..l.o / lanes {
            let weights = &packed[ob * block_len..][..block_len];
            for ox in region.ox.0..region.ox.1 {
                acc.copy_from_slice(&bias[ob * lanes..][..lanes]);
                let x0 = geo.at(l.stride, oy, ox);
                let mut taps = weights.chunks_exact(lanes);
                for g in 0..geo.groups {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let at = x0 + g * geo.group_stride + ky * geo.row_stride + kx * step;
                            for c in 0..geo.group {
                                let xv = src[at + c * geo.channel];
                                let Some(wv) = taps.next() else { return };
                                for (a, &wo) in acc.iter_mut().zip(wv) {
                                    *a += wo * xv;
                                }
                            }
                        }
                    }
                }
                for (k, &a) in acc.iter().enumerate() {
                    let (v, lane) = (k / CB, k % CB);
                    let at = (ob * ov + v) * geo.out_block + ((oy + 1) * (ow + 2) + 1 + ox) * CB;
                    dst[at + lane] = if geo.relu { a.max(0.0) } else { a };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
