//! `scrim protect encrypt-model`: encrypting a patch-embedding model with a secret key.

use std::path::Path;

use scrim_core::manifest::Manifest;
use scrim_core::{BatchMode, Model, SecretKey};
use scrim_seal::model_crypt::{EncryptedStem, encrypt_patch_model};

use crate::Result;
use crate::files::{create_parent, read, write};

/// Encrypts the patch-embedding stem of `model` (its `.json` manifest beside it) with `key`,
/// writing `out` and its manifest (which records the `patch` key requirement). The encrypted
/// model is loaded once in tract to check that it is valid.
///
/// # Errors
/// [`Error::Core`](crate::Error::Core) when the model has no patch-embedding stem; key and I/O
/// errors.
pub fn encrypt_model_file(model: &Path, key: &Path, out: &Path) -> Result<EncryptedStem> {
    let manifest = Manifest::load_beside(model)?;
    let onnx = read(model)?;
    let key = SecretKey::load(key)?;
    let (bytes, m, stem) = encrypt_patch_model(&onnx, &manifest, &key)?;
    Model::load(&bytes, m.clone(), BatchMode::Single)?;
    create_parent(out)?;
    write(out, &bytes)?;
    m.save(&Manifest::path_for(out))?;
    Ok(stem)
}
