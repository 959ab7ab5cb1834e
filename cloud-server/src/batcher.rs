//! Dynamic micro-batching on a dedicated inference pool.
//!
//! - **Admission**: a request first takes one queue slot per image, without waiting. No slot
//!   left means 503 + `Retry-After`, so memory stays bounded however many clients connect. A
//!   slot is held until its image is answered: the queue bounds every image in the server,
//!   waiting or running.
//! - **Pool**: admitted uploads (still encoded) go on a channel read by `workers` OS threads,
//!   never the async workers. A free thread takes the first waiting image, then keeps taking
//!   images until it has `max_batch`, or the first has waited `max_wait`, or no other request is
//!   on its way (so a lone request is not delayed for nothing). It then decodes the images,
//!   stacks them, runs the model once and answers each request through its own oneshot channel.
//!   While one thread runs a batch, the next is already assembling the following one.
//! - Decoding in the pool keeps every CPU-heavy step on a bounded set of threads; the header is
//!   checked first (`upload`), so an upload of the wrong size is never decoded. An upload that
//!   fails is answered with its client error and leaves the rest of the batch alone.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use scrim_core::{DecodeLimits, ImageTensor, InputSpec, Model};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::metrics::{Metrics, QueueGauges};
use crate::upload;
use crate::{Error, Result};

/// How often a thread waiting for a batch to fill re-checks whether more requests are coming.
const ARRIVAL_POLL: Duration = Duration::from_micros(200);

/// How the pool batches and decodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    pub(crate) max_batch: usize,
    pub(crate) max_wait: Duration,
    pub(crate) queue: usize,
    pub(crate) workers: usize,
    pub(crate) retry_after_secs: u64,
    pub(crate) decode: DecodeLimits,
}

/// Logits of one image, or why there are none.
type Reply = Result<Vec<f32>>;

struct Job {
    upload: Bytes,
    reply: oneshot::Sender<Reply>,
    /// The image's queue slot, released once it is answered.
    slot: OwnedSemaphorePermit,
    enqueued: Instant,
}

/// Queue slots taken for the images of one request.
#[derive(Debug)]
pub(crate) struct Admission {
    slots: OwnedSemaphorePermit,
}

/// Marks a request as on its way to the pool (reading its body, parsing, admission), so that a
/// thread assembling a batch waits for it. Ends when dropped.
#[derive(Debug)]
pub(crate) struct Arrival {
    arriving: Arc<AtomicUsize>,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.arriving.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The front of the pool, shared by all requests.
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    arriving: Arc<AtomicUsize>,
    settings: BatchSettings,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts `settings.workers` inference threads for `model` (which must accept any batch
    /// size). The threads end once the `Batcher` is dropped and the queue is empty.
    ///
    /// # Errors
    /// [`Error::Internal`] if a thread cannot be spawned.
    pub(crate) fn start(
        model: Model,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let intake = Arc::new(Mutex::new(rx));
        let arriving = Arc::new(AtomicUsize::new(0));
        for i in 0..settings.workers.max(1) {
            let worker = Worker {
                input: model.manifest().input,
                model: model.clone(),
                intake: Arc::clone(&intake),
                arriving: Arc::clone(&arriving),
                metrics: Arc::clone(&metrics),
                settings,
            };
            std::thread::Builder::new()
                .name(format!("scrim-infer-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::Internal(format!("cannot start an inference thread: {e}")))?;
        }
        Ok(Self {
            tx,
            slots: Arc::new(Semaphore::new(settings.queue)),
            arriving,
            settings,
        })
    }

    /// Counts a request as on its way until the returned guard is dropped or passed to
    /// [`Batcher::run`].
    pub(crate) fn arrival(&self) -> Arrival {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        Arrival {
            arriving: Arc::clone(&self.arriving),
        }
    }

    /// Takes `n` queue slots at once, or none.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when fewer than `n` slots are free.
    pub(crate) fn admit(&self, n: usize) -> Result<Admission> {
        let overloaded = || Error::Overloaded {
            retry_after_secs: self.settings.retry_after_secs,
        };
        let n = u32::try_from(n).map_err(|_| overloaded())?;
        let slots = Arc::clone(&self.slots)
            .try_acquire_many_owned(n)
            .map_err(|_| overloaded())?;
        Ok(Admission { slots })
    }

    /// Takes `n` more slots for a request that already holds some (a batch whose parts are
    /// admitted one by one, as they are read).
    ///
    /// # Errors
    /// [`Error::Overloaded`] when fewer than `n` slots are free; `admission` keeps what it has.
    pub(crate) fn admit_more(&self, admission: &mut Admission, n: usize) -> Result<()> {
        let more = self.admit(n)?;
        admission.slots.merge(more.slots);
        Ok(())
    }

    /// Decodes admitted uploads (each must be a PNG/JPEG at the model's input size) and runs
    /// them through the model. Returns one result per upload, in order: the logits, or the
    /// client error of that upload. Cancellation-safe: if the caller goes away, its images are
    /// skipped when a thread reaches them.
    ///
    /// # Errors
    /// [`Error::Internal`] if the pool is gone.
    pub(crate) async fn run(
        &self,
        mut admission: Admission,
        uploads: Vec<Bytes>,
        arrival: Arrival,
    ) -> Result<Vec<Reply>> {
        let mut pending = Vec::with_capacity(uploads.len());
        let now = Instant::now();
        for upload in uploads {
            let slot = admission
                .slots
                .split(1)
                .ok_or_else(|| Error::Internal("more images submitted than admitted".into()))?;
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job {
                    upload,
                    reply,
                    slot,
                    enqueued: now,
                })
                .map_err(|_| Error::Internal("the inference pool has stopped".into()))?;
            pending.push(rx);
        }
        // Every image is queued: this request is no longer on its way.
        drop(arrival);
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(
                rx.await
                    .unwrap_or_else(|_| Err(Error::Internal("an inference thread stopped".into()))),
            );
        }
        Ok(out)
    }

    /// Current queue gauges.
    pub(crate) fn gauges(&self) -> QueueGauges {
        let capacity = self.settings.queue;
        QueueGauges {
            depth: capacity.saturating_sub(self.slots.available_permits()),
            capacity,
            workers: self.settings.workers.max(1),
        }
    }
}

struct Worker {
    model: Model,
    input: InputSpec,
    intake: Arc<Mutex<mpsc::Receiver<Job>>>,
    arriving: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    settings: BatchSettings,
}

impl Worker {
    fn run(self) {
        while let Some(batch) = self.next_batch() {
            // A panic (in a decoder or the model) must not take the thread down with it. The
            // jobs' reply channels are dropped then, and their callers get an internal error.
            if std::panic::catch_unwind(AssertUnwindSafe(|| self.execute(batch))).is_err() {
                tracing::error!("an inference batch panicked");
            }
        }
        tracing::debug!("inference thread finished");
    }

