//! Key-based block-wise image transforms (MaungMaung & Kiya, 2021) and the patch shuffle that
//! matches an encrypted ConvMixer (Iijima & Kiya, 2022).
//!
//! An image is cut into non-overlapping `M×M` blocks; each block is flattened to `L = 3·M·M`
//! values in (row, column, channel) order, channel fastest, so value `k` of a block is pixel
//! `(k / 3) / M, (k / 3) % M` of channel `k % 3`. One key gives one transform of `L` values that is
//! applied to every block of every image:
//!
//! - [`Scheme::Shuffle`]: a secret permutation π, `y[k] = x[π(k)]`.
//! - [`Scheme::NegPos`]: a secret mask with exactly half the positions set; `y = 1 − x` there
//!   (`255 − v` on 8-bit values).
//! - [`Scheme::Ffx`]: on the masked half, the 8-bit value `v` is written as 3 decimal digits and
//!   encrypted with FFX (an alternating Feistel network on 1 + 2 digits, 10 rounds, HMAC-SHA1
//!   round function), giving `T[v] ∈ 0..1000`; the output is `T[v] / max T` (the 256-entry table
//!   `T` is built once per key). The other half passes through. `T` is injective, so the
//!   transform is invertible, but its outputs are not 8-bit levels.
//! - [`Scheme::Patch`]: a permutation like `Shuffle`, derived under its own label; with block
//!   size `p` it matches a ConvMixer whose stem has kernel = stride = `p` and has been encrypted
//!   by scrim-seal's `model_crypt::encrypt_patch_model`.
//!
//! Key material is derived per scheme and block size (`scrim/block/<scheme>/M=<M>/<what>`), so one
//! key file serves all of them without reuse.

mod ffx;
mod scheme;

use zeroize::{Zeroize, Zeroizing};

pub use ffx::FfxTable;
pub use scheme::Scheme;

use crate::keys::SecretKey;
use crate::manifest::KeyRequirement;
use crate::tensor::ImageTensor;
use crate::{Error, Result};

/// One key's block-wise transform. `Debug` prints the scheme and block size only.
#[derive(Clone)]
pub struct BlockTransform {
    scheme: Scheme,
    block: usize,
    perm: Vec<usize>,
    mask: Vec<bool>,
    ffx: Option<FfxTable>,
}

impl std::fmt::Debug for BlockTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockTransform")
            .field("scheme", &self.scheme)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl Drop for BlockTransform {
    fn drop(&mut self) {
        self.perm.zeroize();
        self.mask.zeroize();
    }
}

impl BlockTransform {
    /// Derives the transform of `scheme` on `block × block` blocks from `key`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a block size outside `1..=64`.
    pub fn new(key: &SecretKey, scheme: Scheme, block: usize) -> Result<Self> {
        if !(1..=64).contains(&block) {
            return Err(Error::InvalidArgument(format!(
                "block size must be in 1..=64, got {block}"
            )));
        }
        let l = 3 * block * block;
        let label = |what: &str| format!("scrim/block/{}/M={block}/{what}", scheme.name());
        let (perm, mask, ffx) = match scheme {
            Scheme::Shuffle | Scheme::Patch => {
                (key.permutation(&label("perm"), l), Vec::new(), None)
            }
            Scheme::NegPos => (Vec::new(), key.stream(&label("mask")).half_mask(l), None),
            Scheme::Ffx => {
                let hmac_key: Zeroizing<[u8; 32]> = key.subkey(&label("hmac"));
                (
                    Vec::new(),
                    key.stream(&label("mask")).half_mask(l),
                    Some(FfxTable::new(&hmac_key)),
                )
            }
        };
        Ok(Self {
            scheme,
            block,
            perm,
            mask,
            ffx,
        })
    }

