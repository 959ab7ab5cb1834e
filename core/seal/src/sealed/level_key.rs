//! Level keys: the key of service level ℓ opens the bundle segments of levels `1..=ℓ`.
//!
//! # Keys: a one-way hash chain
//!
//! A fresh 256-bit master secret `s` and a 128-bit bundle id `id` are drawn from a CSPRNG. With
//! `H(ikm, info)` = HKDF-SHA256(salt = `id`, ikm, info) → 32 bytes:
//!
//! ```text
//! K_M     = H(s,   "scrim-levels/v1/top")
//! K_{ℓ-1} = H(K_ℓ, "scrim-levels/v1/down" ‖ ℓ-1)      (one step down the chain)
//! E_ℓ     = H(K_ℓ, "scrim-levels/v1/seal" ‖ ℓ)        (AES-256-GCM key of segment ℓ)
//! ```
//!
//! The level-ℓ key file holds only `K_ℓ`. From it anyone can walk *down* the chain to
//! `K_{ℓ-1}, …, K_1` and so open segments `1..=ℓ`, but going *up* means inverting HKDF. The master
//! secret is used once and zeroized; the level-`M` key opens everything.
//!
//! # Level key file (`level-ℓ.key`, 59 bytes, version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `SCRIMLK\0` |
//! | 8 | format version (1) |
//! | 9 | level ℓ (1..=M) |
//! | 10 | number of levels M |
//! | 11..27 | bundle id |
//! | 27..59 | chain key `K_ℓ` |

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Current version of the key and bundle formats.
pub const FORMAT_VERSION: u8 = 1;
const KEY_MAGIC: &[u8; 8] = b"SCRIMLK\0";
const KEY_LEN: usize = 8 + 1 + 1 + 1 + 16 + 32;
/// Most levels a bundle may have.
pub const MAX_LEVELS: usize = 32;

/// The key of one service level: opens the restoration data of levels `1..=level`.
///
/// `Debug` shows the level and the bundle it belongs to, never the key; the key is zeroized on
/// drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LevelKey {
    pub(super) level: u8,
    pub(super) levels: u8,
    pub(super) bundle_id: [u8; 16],
    chain: [u8; 32],
}

