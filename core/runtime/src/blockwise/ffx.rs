//! FFX format-preserving encryption on 3 decimal digits, and the 256-entry table of one key that
//! the `ffx` scheme applies to the masked half of each block.

use hmac::{Hmac, Mac};
use zeroize::Zeroize;

/// The FFX table of one key: `T[v]` for every 8-bit `v`, and its inverse.
#[derive(Clone)]
pub struct FfxTable {
    enc: Vec<u16>,
    dec: Vec<u16>,
    max: u16,
}

impl std::fmt::Debug for FfxTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FfxTable(<redacted>)")
    }
}

impl Drop for FfxTable {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

const NONE: u16 = u16::MAX;

impl FfxTable {
    /// The table of the FFX key `key`.
    pub(super) fn new(key: &[u8; 32]) -> Self {
        let ffx = Ffx { key };
        let enc: Vec<u16> = (0..256u16).map(|v| ffx.encrypt(v)).collect();
        let mut dec = vec![NONE; 1000];
        for (v, &t) in enc.iter().enumerate() {
            dec[t as usize] = v as u16;
        }
        let max = enc.iter().copied().max().unwrap_or(1).max(1);
        Self { enc, dec, max }
    }
    /// `T[v] ∈ 0..1000`.
    pub fn encrypt(&self, v: u8) -> u16 {
        self.enc[v as usize]
    }
    /// The largest entry of the table (the divisor of the output).
    pub fn max(&self) -> u16 {
        self.max
    }
    /// The output value `T[v] / max T`.
    pub fn value(&self, v: u8) -> f32 {
        f32::from(self.encrypt(v)) / f32::from(self.max)
    }
    /// All 256 output values, indexed by the 8-bit input.
    pub fn values(&self) -> Vec<f32> {
        (0..=255u8).map(|v| self.value(v)).collect()
    }
    /// The 8-bit value whose output is `y`, if any.
    pub fn invert(&self, y: f32) -> Option<u8> {
        let t = (y * f32::from(self.max)).round();
        if !(0.0..1000.0).contains(&t) {
            return None;
        }
        let v = self.dec[t as usize];
        (v != NONE).then_some(v as u8)
    }
}

/// FFX on 3 decimal digits: an alternating Feistel network over a 1-digit half `A` and a 2-digit
/// half `B`; round `i` is `A, B ← B, (A + F(i, B)) mod 10^|A|` with
/// `F(i, B) = HMAC-SHA1(key, "scrim-ffx" ‖ i ‖ |A| ‖ B as u16 big-endian)`, its first 8 bytes as a
/// big-endian integer. Ten rounds (an even count returns the halves to their starting lengths).
struct Ffx<'a> {
    key: &'a [u8; 32],
}

const FFX_ROUNDS: u8 = 10;

impl Ffx<'_> {
    fn round(&self, i: u8, b: u16, alen: u32) -> u64 {
        // HMAC takes keys of any length, so `new_from_slice` cannot fail.
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(self.key).unwrap_or_else(|_| unreachable!());
        mac.update(b"scrim-ffx");
        mac.update(&[i, alen as u8]);
        mac.update(&b.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut w = [0u8; 8];
        w.copy_from_slice(&out[..8]);
        u64::from_be_bytes(w) % 10u64.pow(alen)
    }

    /// Encrypts `x ∈ 0..1000`.
    fn encrypt(&self, x: u16) -> u16 {
        let (mut a, mut alen, mut b, mut blen) =
            (u64::from(x / 100), 1u32, u64::from(x % 100), 2u32);
        for i in 0..FFX_ROUNDS {
            let c = (a + self.round(i, b as u16, alen)) % 10u64.pow(alen);
            (a, alen, b, blen) = (b, blen, c, alen);
        }
        (a * 100 + b) as u16
    }

    /// Decrypts what [`Ffx::encrypt`] produced.
    #[cfg(test)]
    fn decrypt(&self, y: u16) -> u16 {
        let (mut a, mut alen, mut b, mut blen) =
            (u64::from(y / 100), 1u32, u64::from(y % 100), 2u32);
        for i in (0..FFX_ROUNDS).rev() {
            // Before this round: A had |b| digits and B was today's `a`.
            let m = 10u64.pow(blen);
            let prev_a = (b + m - self.round(i, a as u16, blen) % m) % m;
            (a, alen, b, blen) = (prev_a, blen, a, alen);
        }
        (a * 100 + b) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffx_is_a_permutation_of_three_digits() {
        let k = [3u8; 32];
        let ffx = Ffx { key: &k };
        let mut seen = vec![false; 1000];
        for x in 0..1000 {
            let y = ffx.encrypt(x);
            assert!(y < 1000);
            assert!(!seen[y as usize], "collision at {y}");
            seen[y as usize] = true;
            assert_eq!(ffx.decrypt(y), x);
        }
        // Not the identity, and the table spreads over the three-digit range.
        let t = FfxTable::new(&k);
        assert!(
            (0..=255u8)
                .filter(|&v| t.encrypt(v) == u16::from(v))
                .count()
                < 10
        );
        assert!(t.max() > 600, "max {}", t.max());
    }
}
