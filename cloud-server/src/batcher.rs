//! Dynamic micro-batching on a dedicated inference pool.
//!
//! - **Admission**: a request first takes one queue slot per image, without waiting. No slot
//!   left means 503 + `Retry-After`, so memory stays bounded however many clients connect. A
//!   slot is held until its image is answered: the queue bounds every image in the server,
//!   waiting or running.
//! - **Decoding** happens on the request's side, once it is admitted, so that the inference
//!   threads do nothing but inference (and the image work runs on the other cores meanwhile).
//!   The header is checked first (`upload`), so an upload of the wrong size is never decoded and
//!   every decode is bounded by the model's input size; a request whose images hold more than
//!   [`INLINE_DECODE_PIXELS`] pixels is decoded on tokio's blocking pool rather than on the async
//!   worker. An upload that fails is answered with its client error and leaves the other images
//!   of its request alone. At most `queue` images are admitted, so at most that many decode.
//! - **Pool**: decoded images go on a channel read by `workers` OS threads, never the async
//!   workers. A free thread takes the first waiting image, then keeps taking images until it
//!   has `max_batch`, or the first has waited `max_wait`, or no other request is on its way (so
//!   a lone request is not delayed for nothing). It then stacks them, runs the model once and
//!   answers each request through its own oneshot channel. While one thread runs a batch, the
//!   next is already assembling the following one.
//! - **Whole plans**: tract runs a batch through fixed-shape plans timed at load, so the images
//!   left over past a multiple of the fastest plan would run in small, slow plans (10 images
//!   with a fastest plan of 4: 4 + 4 + 2). A thread runs the whole multiple and keeps the rest
//!   for its next batch, first in line, which gathers more behind them or, when none come,
//!   runs them on their own: they wait one batch longer (docs/PERFORMANCE.md §1n).

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

