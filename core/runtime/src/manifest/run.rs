//! Model cards: which training run a model comes from, and whether a perturber and a recognizer
//! belong together.
//!
//! A perturber and the recognizer co-trained with it carry the same run name and run id, in
//! their manifests and in their ONNX files' `metadata_props`. The recognizer reads only the
//! uploads of its own perturber: paired with another run's, it answers with confident nonsense.
//! Models exported before run ids existed carry none; they still load, unchecked.

use std::collections::BTreeMap;

use super::Manifest;
use crate::{Error, Result};

/// Hex digits of a run id from [`new_run_id`].
pub const RUN_ID_LEN: usize = 16;

/// The longest run name a manifest may carry.
pub const MAX_RUN_NAME: usize = 128;

/// A fresh run id: 16 lowercase hex digits (64 bits) from the operating system's CSPRNG, so
/// that two runs never share one by accident.
///
/// # Errors
/// [`Error::InvalidArgument`] if the OS has no randomness to give.
pub fn new_run_id() -> Result<String> {
    let mut bytes = [0u8; RUN_ID_LEN / 2];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::InvalidArgument(format!("the OS random generator failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What [`check_pair`] could tell about a perturber and a recognizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Both carry the same run id: they were co-trained together.
    SameRun,
    /// One or both carry no run id (exported before run ids existed): nothing to check.
    Unknown,
}

/// Checks that a perturber and a recognizer come from the same training run.
///
/// # Errors
/// [`Error::MismatchedRuns`] when both carry a run id and the ids differ.
pub fn check_pair(perturber: &Manifest, recognizer: &Manifest) -> Result<Pairing> {
    match (&perturber.run_id, &recognizer.run_id) {
        (Some(p), Some(r)) if p == r => Ok(Pairing::SameRun),
        (Some(_), Some(_)) => Err(Error::MismatchedRuns {
            perturber: describe(perturber),
            recognizer: describe(recognizer),
        }),
        _ => Ok(Pairing::Unknown),
    }
}

/// `run NAME, id ID`, for messages.
pub fn describe(m: &Manifest) -> String {
    format!(
        "run {}, id {}",
        m.run_name.as_deref().unwrap_or("(unnamed)"),
        m.run_id.as_deref().unwrap_or("(none)")
    )
}

/// The ONNX `metadata_props` a model carries beside its manifest: role, name, run name and id,
/// and for a recognizer its task and labels (a JSON array), all under `scrim.`.
pub fn model_card(m: &Manifest) -> BTreeMap<String, String> {
    let mut card = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        card.insert(format!("scrim.{k}"), v);
    };
    put(
        "role",
        serde_json::to_value(m.role)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
    );
    put("name", m.name.clone());
    if let Some(v) = &m.run_name {
        put("run_name", v.clone());
    }
    if let Some(v) = &m.run_id {
        put("run_id", v.clone());
    }
    if let Some(v) = &m.task {
        put("task", v.clone());
    }
    if !m.labels.is_empty() {
        put(
            "labels",
            serde_json::to_string(&m.labels).unwrap_or_default(),
        );
    }
    card
}

/// Checks the run fields of a manifest.
pub(super) fn validate(m: &Manifest) -> Result<()> {
    let bad = |msg: String| Err(Error::InvalidManifest(msg));
    if let Some(id) = &m.run_id
        && (id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return bad(format!(
            "run_id must be 1 to 64 letters or digits (scrim writes {RUN_ID_LEN} hex digits), \
             got {id:?}"
        ));
    }
    if let Some(name) = &m.run_name
        && (name.chars().count() > MAX_RUN_NAME || name.chars().any(char::is_control))
    {
        return bad(format!(
            "run_name must be at most {MAX_RUN_NAME} characters without control characters"
        ));
    }
    Ok(())
}