    /// A shuffle with a given permutation of the `3·M·M` block values instead of a derived one
    /// (to evaluate a guessed key, as in a key-estimation attack).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `perm` is a permutation of `0..3·M·M`.
    pub fn with_permutation(block: usize, perm: Vec<usize>) -> Result<Self> {
        let mut seen = vec![false; 3 * block * block];
        if perm.len() != seen.len()
            || perm
                .iter()
                .any(|&p| p >= seen.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::InvalidArgument(format!(
                "a permutation of 0..{} is needed",
                seen.len()
            )));
        }
        Ok(Self {
            scheme: Scheme::Shuffle,
            block,
            perm,
            mask: Vec::new(),
            ffx: None,
        })
    }

    /// A negative/positive transform with a given mask of the `3·M·M` block values.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a mask of the wrong length.
    pub fn with_mask(block: usize, mask: Vec<bool>) -> Result<Self> {
        if mask.len() != 3 * block * block {
            return Err(Error::InvalidArgument(format!(
                "a mask of {} values is needed, got {}",
                3 * block * block,
                mask.len()
            )));
        }
        Ok(Self {
            scheme: Scheme::NegPos,
            block,
            perm: Vec::new(),
            mask,
            ffx: None,
        })
    }

    /// The transform a model's [`KeyRequirement`] asks for.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown scheme or a bad block size.
    pub fn for_requirement(key: &SecretKey, req: &KeyRequirement) -> Result<Self> {
        Self::new(key, req.scheme.parse()?, req.block)
    }

    /// What a manifest records about this transform (never the key).
    pub fn requirement(&self) -> KeyRequirement {
        KeyRequirement {
            scheme: self.scheme.name().into(),
            block: self.block,
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The block side `M`.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Values per block, `3·M·M`.
    pub fn block_len(&self) -> usize {
        3 * self.block * self.block
    }
    /// The secret permutation (shuffle and patch).
    pub fn permutation(&self) -> Option<&[usize]> {
        (!self.perm.is_empty()).then_some(&self.perm[..])
    }
    /// The secret mask (np and ffx).
    pub fn mask(&self) -> Option<&[bool]> {
        (!self.mask.is_empty()).then_some(&self.mask[..])
    }
    /// The FFX table (ffx).
    pub fn ffx_table(&self) -> Option<&FfxTable> {
        self.ffx.as_ref()
    }

    /// Transforms a batch of images in `[0, 1]`. FFX first rounds to 8-bit levels.
    ///
    /// # Errors
    /// [`Error::WrongSize`] unless the images are RGB with sides divisible by the block size.
    pub fn apply(&self, x: &ImageTensor) -> Result<ImageTensor> {
        self.map_f32(x, Direction::Forward)
    }

    /// Undoes [`BlockTransform::apply`].
    ///
    /// # Errors
    /// As [`BlockTransform::apply`]; [`Error::InvalidArgument`] for an FFX value no 8-bit
    /// level encrypts to.
    pub fn invert(&self, y: &ImageTensor) -> Result<ImageTensor> {
        self.map_f32(y, Direction::Inverse)
    }

    /// Transforms 8-bit CHW images (`n` images of `3×h×w` bytes, back to back). Not for FFX,
    /// whose outputs are not 8-bit levels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for FFX; [`Error::WrongSize`] for sizes the block does not
    /// divide.
    pub fn apply_u8(&self, chw: &[u8], h: usize, w: usize) -> Result<Vec<u8>> {
        self.map_u8(chw, h, w, Direction::Forward)
    }

    /// Undoes [`BlockTransform::apply_u8`].
    ///
    /// # Errors
    /// As [`BlockTransform::apply_u8`].
    pub fn invert_u8(&self, chw: &[u8], h: usize, w: usize) -> Result<Vec<u8>> {
        self.map_u8(chw, h, w, Direction::Inverse)
    }

    fn check(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let m = self.block;
        if c != 3 || !h.is_multiple_of(m) || !w.is_multiple_of(m) || h == 0 || w == 0 {
            return Err(Error::WrongSize {
                expected: format!(
                    "RGB images with height and width divisible by the block size {m}"
                ),
                found: format!("{c}x{h}x{w}"),
            });
        }
        Ok(())
    }

    /// Offsets of a block's `L` values from its top-left corner, in a CHW image of width `w`.
    fn offsets(&self, h: usize, w: usize) -> Vec<usize> {
        let m = self.block;
        (0..self.block_len())
            .map(|k| {
                let (px, ch) = (k / 3, k % 3);
                ch * h * w + (px / m) * w + px % m
            })
            .collect()
    }

    /// Calls `f(block values in, block values out)` for every block of `n` CHW images.
    fn map_blocks<T: Copy + Default>(
        &self,
        data: &[T],
        [n, h, w]: [usize; 3],
        mut f: impl FnMut(&[T], &mut [T]) -> Result<()>,
    ) -> Result<Vec<T>> {
        let m = self.block;
        let off = self.offsets(h, w);
        let mut out = vec![T::default(); data.len()];
        let (mut xin, mut xout) = (vec![T::default(); off.len()], vec![T::default(); off.len()]);
        for i in 0..n {
            for by in 0..h / m {
                for bx in 0..w / m {
                    let base = i * 3 * h * w + by * m * w + bx * m;
                    for (v, o) in xin.iter_mut().zip(&off) {
                        *v = data[base + o];
                    }
                    f(&xin, &mut xout)?;
                    for (v, o) in xout.iter().zip(&off) {
                        out[base + o] = *v;
                    }
                }
            }
        }
        Ok(out)
    }

    fn map_f32(&self, x: &ImageTensor, dir: Direction) -> Result<ImageTensor> {
        let [n, c, h, w] = x.shape();
        self.check(c, h, w)?;
        let out = self.map_blocks(x.data(), [n, h, w], |a, b| {
            match (self.scheme, dir) {
                (Scheme::Shuffle | Scheme::Patch, _) => permute(&self.perm, a, b, dir),
                (Scheme::NegPos, _) => {
                    for ((o, &v), &flip) in b.iter_mut().zip(a).zip(&self.mask) {
                        *o = if flip { 1.0 - v } else { v };
                    }
                }
                (Scheme::Ffx, _) => {
                    let t = self.ffx.as_ref().unwrap_or_else(|| unreachable!());
                    for ((o, &v), &enc) in b.iter_mut().zip(a).zip(&self.mask) {
                        *o = match (enc, dir) {
                            (false, _) => v,
                            (true, Direction::Forward) => t.value(crate::tensor::quantize(v)),
                            (true, Direction::Inverse) => {
                                let q = t.invert(v).ok_or_else(|| {
                                    Error::InvalidArgument(format!(
                                        "{v} is not an FFX output of this key"
                                    ))
                                })?;
                                f32::from(q) / 255.0
                            }
                        };
                    }
                }
            }
            Ok(())
        })?;
        ImageTensor::new([n, c, h, w], out)
    }

    fn map_u8(&self, chw: &[u8], h: usize, w: usize, dir: Direction) -> Result<Vec<u8>> {
        if !self.scheme.is_8bit() {
            return Err(Error::InvalidArgument(
                "FFX outputs are not 8-bit levels; use the f32 transform".into(),
            ));
        }
        self.check(3, h, w)?;
        let per = 3 * h * w;
        if !chw.len().is_multiple_of(per) {
            return Err(Error::WrongSize {
                expected: format!("a multiple of 3x{h}x{w} bytes"),
                found: format!("{} bytes", chw.len()),
            });
        }
        self.map_blocks(chw, [chw.len() / per, h, w], |a, b| {
            match self.scheme {
                Scheme::NegPos => {
                    for ((o, &v), &flip) in b.iter_mut().zip(a).zip(&self.mask) {
                        *o = if flip { 255 - v } else { v };
                    }
                }
                _ => permute(&self.perm, a, b, dir),
            }
            Ok(())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Inverse,
}

fn permute<T: Copy>(perm: &[usize], a: &[T], b: &mut [T], dir: Direction) {
    for (k, &p) in perm.iter().enumerate() {
        match dir {
            Direction::Forward => b[k] = a[p],
            Direction::Inverse => b[p] = a[k],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    fn levels(bytes: &[u8], shape: [usize; 4]) -> ImageTensor {
        ImageTensor::new(shape, bytes.iter().map(|&b| f32::from(b) / 255.0).collect())
            .expect("shape")
    }

    #[test]
    fn layout_is_row_col_channel_with_channel_fastest() {
        // A 2x2 block, one image: value k of the block must be pixel (k/3)/2, (k/3)%2, channel k%3.
        let t = BlockTransform::new(&key(1), Scheme::Shuffle, 2).expect("t");
        let off = t.offsets(2, 2);
        assert_eq!(off, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
    }

    #[test]
    fn rejects_sizes_the_block_does_not_divide() {
        let t = BlockTransform::new(&key(1), Scheme::NegPos, 4).expect("t");
        let err = t
            .apply(&ImageTensor::zeros([1, 3, 6, 8]))
            .expect_err("size");
        assert!(
            err.to_string().contains("divisible by the block size 4"),
            "{err}"
        );
        assert!(t.apply_u8(&[0; 3 * 8 * 8 - 1], 8, 8).is_err());
        let f = BlockTransform::new(&key(1), Scheme::Ffx, 4).expect("t");
        assert!(f.apply_u8(&[0; 3 * 8 * 8], 8, 8).is_err());
        assert!(BlockTransform::new(&key(1), Scheme::Ffx, 0).is_err());
        assert!("rot13".parse::<Scheme>().is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let t = BlockTransform::new(&key(9), Scheme::Ffx, 4).expect("t");
        let s = format!("{t:?}");
        assert_eq!(s, "BlockTransform { scheme: Ffx, block: 4, .. }");
    }

    fn image_strategy() -> impl Strategy<Value = (Vec<u8>, usize, usize, usize)> {
        (
            1usize..=2,
            prop::sample::select(vec![1usize, 2, 4]),
            1usize..=3,
            1usize..=3,
        )
            .prop_flat_map(|(n, m, bh, bw)| {
                let (h, w) = (m * bh, m * bw);
                (
                    prop::collection::vec(any::<u8>(), n * 3 * h * w),
                    Just(m),
                    Just(h),
                    Just(w),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn inverse_undoes_every_transform((bytes, m, h, w) in image_strategy(), seed in any::<u8>()) {
            let n = bytes.len() / (3 * h * w);
            let x = levels(&bytes, [n, 3, h, w]);
            for scheme in Scheme::ALL {
                let t = BlockTransform::new(&key(seed), scheme, m).expect("t");
                let y = t.apply(&x).expect("apply");
                let back = t.invert(&y).expect("invert");
                for (a, b) in back.data().iter().zip(x.data()) {
                    prop_assert!((a - b).abs() < 1e-6, "{scheme}: {a} vs {b}");
                }
                if scheme.is_8bit() {
                    let yb = t.apply_u8(&bytes, h, w).expect("u8");
                    prop_assert_eq!(t.invert_u8(&yb, h, w).expect("inv"), bytes.clone());
                    // The 8-bit and f32 paths agree.
                    for (a, &b) in y.data().iter().zip(&yb) {
                        prop_assert!((a - f32::from(b) / 255.0).abs() < 1e-6);
                    }
                }
            }
        }

        #[test]
        fn different_keys_give_different_outputs(a in any::<u8>(), b in any::<u8>()) {
            prop_assume!(a != b);
            // A 4x4 image with distinct values (a ramp), so any change of key shows.
            let bytes: Vec<u8> = (0..48u8).map(|v| v * 5).collect();
            let x = levels(&bytes, [1, 3, 4, 4]);
            for scheme in Scheme::ALL {
                let ya = BlockTransform::new(&key(a), scheme, 4).expect("t").apply(&x).expect("a");
                let yb = BlockTransform::new(&key(b), scheme, 4).expect("t").apply(&x).expect("b");
                prop_assert_ne!(ya.data(), yb.data(), "{}", scheme);
            }
        }

        #[test]
        fn eight_bit_schemes_are_bijections_on_levels(seed in any::<u8>(), pos in 0usize..48) {
            // Every 8-bit level at any position maps to a distinct 8-bit level (np), or moves
            // unchanged to one position (shuffle/patch); FFX maps the 256 levels injectively.
            for scheme in Scheme::ALL {
                let t = BlockTransform::new(&key(seed), scheme, 4).expect("t");
                let mut outs = std::collections::HashSet::new();
                for v in 0..=255u8 {
                    let mut img = vec![0u8; 48];
                    img[pos] = v;
                    let y = t.apply(&levels(&img, [1, 3, 4, 4])).expect("apply");
                    let vals: Vec<u32> = y.data().iter().map(|f| (f * 1e5).round() as u32).collect();
                    if scheme.is_8bit() {
                        prop_assert!(y.data().iter().all(|f| ((f * 255.0).round() - f * 255.0).abs() < 1e-4));
                    }
                    outs.insert(vals);
                }
                prop_assert_eq!(outs.len(), 256, "{}", scheme);
            }
        }
    }
}