    /// Blocks for the first job, then gathers more (see the module docs for when it stops).
    /// Holds the intake lock meanwhile, so one thread assembles at a time. `None` once the
    /// queue is closed and empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let intake = self.intake.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch: Vec<Job> = Vec::with_capacity(self.settings.max_batch);
        let mut deadline = None;
        while batch.len() < self.settings.max_batch {
            let job = match deadline {
                None => match intake.recv() {
                    Ok(job) => job,
                    Err(_) => return None,
                },
                Some(deadline) => match intake.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline || self.arriving.load(Ordering::SeqCst) == 0 {
                            break;
                        }
                        match intake.recv_timeout((deadline - now).min(ARRIVAL_POLL)) {
                            Ok(job) => job,
                            Err(RecvTimeoutError::Timeout) => continue,
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                },
            };
            // A caller that timed out or disconnected no longer waits for this image.
            if job.reply.is_closed() {
                continue;
            }
            if deadline.is_none() {
                deadline = Some(job.enqueued + self.settings.max_wait);
            }
            batch.push(job);
        }
        Some(batch)
    }

    /// Decodes, runs and answers one batch.
    fn execute(&self, batch: Vec<Job>) {
        let mut images = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for job in batch {
            match upload::decode(&job.upload, self.input, self.settings.decode.max_pixels) {
                Ok(image) => {
                    images.push(image);
                    waiting.push(job);
                }
                Err(e) => {
                    // Free the slot before answering, so a client never sees its own slot taken.
                    drop(job.slot);
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if images.is_empty() {
            return;
        }
        let n = images.len();
        let started = Instant::now();
        let result = self.infer(&images);
        self.metrics
            .record_batch(n, started.elapsed().as_secs_f64());
        match result {
            Ok(rows) => {
                for (job, row) in waiting.into_iter().zip(rows) {
                    drop(job.slot);
                    // The receiver may be gone (timeout); nothing to do then.
                    let _ = job.reply.send(Ok(row));
                }
            }
            Err(msg) => {
                tracing::error!(batch = n, error = %msg, "inference failed");
                for job in waiting {
                    drop(job.slot);
                    let _ = job.reply.send(Err(Error::Internal(msg.clone())));
                }
            }
        }
    }

    /// Stacks, runs, and splits the first output into one row of logits per image.
    fn infer(&self, images: &[ImageTensor]) -> std::result::Result<Vec<Vec<f32>>, String> {
        let input = ImageTensor::stack(images).map_err(|e| e.to_string())?;
        let outputs = self.model.run(&input).map_err(|e| e.to_string())?;
        let logits = outputs.first().ok_or("the model produced no output")?;
        let n = images.len();
        match logits.shape.as_slice() {
            [rows, k] if *rows == n && *k > 0 => {
                Ok(logits.data.chunks_exact(*k).map(<[f32]>::to_vec).collect())
            }
            other => Err(format!(
                "unexpected output shape {other:?} for a batch of {n}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use scrim_core::{BatchMode, fixtures, imaging};

    fn batcher(max_batch: usize, max_wait_ms: u64, queue: usize) -> (Batcher, Arc<Metrics>) {
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
            Batcher::start(model, settings, Arc::clone(&metrics)).expect("start"),
            metrics,
        )
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
        assert_eq!(
            run(&b, vec![png(8, 0.2)]).await[0]
                .as_ref()
                .map(Vec::len)
                .ok(),
            Some(3)
        );
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
}
