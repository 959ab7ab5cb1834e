//! Level keys and the sealed restoration bundle of a selectively encrypted model.
//!
//! A model protected for `M` service levels ships as three things: the encrypted ONNX file, one
//! sealed **bundle** holding the restoration data of every level, and one **level key** file per
//! level `1..=M`. This module is the cryptography; [`crate::selective`] decides what goes in.
//! The keys (a hash chain, with the segment keys `E_ℓ`) and their file format: [`LevelKey`], in
//! `level_key.rs`.
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

mod level_key;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

pub(crate) use level_key::generate_keys;
use level_key::hex;
pub use level_key::{FORMAT_VERSION, LevelKey, MAX_LEVELS};

use crate::{Error, Result};

const BUNDLE_MAGIC: &[u8; 8] = b"SCRIMLB\0";
const HEADER_LEN: usize = 8 + 1 + 1 + 16 + 32;
const NONCE_LEN: usize = 12;

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
        let mut bytes = keys[2].to_bytes();
        bytes[27] ^= 1;
        let wrong = LevelKey::from_bytes(&bytes).expect("key");
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
