//! Datasets: loaders for UTKFace folders, ImageFolder trees and CSV files (each from a folder or
//! a `.tar.gz`), the built-in synthetic set, a deterministic stratified split, and a decoded-
//! tensor cache.

mod cache;
mod dataset;
mod load;
mod source;
mod spec;
mod split;
mod synthetic;

pub use dataset::{Attribute, Dataset};
pub use load::{LoadOptions, load};
pub use source::is_image;
pub use spec::DataSpec;
pub use split::{Split, SplitFractions};
pub use synthetic::SyntheticConfig;