impl std::fmt::Debug for LevelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelKey")
            .field("level", &self.level)
            .field("levels", &self.levels)
            .field("bundle_id", &hex(&self.bundle_id))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl LevelKey {
    /// The service level ℓ this key opens (with every level below it).
    pub fn level(&self) -> usize {
        usize::from(self.level)
    }

    /// The number of levels M of its bundle.
    pub fn levels(&self) -> usize {
        usize::from(self.levels)
    }

    /// Serialises the key in the version-1 key file format (a secret: store it like one).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_LEN);
        out.extend_from_slice(KEY_MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.level);
        out.push(self.levels);
        out.extend_from_slice(&self.bundle_id);
        out.extend_from_slice(&self.chain);
        out
    }

    /// Parses a key file.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a file that is not a level key of a supported version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 9 || &bytes[..8] != KEY_MAGIC {
            return Err(Error::InvalidKey(
                "not a Scrim level key (written by `scrim protect select`)".into(),
            ));
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(Error::InvalidKey(format!(
                "level key format version {} is not supported (this build reads version {FORMAT_VERSION})",
                bytes[8]
            )));
        }
        if bytes.len() != KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "a level key has {KEY_LEN} bytes, this one {}",
                bytes.len()
            )));
        }
        let (level, levels) = (bytes[9], bytes[10]);
        if level == 0 || level > levels || usize::from(levels) > MAX_LEVELS {
            return Err(Error::InvalidKey(format!(
                "level {level} of {levels} is out of range"
            )));
        }
        let mut key = Self {
            level,
            levels,
            bundle_id: [0; 16],
            chain: [0; 32],
        };
        key.bundle_id.copy_from_slice(&bytes[11..27]);
        key.chain.copy_from_slice(&bytes[27..59]);
        Ok(key)
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::InvalidKey`] (naming the file).
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let mut bytes = scrim_core::read_file_limited(path, KEY_LEN as u64 + 1)?;
        let key = Self::from_bytes(&bytes)
            .map_err(|e| Error::InvalidKey(format!("{}: {e}", path.display())));
        bytes.zeroize();
        key
    }

    /// Writes the key file, readable by its owner only (on Unix).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut bytes = zeroize::Zeroizing::new(self.to_bytes());
        opts.open(path)
            .and_then(|mut f| f.write_all(bytes.as_mut()))
            .map_err(|e| crate::error::io(path, e))
    }

    /// The key one level down the chain (`None` at level 1).
    pub(super) fn down(&self) -> Option<LevelKey> {
        (self.level > 1).then(|| LevelKey {
            level: self.level - 1,
            levels: self.levels,
            bundle_id: self.bundle_id,
            chain: derive(
                &self.bundle_id,
                &self.chain,
                b"scrim-levels/v1/down",
                self.level - 1,
            ),
        })
    }

    /// The AES-256-GCM key `E_ℓ` of this level's segment.
    pub(super) fn seal_key(&self) -> [u8; 32] {
        derive(
            &self.bundle_id,
            &self.chain,
            b"scrim-levels/v1/seal",
            self.level,
        )
    }
}

fn derive(salt: &[u8; 16], ikm: &[u8; 32], label: &[u8], level: u8) -> [u8; 32] {
    let mut info = label.to_vec();
    info.push(level);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 · 32, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(&info, &mut out);
    out
}

/// Derives the keys of levels `1..=levels` from a fresh master secret drawn from `rng`.
/// Returns the bundle id and the keys, level 1 first.
///
/// # Errors
/// [`Error::InvalidArgument`] unless `1 <= levels <= MAX_LEVELS`.
pub(crate) fn generate_keys<R: rand::CryptoRng>(
    levels: usize,
    rng: &mut R,
) -> Result<([u8; 16], Vec<LevelKey>)> {
    if levels == 0 || levels > MAX_LEVELS {
        return Err(Error::InvalidArgument(format!(
            "the number of levels must be in 1..={MAX_LEVELS}, got {levels}"
        )));
    }
    let mut bundle_id = [0u8; 16];
    rng.fill_bytes(&mut bundle_id);
    let mut master = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(master.as_mut());
    let levels = levels as u8;
    let top = LevelKey {
        level: levels,
        levels,
        bundle_id,
        chain: derive(&bundle_id, &master, b"scrim-levels/v1/top", levels),
    };
    let mut keys = vec![top];
    while let Some(k) = keys.last().and_then(LevelKey::down) {
        keys.push(k);
    }
    keys.reverse();
    Ok((bundle_id, keys))
}

/// Lower-case hex, for ids in messages and `Debug`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn key_files_round_trip_and_debug_hides_the_key() {
        let (_, keys) = generate_keys(3, &mut ChaCha20Rng::seed_from_u64(1)).expect("keys");
        let bytes = keys[1].to_bytes();
        assert_eq!(bytes.len(), KEY_LEN);
        let back = LevelKey::from_bytes(&bytes).expect("parse");
        assert_eq!(back.to_bytes(), bytes);
        let dbg = format!("{back:?}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(!dbg.contains(&hex(&back.chain)), "{dbg}");
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(
            LevelKey::from_bytes(&v2)
                .expect_err("version")
                .to_string()
                .contains("version 2")
        );
    }

    #[test]
    fn a_key_walks_down_the_chain_only() {
        let (_, keys) = generate_keys(3, &mut ChaCha20Rng::seed_from_u64(1)).expect("keys");
        let down = keys[2].down().expect("level 2");
        assert_eq!(down.to_bytes(), keys[1].to_bytes());
        assert!(keys[0].down().is_none());
    }
}
