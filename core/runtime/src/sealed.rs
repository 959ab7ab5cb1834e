//! Level keys and the sealed restoration bundle of a selectively encrypted model.
//!
//! A model protected for `M` service levels ships as three things: the encrypted ONNX file, one
//! sealed **bundle** holding the restoration data of every level, and one **level key** file per
//! level `1..=M`. This module is the cryptography; [`crate::selective`] decides what goes in.
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
//!
//! # Bundle file (`bundle.scrimlv`, version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `SCRIMLB\0` |
//! | 8 | format version (1) |
//! | 9 | number of levels M |
//! | 10..26 | bundle id |
//! | 26..58 | SHA-256 of the encrypted ONNX file it belongs to |
//! | then M times | level (1 byte), nonce (12), ciphertext length (u32 LE), ciphertext + 16-byte tag |
//!
//! Segment ℓ is AES-256-GCM under `E_ℓ` with a fresh random nonce (each key seals exactly one
//! message) and the 58-byte header plus the level byte as associated data, so changing any byte
//! of the header, moving a segment, or editing a ciphertext fails authentication.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Current version of the key and bundle formats.
pub const FORMAT_VERSION: u8 = 1;
const KEY_MAGIC: &[u8; 8] = b"SCRIMLK\0";
const BUNDLE_MAGIC: &[u8; 8] = b"SCRIMLB\0";
const KEY_LEN: usize = 8 + 1 + 1 + 1 + 16 + 32;
const HEADER_LEN: usize = 8 + 1 + 1 + 16 + 32;
const NONCE_LEN: usize = 12;
/// Most levels a bundle may have.
pub const MAX_LEVELS: usize = 32;

/// The key of one service level: opens the restoration data of levels `1..=level`.
///
/// `Debug` shows the level and the bundle it belongs to, never the key; the key is zeroized on
/// drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LevelKey {
    level: u8,
    levels: u8,
    bundle_id: [u8; 16],
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
        let mut bytes = crate::error::read_file(path)?;
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
            .map_err(|e| Error::io(path, e))
    }

    /// The key one level down the chain (`None` at level 1).
    fn down(&self) -> Option<LevelKey> {
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

    fn seal_key(&self) -> [u8; 32] {
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

/// Seals one plaintext per level (`segments[0]` is level 1) under `keys` into a bundle bound to
/// the encrypted model `model_sha256`.
pub(crate) fn seal<R: rand::CryptoRng>(
    bundle_id: [u8; 16],
    model_sha256: [u8; 32],
    keys: &[LevelKey],
    segments: &[Vec<u8>],
    rng: &mut R,
) -> Result<Vec<u8>> {
    debug_assert_eq!(keys.len(), segments.len());
    let mut out = Vec::new();
    out.extend_from_slice(BUNDLE_MAGIC);
    out.push(FORMAT_VERSION);
    out.push(keys.len() as u8);
    out.extend_from_slice(&bundle_id);
    out.extend_from_slice(&model_sha256);
    let header = out.clone();
    for (key, plain) in keys.iter().zip(segments) {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sk = zeroize::Zeroizing::new(key.seal_key());
        let cipher = Aes256Gcm::new_from_slice(sk.as_ref())
            .map_err(|_| Error::InvalidKey("AES-256 needs a 32-byte key".into()))?;
        let aad = [header.as_slice(), &[key.level]].concat();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::InvalidArgument("a segment is too large to seal".into()))?;
        out.push(key.level);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(ct.len() as u32).to_le_bytes());
        out.extend_from_slice(&ct);
    }
    Ok(out)
}

/// What a bundle says about itself before any key is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// Number of levels M.
    pub levels: usize,
    /// The bundle id (hex), shared with its key files.
    pub bundle_id: String,
    /// SHA-256 (hex) of the encrypted ONNX file the bundle belongs to.
    pub model_sha256: String,
}

struct Segment<'a> {
    level: u8,
    nonce: &'a [u8],
    ct: &'a [u8],
}

struct Parsed<'a> {
    header: &'a [u8],
    levels: u8,
    bundle_id: [u8; 16],
    model_sha256: [u8; 32],
    segments: Vec<Segment<'a>>,
}

fn parse(bundle: &[u8]) -> Result<Parsed<'_>> {
    let bad = |m: &str| Error::InvalidKey(format!("not a valid level bundle: {m}"));
    if bundle.len() < 9 || &bundle[..8] != BUNDLE_MAGIC {
        return Err(bad(
            "wrong magic (expected a bundle written by `scrim protect select`)",
        ));
    }
    if bundle[8] != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {} is not supported (this build reads version {FORMAT_VERSION})",
            bundle[8]
        )));
    }
    if bundle.len() < HEADER_LEN {
        return Err(bad("truncated header"));
    }
    let levels = bundle[9];
    let mut bundle_id = [0u8; 16];
    bundle_id.copy_from_slice(&bundle[10..26]);
    let mut model_sha256 = [0u8; 32];
    model_sha256.copy_from_slice(&bundle[26..58]);
    let mut segments = Vec::new();
    let mut rest = &bundle[HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 1 + NONCE_LEN + 4 {
            return Err(bad("truncated segment"));
        }
        let level = rest[0];
        let nonce = &rest[1..1 + NONCE_LEN];
        let mut len = [0u8; 4];
        len.copy_from_slice(&rest[1 + NONCE_LEN..1 + NONCE_LEN + 4]);
        let len = u32::from_le_bytes(len) as usize;
        let start = 1 + NONCE_LEN + 4;
        if rest.len() < start + len {
            return Err(bad("truncated segment"));
        }
        segments.push(Segment {
            level,
            nonce,
            ct: &rest[start..start + len],
        });
        rest = &rest[start + len..];
    }
    if segments.len() != usize::from(levels)
        || segments
            .iter()
            .enumerate()
            .any(|(i, s)| usize::from(s.level) != i + 1)
    {
        return Err(bad("the segments do not match the number of levels"));
    }
    Ok(Parsed {
        header: &bundle[..HEADER_LEN],
        levels,
        bundle_id,
        model_sha256,
        segments,
    })
}

