//! Secret keys for model access control, and what is derived from them.
//!
//! A [`SecretKey`] is 256 random bits from the operating system's CSPRNG, stored in a small
//! versioned key file. Nothing uses the secret directly: every use derives its own stream with
//! HKDF-SHA256 and a purpose label, so one key file can drive several transforms (and block sizes)
//! without reusing key material between them.
//!
//! # Key file format (version 1, 45 bytes)
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | magic `SCRIMKEY` |
//! | 8 | format version, `1` |
//! | 9..41 | the 32-byte secret |
//! | 41..45 | the first 4 bytes of SHA-256 over bytes 0..41 (catches truncation and corruption) |
//!
//! # Derivation
//!
//! `seed = HKDF-SHA256(salt = "scrim-key-v1", ikm = secret, info = purpose)`, 32 bytes; the seed
//! keys a ChaCha20 stream (`rand_chacha::ChaCha20Rng::from_seed`). Integers below `n` are drawn by
//! rejection sampling from `next_u64` (no modulo bias); permutations are Fisher–Yates from the
//! last index down. All of this is spelled out here, not delegated to `rand`'s helpers, so the
//! same key file gives the same transforms across crate versions.
//!
//! ```
//! use scrim_core::keys::SecretKey;
//! let key = SecretKey::generate()?;
//! let bytes = key.to_file_bytes();
//! let again = SecretKey::from_file_bytes(&bytes)?;
//! assert_eq!(key.permutation("demo", 10), again.permutation("demo", 10));
//! assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
//! # Ok::<(), scrim_core::Error>(())
//! ```

use std::path::Path;

use hkdf::Hkdf;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// Magic bytes at the start of every key file.
pub const KEY_MAGIC: &[u8; 8] = b"SCRIMKEY";
/// The key file version this build writes and reads.
pub const KEY_VERSION: u8 = 1;
/// Length of a version-1 key file.
pub const KEY_FILE_LEN: usize = 8 + 1 + 32 + 4;
const SALT: &[u8] = b"scrim-key-v1";

/// A 256-bit secret. `Debug` prints nothing secret; the bytes are zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.bytes
            .iter()
            .zip(&other.bytes)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}
impl Eq for SecretKey {}

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the OS has no randomness to give.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::InvalidKey(format!("the OS random generator failed: {e}")))?;
        Ok(Self { bytes })
    }

    /// A key from raw bytes (for tests and derived keys; real keys come from [`Self::generate`]).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// The key file encoding (see the module docs).
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        out.extend_from_slice(KEY_MAGIC);
        out.push(KEY_VERSION);
        out.extend_from_slice(&self.bytes);
        let check = Sha256::digest(&out[..]);
        out.extend_from_slice(&check[..4]);
        out
    }

    /// Parses a key file.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] saying what is wrong: not a key file, another version, truncated,
    /// trailing bytes, or a checksum mismatch.
    pub fn from_file_bytes(data: &[u8]) -> Result<Self> {
        let bad = |m: String| Err(Error::InvalidKey(m));
        if data.len() < KEY_MAGIC.len() || &data[..KEY_MAGIC.len()] != KEY_MAGIC {
            return bad("not a Scrim key file (it must start with \"SCRIMKEY\"; make one with `scrim keygen --out FILE`)".into());
        }
        match data.get(8) {
            None => return bad("truncated key file: no version byte".into()),
            Some(&KEY_VERSION) => {}
            Some(v) => {
                return bad(format!(
                    "key file version {v} is not supported; this build reads version {KEY_VERSION}"
                ));
            }
        }
        if data.len() < KEY_FILE_LEN {
            return bad(format!(
                "truncated key file: {} bytes, a version-{KEY_VERSION} key file has {KEY_FILE_LEN}",
                data.len()
            ));
        }
        if data.len() > KEY_FILE_LEN {
            return bad(format!(
                "key file too long: {} bytes, a version-{KEY_VERSION} key file has {KEY_FILE_LEN}",
                data.len()
            ));
        }
        let check = Sha256::digest(&data[..41]);
        if check[..4] != data[41..45] {
            return bad("key file checksum mismatch: the file is corrupt".into());
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&data[9..41]);
        Ok(Self { bytes })
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable; [`Error::InvalidKey`] (with the path) if malformed.
    pub fn load(path: &Path) -> Result<Self> {
        // A key file has a fixed length; read one byte more so "too long" is still reported.
        let data = Zeroizing::new(crate::error::read_file_limited(
            path,
            KEY_FILE_LEN as u64 + 1,
        )?);
        Self::from_file_bytes(&data).map_err(|e| match e {
            Error::InvalidKey(m) => Error::InvalidKey(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Writes the key file, refusing to overwrite an existing file. On Unix the file is created
    /// readable by its owner only.
    ///
    /// # Errors
    /// [`Error::Io`], also when the file already exists.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| Error::io(path, e))?;
        f.write_all(&self.to_file_bytes())
            .map_err(|e| Error::io(path, e))
    }

    /// The keyed ChaCha20 stream for `purpose` (HKDF-SHA256, see the module docs).
    pub fn stream(&self, purpose: &str) -> KeyStream {
        KeyStream(ChaCha20Rng::from_seed(*self.subkey(purpose)))
    }

    /// 32 bytes derived for `purpose` (HKDF-SHA256), e.g. an HMAC key.
    pub fn subkey(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), &self.bytes);
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255·32, so expand cannot fail.
        hk.expand(purpose.as_bytes(), &mut okm[..])
            .unwrap_or_else(|_| unreachable!());
        okm
    }

    /// A permutation of `0..n` derived for `purpose`.
    pub fn permutation(&self, purpose: &str, n: usize) -> Vec<usize> {
        self.stream(purpose).permutation(n)
    }
}

/// A ChaCha20 stream keyed from a [`SecretKey`] for one purpose.
pub struct KeyStream(ChaCha20Rng);

impl std::fmt::Debug for KeyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStream(<redacted>)")
    }
}

