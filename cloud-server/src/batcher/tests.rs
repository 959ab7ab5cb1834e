//! The batcher's admission, batching and decoding.

use super::*;
use crate::ErrorCode;
use scrim_core::{BatchMode, fixtures, imaging};

fn batcher(max_batch: usize, max_wait_ms: u64, queue: usize) -> (Batcher, Arc<Metrics>) {
    batcher_in_plans_of(1, max_batch, max_wait_ms, queue)
}

/// A batcher whose batches are trimmed to multiples of `granule` (as a fastest plan of that
/// size would have them).
fn batcher_in_plans_of(
    granule: usize,
    max_batch: usize,
    max_wait_ms: u64,
    queue: usize,
) -> (Batcher, Arc<Metrics>) {
    let (onnx, manifest) = fixtures::recognizer(8, &["a", "b", "c"]);
    let model = Model::load(&onnx, manifest, BatchMode::Dynamic).expect("fixture");
    let metrics = Arc::new(Metrics::default());
    let settings = BatchSettings {
        max_batch,
        max_wait: Duration::from_millis(max_wait_ms),
        queue,
        workers: 1,
        retry_after_secs: 3,
        decode: DecodeLimits::default(),
    };
    (
        Batcher::start_with(model, settings, Arc::clone(&metrics), granule).expect("start"),
        metrics,
    )
}

#[test]
fn batches_run_in_whole_plans_unless_there_are_fewer_images() {
    assert_eq!(whole_plans(10, 4), 8);
    assert_eq!(whole_plans(8, 4), 8);
    assert_eq!(whole_plans(3, 4), 3, "fewer than one plan: all of them");
    assert_eq!(whole_plans(7, 1), 7);
    assert_eq!(whole_plans(0, 4), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_past_whole_plans_run_next_and_are_all_answered_in_order() {
    let (b, metrics) = batcher_in_plans_of(2, 16, 2_000, 64);
    let values = [0.1, 0.3, 0.5, 0.7, 0.9];
    let mut single = Vec::new();
    for v in values {
        single.push(run(&b, vec![png(8, v)]).await.remove(0).expect("logits"));
    }
    let (before, _) = metrics.batch_totals();
    let rows = run(&b, values.iter().map(|&v| png(8, v)).collect()).await;
    // Five images in plans of two: four now, the fifth carried into a batch of its own.
    assert_eq!(metrics.batch_totals().0 - before, 2, "two model runs");
    assert_eq!(rows.len(), 5);
    for (got, want) in rows.iter().zip(&single) {
        let got = got.as_ref().expect("logits");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}

fn png(size: usize, v: f32) -> Bytes {
    let t = ImageTensor::new([1, 3, size, size], vec![v; 3 * size * size]).expect("image");
    let rgb = imaging::tensor_to_rgb(&t).expect("rgb");
    Bytes::from(imaging::encode_png(&rgb).expect("png"))
}

async fn run(b: &Batcher, uploads: Vec<Bytes>) -> Vec<Reply> {
    let arrival = b.arrival();
    let admission = b.admit(uploads.len()).expect("admit");
    b.run(admission, uploads, arrival).await.expect("pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_images_that_arrive_together_and_keeps_the_order() {
    let (b, metrics) = batcher(16, 2_000, 64);
    let mut single = Vec::new();
    for v in [0.1, 0.5, 0.9] {
        let started = Instant::now();
        single.push(run(&b, vec![png(8, v)]).await.remove(0).expect("logits"));
        // Nothing else is on its way, so a lone image does not wait for max_wait.
        assert!(started.elapsed() < Duration::from_millis(1_000));
    }
    let (before, _) = metrics.batch_totals();
    let rows = run(&b, vec![png(8, 0.1), png(8, 0.5), png(8, 0.9)]).await;
    assert_eq!(
        metrics.batch_totals().0 - before,
        1,
        "one model run for three images"
    );
    for (got, want) in rows.iter().zip(&single) {
        let got = got.as_ref().expect("logits");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upload_fails_alone() {
    let (b, metrics) = batcher(16, 0, 64);
    let rows = run(
        &b,
        vec![png(8, 0.1), Bytes::from_static(b"junk"), png(4, 0.5)],
    )
    .await;
    assert_eq!(rows[0].as_ref().map(Vec::len).ok(), Some(3));
    assert_eq!(
        rows[1].as_ref().err().map(Error::code),
        Some(ErrorCode::InvalidImage)
    );
    assert_eq!(
        rows[2].as_ref().err().map(Error::code),
        Some(ErrorCode::WrongSize)
    );
    assert_eq!(
        metrics.batch_totals(),
        (1, 1),
        "only the good image reached the model"
    );
    assert_eq!(b.gauges().depth, 0, "the bad images' slots are back");
    assert_eq!(
        run(&b, vec![png(8, 0.2)]).await[0]
            .as_ref()
            .map(Vec::len)
            .ok(),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_is_decoded_off_the_async_worker_alike() {
    let (b, metrics) = batcher(32, 0, 512);
    let want = run(&b, vec![png(8, 0.3)]).await.remove(0).expect("logits");
    // 300 images of 8×8 hold more than INLINE_DECODE_PIXELS: the blocking pool decodes them.
    let n = INLINE_DECODE_PIXELS / 64 + 44;
    let mut uploads = vec![png(8, 0.3); n];
    uploads[7] = Bytes::from_static(b"junk");
    let (before, _) = metrics.batch_totals();
    let rows = run(&b, uploads).await;
    assert_eq!(rows.len(), n);
    assert_eq!(
        rows[7].as_ref().err().map(Error::code),
        Some(ErrorCode::InvalidImage)
    );
    for (i, row) in rows.iter().enumerate().filter(|&(i, _)| i != 7) {
        let got = row.as_ref().expect("logits");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "image {i}: {got:?} vs {want:?}");
        }
    }
    assert!(metrics.batch_totals().0 - before >= (n as u64 - 1).div_ceil(32));
    assert_eq!(b.gauges().depth, 0, "every slot back, the bad image's too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_is_all_or_nothing_and_slots_come_back() {
    let (b, _) = batcher(4, 0, 4);
    let held = b.admit(3).expect("three of four");
    assert_eq!(b.gauges().depth, 3);
    let err = b.admit(2).expect_err("only one left");
    assert!(
        matches!(
            err,
            Error::Overloaded {
                retry_after_secs: 3
            }
        ),
        "{err}"
    );
    let one = b.admit(1).expect("the last one");
    drop(held);
    assert_eq!(b.gauges().depth, 1);
    let arrival = b.arrival();
    b.run(one, vec![png(8, 0.5)], arrival).await.expect("run");
    assert_eq!(b.gauges().depth, 0);
    assert!(b.admit(usize::MAX).is_err());
    assert_eq!(b.arriving.load(Ordering::SeqCst), 0);
}
