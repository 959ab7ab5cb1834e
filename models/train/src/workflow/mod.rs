//! The workflows behind the `scrim` command, as library calls: train (+ export + test),
//! perturb, classify, demo.

mod demo;
mod files;
mod run;

pub use demo::{DemoOptions, DemoReport, DemoRow, demo};
pub use files::{
    Classified, ClassifyOptions, FileResult, InputSize, classify_files, list_images, perturb_files,
    resolve_model, softmax_labels, upload_name,
};
pub use run::{TrainRequest, TrainSummary, load_data, mean_sigma, perturbed_accuracy, train_run};