impl KeyStream {
    /// A uniform integer in `0..n` (`n ≥ 1`), by rejection sampling.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n.max(1) as u64;
        // The largest multiple of n that fits: values at or above it would bias the modulo.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.0.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// A uniform permutation of `0..n` (Fisher–Yates, from the last index down).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// A mask of `n` positions with exactly `n / 2` set, uniformly among such masks.
    pub fn half_mask(&mut self, n: usize) -> Vec<bool> {
        let p = self.permutation(n);
        let mut m = vec![false; n];
        for &i in &p[..n / 2] {
            m[i] = true;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_errors() {
        let k = SecretKey::generate().expect("os rng");
        let bytes = k.to_file_bytes();
        assert_eq!(bytes.len(), KEY_FILE_LEN);
        assert_eq!(SecretKey::from_file_bytes(&bytes).ok(), Some(k.clone()));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "not a Scrim key file"),
            (b"hello world".to_vec(), "not a Scrim key file"),
            (bytes[..8].to_vec(), "no version byte"),
            (bytes[..20].to_vec(), "truncated"),
            (bytes[..44].to_vec(), "truncated"),
            ([&bytes[..], &[0]].concat(), "too long"),
            (
                {
                    let mut b = bytes.to_vec();
                    b[8] = 2;
                    b
                },
                "version 2",
            ),
            (
                {
                    let mut b = bytes.to_vec();
                    b[20] ^= 1;
                    b
                },
                "checksum",
            ),
        ];
        for (data, needle) in cases {
            let err = SecretKey::from_file_bytes(&data)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn load_reads_no_more_than_a_key_file() {
        // An endless file (here /dev/zero) used to be read until memory ran out.
        #[cfg(unix)]
        {
            let err = SecretKey::load(Path::new("/dev/zero")).expect_err("endless");
            assert!(err.to_string().contains("too large"), "{err}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![7u8; 1 << 20]).expect("write");
        let err = SecretKey::load(&big).expect_err("big");
        assert!(err.to_string().contains("big.key"), "{err}");
        let one_more = dir.path().join("long.key");
        let k = SecretKey::generate().expect("os rng");
        std::fs::write(&one_more, [&k.to_file_bytes()[..], &[0]].concat()).expect("write");
        let err = SecretKey::load(&one_more).expect_err("long");
        assert!(err.to_string().contains("too long"), "{err}");
    }

    #[test]
    fn debug_hides_the_secret() {
        let k = SecretKey::from_bytes([0xab; 32]);
        let s = format!("{k:?} {:?}", k.stream("x"));
        assert!(
            !s.to_lowercase().contains("ab, ") && !s.contains("171"),
            "{s}"
        );
        assert!(s.contains("redacted"));
    }

    #[test]
    fn derivation_is_deterministic_and_separated_by_purpose() {
        let k = SecretKey::from_bytes([7; 32]);
        assert_eq!(k.permutation("a", 48), k.permutation("a", 48));
        assert_ne!(k.permutation("a", 48), k.permutation("b", 48));
        assert_ne!(
            k.permutation("a", 48),
            SecretKey::from_bytes([8; 32]).permutation("a", 48)
        );
        let mut p = k.permutation("a", 48);
        p.sort_unstable();
        assert_eq!(p, (0..48).collect::<Vec<_>>());
        let m = k.stream("m").half_mask(48);
        assert_eq!(m.iter().filter(|&&b| b).count(), 24);
    }

    #[test]
    fn save_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("k.key");
        let k = SecretKey::generate().expect("rng");
        k.save_new(&path).expect("save");
        assert_eq!(SecretKey::load(&path).ok(), Some(k.clone()));
        assert!(k.save_new(&path).is_err());
        std::fs::write(&path, b"SCRIMKEY\x01abc").expect("write");
        let err = SecretKey::load(&path).expect_err("truncated").to_string();
        assert!(err.contains("k.key") && err.contains("truncated"), "{err}");
    }
}