/// Reads a bundle's public header.
///
/// # Errors
/// [`Error::InvalidKey`] for a malformed bundle.
pub fn bundle_info(bundle: &[u8]) -> Result<BundleInfo> {
    let p = parse(bundle)?;
    Ok(BundleInfo {
        levels: usize::from(p.levels),
        bundle_id: hex(&p.bundle_id),
        model_sha256: hex(&p.model_sha256),
    })
}

/// Opens the segments of levels `1..=key.level()` of `bundle`, checking that it belongs to the
/// model whose bytes hash to `model_sha256`. Returns the plaintexts, level 1 first.
///
/// # Errors
/// [`Error::InvalidKey`] for a malformed bundle, or a key or model that belongs to another
/// bundle; [`Error::Authentication`] when a segment does not authenticate (wrong key, or the
/// bundle was tampered with).
pub(crate) fn open(bundle: &[u8], model_sha256: [u8; 32], key: &LevelKey) -> Result<Vec<Vec<u8>>> {
    let p = parse(bundle)?;
    if p.bundle_id != key.bundle_id || p.levels != key.levels {
        return Err(Error::InvalidKey(format!(
            "this key belongs to bundle {} ({} levels), not to this bundle {} ({} levels)",
            hex(&key.bundle_id),
            key.levels,
            hex(&p.bundle_id),
            p.levels
        )));
    }
    if p.model_sha256 != model_sha256 {
        return Err(Error::InvalidKey(
            "the bundle belongs to another encrypted model (its SHA-256 differs)".into(),
        ));
    }
    let mut out = Vec::with_capacity(key.level());
    let mut k = Some(key.clone());
    while let Some(key) = k {
        let seg = &p.segments[key.level() - 1];
        let sk = zeroize::Zeroizing::new(key.seal_key());
        let cipher = Aes256Gcm::new_from_slice(sk.as_ref())
            .map_err(|_| Error::InvalidKey("AES-256 needs a 32-byte key".into()))?;
        let aad = [p.header, &[seg.level]].concat();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(seg.nonce),
                Payload {
                    msg: seg.ct,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::Authentication(format!(
                    "level {} of the bundle does not authenticate: wrong key, or the bundle was \
                     modified",
                    seg.level
                ))
            })?;
        out.push(plain);
        k = key.down();
    }
    out.reverse();
    Ok(out)
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn setup(levels: usize) -> (Vec<LevelKey>, Vec<u8>, [u8; 32]) {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (id, keys) = generate_keys(levels, &mut rng).expect("keys");
        let model = sha256(b"model");
        let segs: Vec<Vec<u8>> = (1..=levels).map(|l| vec![l as u8; 10 * l]).collect();
        let bundle = seal(id, model, &keys, &segs, &mut rng).expect("seal");
        (keys, bundle, model)
    }

    #[test]
    fn a_level_key_opens_exactly_its_prefix() {
        let (keys, bundle, model) = setup(4);
        for key in &keys {
            let segs = open(&bundle, model, key).expect("open");
            assert_eq!(segs.len(), key.level());
            for (i, s) in segs.iter().enumerate() {
                assert_eq!(s, &vec![i as u8 + 1; 10 * (i + 1)]);
            }
        }
        let info = bundle_info(&bundle).expect("info");
        assert_eq!(info.levels, 4);
    }

    #[test]
    fn key_files_round_trip_and_debug_hides_the_key() {
        let (keys, _, _) = setup(3);
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
    fn tampering_and_wrong_keys_fail_authentication() {
        let (keys, bundle, model) = setup(3);
        // Any flipped byte after the magic and version fails, as a malformed bundle, a key that
        // does not belong, or (for the sealed parts) an authentication error.
        for i in 9..bundle.len() {
            let mut t = bundle.clone();
            t[i] ^= 0x01;
            assert!(open(&t, model, &keys[2]).is_err(), "byte {i}");
        }
        let mut t = bundle.clone();
        let last = t.len() - 1;
        t[last] ^= 0x80;
        let err = open(&t, model, &keys[2]).expect_err("tampered");
        assert!(matches!(err, Error::Authentication(_)), "{err}");
        // Same bundle id, other chain key: authentication error.
        let mut wrong = keys[2].clone();
        wrong.chain[0] ^= 1;
        let err = open(&bundle, model, &wrong).expect_err("wrong key");
        assert!(matches!(err, Error::Authentication(_)), "{err}");
        // A key of another bundle: a clear key error.
        let other = generate_keys(3, &mut ChaCha20Rng::seed_from_u64(2))
            .expect("keys")
            .1;
        let err = open(&bundle, model, &other[2]).expect_err("other bundle");
        assert!(err.to_string().contains("belongs to bundle"), "{err}");
        // Another model.
        let err = open(&bundle, sha256(b"x"), &keys[2]).expect_err("other model");
        assert!(err.to_string().contains("another encrypted model"), "{err}");
    }
}
