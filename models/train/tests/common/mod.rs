//! What the co-training tests share: a tiny synthetic run and a lock that runs them one at a
//! time. Each test file uses what it needs.
#![allow(dead_code)]

use scrim_train::data::{DataSpec, SyntheticConfig};
use scrim_train::workflow::TrainRequest;

/// A co-training request on 240 synthetic 16×16 images with small networks, writing to `out`.
pub fn tiny_request(out: &std::path::Path, epochs: usize) -> TrainRequest {
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 240,
        seed: 5,
    });
    let mut req = TrainRequest::new(data, "shape", out.to_path_buf());
    let c = &mut req.config;
    c.size = 16;
    c.epochs = epochs;
    c.warmup_epochs = 1;
    c.lambda_ramp_epochs = 1;
    c.batch_size = 32;
    c.recognizer.widths = vec![8, 16];
    c.perturber.channels = 8;
    c.lambda = 0.2;
    req.draws = 1;
    req
}

/// The tests of a file one at a time: burn's random generator is shared by the process, so
/// a test that compares two seeded runs must not have another test drawing from it meanwhile.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
