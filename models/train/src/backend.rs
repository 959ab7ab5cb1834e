//! Choosing the burn backend that trains.
//!
//! `flex` (burn's pure-Rust CPU backend, SIMD + rayon) is the default: measured on the real
//! co-training step it is the fastest CPU backend burn 0.22 offers here (see
//! `docs/PERFORMANCE.md`). `ndarray` and `wgpu` are cargo features.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A burn backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn-flex: pure Rust, SIMD, multi-threaded. The default.
    #[default]
    Flex,
    /// burn-ndarray (deprecated upstream; feature `ndarray`).
    Ndarray,
    /// burn-wgpu: GPUs through Vulkan/Metal/DX12 (feature `wgpu`).
    Wgpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::Ndarray),
            "wgpu" => Ok(Backend::Wgpu),
            other => Err(Error::UnknownName {
                what: "backend",
                given: other.into(),
                expected: "flex, ndarray or wgpu",
            }),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
        })
    }
}

impl Backend {
    /// The device for inference (no autodiff).
    ///
    /// # Errors
    /// [`Error::BackendMissing`] when the backend was not compiled in.
    pub fn device(self) -> Result<Device> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[allow(unreachable_patterns)]
            other => Err(Error::BackendMissing(other)),
        }
    }

    /// The device for training (autodiff on).
    ///
    /// # Errors
    /// As [`Backend::device`].
    pub fn train_device(self) -> Result<Device> {
        Ok(self.device()?.autodiff())
    }
}
