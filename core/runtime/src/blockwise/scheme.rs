//! The names of the block-wise transforms, as manifests and the command line write them.

use crate::{Error, Result};

/// Which block-wise transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Pixel shuffling inside each block.
    Shuffle,
    /// Negative/positive transform on a secret half of each block.
    NegPos,
    /// Format-preserving (FFX) encryption of a secret half of each block.
    Ffx,
    /// Pixel shuffling with the patch key of an encrypted patch-embedding model.
    Patch,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 4] = [Scheme::Shuffle, Scheme::NegPos, Scheme::Ffx, Scheme::Patch];

    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Shuffle => "shuffle",
            Scheme::NegPos => "np",
            Scheme::Ffx => "ffx",
            Scheme::Patch => "patch",
        }
    }

    /// True when the transform maps 8-bit images to 8-bit images (all but FFX).
    pub fn is_8bit(self) -> bool {
        self != Scheme::Ffx
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Scheme::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown block scheme {s:?}; use shuffle, np, ffx or patch"
                ))
            })
    }
}