/// A request's images are decoded on the async worker that read them when they hold at most
/// this many pixels in all (a 128×128 image: tens of microseconds), on the blocking pool when
/// they hold more.
const INLINE_DECODE_PIXELS: usize = 128 * 128;

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
    image: ImageTensor,
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
    input: InputSpec,
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
        let granule = fastest_plan(&model);
        Self::start_with(model, settings, metrics, granule)
    }

    /// [`Batcher::start`] with batches trimmed to multiples of `granule` ([`whole_plans`]).
    fn start_with(
        model: Model,
        settings: BatchSettings,
        metrics: Arc<Metrics>,
        granule: usize,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let intake = Arc::new(Mutex::new(rx));
        let arriving = Arc::new(AtomicUsize::new(0));
        for i in 0..settings.workers.max(1) {
            let worker = Worker {
                granule,
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
            input: model.manifest().input,
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
    /// client error of that upload (whose slot is freed at once). Cancellation-safe: if the
    /// caller goes away, its images are skipped when a thread reaches them.
    ///
    /// # Errors
    /// [`Error::Internal`] if the pool is gone.
    pub(crate) async fn run(
        &self,
        mut admission: Admission,
        uploads: Vec<Bytes>,
        arrival: Arrival,
    ) -> Result<Vec<Reply>> {
        let decoded = self.decode(uploads).await?;
        let mut pending = Vec::with_capacity(decoded.len());
        let now = Instant::now();
        for image in decoded {
            let slot = admission
                .slots
                .split(1)
                .ok_or_else(|| Error::Internal("more images submitted than admitted".into()))?;
            // An upload that failed to decode frees its slot here (`slot` dropped).
            let image = match image {
                Ok(image) => image,
                Err(e) => {
                    pending.push(Err(e));
                    continue;
                }
            };
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job {
                    image,
                    reply,
                    slot,
                    enqueued: now,
                })
                .map_err(|_| Error::Internal("the inference pool has stopped".into()))?;
            pending.push(Ok(rx));
        }
        // Every image is queued: this request is no longer on its way.
        drop(arrival);
        let mut out = Vec::with_capacity(pending.len());
        for item in pending {
            out.push(match item {
                Ok(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(Error::Internal("an inference thread stopped".into()))),
                Err(e) => Err(e),
            });
        }
        Ok(out)
    }

    /// Decodes each upload at the model's input size: on this async worker when the request is
    /// small, on the blocking pool otherwise (see the module docs).
    ///
    /// # Errors
    /// [`Error::Internal`] if the blocking pool fails; a bad upload is its own `Err` entry.
    async fn decode(&self, uploads: Vec<Bytes>) -> Result<Vec<Result<ImageTensor>>> {
        let (input, max_pixels) = (self.input, self.settings.decode.max_pixels);
        let pixels = input.height * input.width * uploads.len();
        let decode_all = move || -> Vec<Result<ImageTensor>> {
            uploads
                .iter()
                .map(|bytes| upload::decode(bytes, input, max_pixels))
                .collect()
        };
        if pixels <= INLINE_DECODE_PIXELS {
            return Ok(decode_all());
        }
        tokio::task::spawn_blocking(decode_all)
            .await
            .map_err(|e| Error::Internal(format!("decoding failed: {e}")))
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

/// The batch size of `model`'s kept plan that ran an image fastest at load, when over one;
/// 1 (no trimming) for onnxruntime and untimed plans.
fn fastest_plan(model: &Model) -> usize {
    model
        .plan_choices()
        .iter()
        .filter(|p| p.kept && p.us_per_image.is_finite())
        .min_by(|a, b| a.us_per_image.total_cmp(&b.us_per_image))
        .map_or(1, |p| p.batch.max(1))
}

/// How many of `n` gathered images to run now: the largest multiple of `granule` (the rest wait
/// for the next batch), or all of them when that is none or `granule` is 1.
fn whole_plans(n: usize, granule: usize) -> usize {
    let whole = n / granule.max(1) * granule.max(1);
    if whole == 0 { n } else { whole }
}

struct Worker {
    model: Model,
    /// The batch size of the plan fastest per image at load, when it is over one (see
    /// [`whole_plans`]); 1 otherwise.
    granule: usize,
    intake: Arc<Mutex<mpsc::Receiver<Job>>>,
    arriving: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    settings: BatchSettings,
}

impl Worker {
    fn run(self) {
        let mut carried = Vec::new();
        while let Some(batch) = self.next_batch(&mut carried) {
            // A panic (in a decoder or the model) must not take the thread down with it. The
            // jobs' reply channels are dropped then, and their callers get an internal error.
            if std::panic::catch_unwind(AssertUnwindSafe(|| self.execute(batch))).is_err() {
                tracing::error!("an inference batch panicked");
            }
        }
        tracing::debug!("inference thread finished");
    }

    /// Starts from the images `carried` over from the last batch, else blocks for the first
    /// job, then gathers more (see the module docs for when it stops); leaves in `carried` what
    /// goes past whole plans. Holds the intake lock meanwhile, so one thread assembles at a
    /// time. `None` once the queue is closed and empty.
    fn next_batch(&self, carried: &mut Vec<Job>) -> Option<Vec<Job>> {
        let intake = self.intake.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch: Vec<Job> = Vec::with_capacity(self.settings.max_batch);
        batch.append(carried);
        let mut deadline = batch
            .first()
            .map(|job| job.enqueued + self.settings.max_wait);
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
        let whole = whole_plans(batch.len(), self.granule);
        carried.extend(batch.drain(whole..));
        Some(batch)
    }

    /// Runs and answers one batch.
    fn execute(&self, batch: Vec<Job>) {
        let (images, waiting): (Vec<ImageTensor>, Vec<_>) = batch
            .into_iter()
            .map(|job| (job.image, (job.reply, job.slot)))
            .unzip();
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
                for ((reply, slot), row) in waiting.into_iter().zip(rows) {
                    drop(slot);
                    // The receiver may be gone (timeout); nothing to do then.
                    let _ = reply.send(Ok(row));
                }
            }
            Err(msg) => {
                tracing::error!(batch = n, error = %msg, "inference failed");
                for (reply, slot) in waiting {
                    drop(slot);
                    let _ = reply.send(Err(Error::Internal(msg.clone())));
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
mod tests;
