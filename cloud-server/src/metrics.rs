//! Prometheus metrics, rendered in the text exposition format (version 0.0.4).
//!
//! A handful of series, kept by hand rather than through a metrics crate: request counts by route
//! and status, request latency by route, batch sizes, inference time, and the queue gauges (read
//! from the batcher at scrape time). Route labels come from the matched route pattern, never from
//! the raw path, so a scan of random URLs cannot blow up the label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

/// Latency buckets in seconds: 0.5 ms … 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch-size buckets: powers of two up to the largest allowed batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket (non-cumulative) counts; the last entry is the `+Inf` overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Counts and latencies of one route.
#[derive(Debug)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug)]
struct Inner {
    routes: BTreeMap<String, RouteStats>,
    batch_size: Histogram,
    inference_seconds: Histogram,
}

/// The server's metrics. Cheap to update from any thread.
#[derive(Debug)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

/// Queue gauges, read from the batcher when metrics are scraped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueGauges {
    pub(crate) depth: usize,
    pub(crate) capacity: usize,
    pub(crate) workers: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                routes: BTreeMap::new(),
                batch_size: Histogram::new(BATCH_BUCKETS),
                inference_seconds: Histogram::new(LATENCY_BUCKETS),
            }),
        }
    }
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters; keep serving them.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one finished request.
    pub(crate) fn record_request(&self, route: &str, status: u16, seconds: f64) {
        let mut m = self.lock();
        // Look up before inserting, so that a route's name is allocated once, not per request.
        if !m.routes.contains_key(route) {
            let stats = RouteStats {
                by_status: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BUCKETS),
            };
            m.routes.insert(route.to_owned(), stats);
        }
        if let Some(stats) = m.routes.get_mut(route) {
            *stats.by_status.entry(status).or_insert(0) += 1;
            stats.latency.observe(seconds);
        }
    }

    /// Counts one model run of `size` images that took `seconds`.
    pub(crate) fn record_batch(&self, size: usize, seconds: f64) {
        let mut m = self.lock();
        m.batch_size.observe(size as f64);
        m.inference_seconds.observe(seconds);
    }

    /// `(number of batches, number of images)` run so far.
    pub(crate) fn batch_totals(&self) -> (u64, u64) {
        let m = self.lock();
        (m.batch_size.count, m.batch_size.sum as u64)
    }

    /// Seconds spent in model runs so far, all inference threads together.
    pub(crate) fn inference_seconds(&self) -> f64 {
        self.lock().inference_seconds.sum
    }

    /// The Prometheus text exposition of every series.
    pub(crate) fn render(&self, queue: QueueGauges, ready: bool) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP scrim_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE scrim_http_requests_total counter\n");
        for (route, stats) in &m.routes {
            for (status, n) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "scrim_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP scrim_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE scrim_http_request_duration_seconds histogram\n");
        for (route, stats) in &m.routes {
            stats.latency.render(
                &mut out,
                "scrim_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP scrim_batch_size Images per model run.\n");
        out.push_str("# TYPE scrim_batch_size histogram\n");
        m.batch_size.render(&mut out, "scrim_batch_size", "");
        out.push_str("# HELP scrim_inference_duration_seconds Time of one model run.\n");
        out.push_str("# TYPE scrim_inference_duration_seconds histogram\n");
        m.inference_seconds
            .render(&mut out, "scrim_inference_duration_seconds", "");
        let gauges = [
            (
                "scrim_queue_depth",
                "Images admitted and not yet answered.",
                queue.depth,
            ),
            (
                "scrim_queue_capacity",
                "Images the queue admits before 503.",
                queue.capacity,
            ),
            (
                "scrim_inference_workers",
                "Threads of the inference pool.",
                queue.workers,
            ),
            (
                "scrim_ready",
                "1 while the server accepts traffic, 0 while draining.",
                ready.into(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.5, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.record_request("/v1/classify", 200, 0.003);
        m.record_request("/v1/classify", 503, 0.0001);
        m.record_batch(4, 0.002);
        m.record_batch(2, 0.001);
        assert_eq!(m.batch_totals(), (2, 6));
        let text = m.render(
            QueueGauges {
                depth: 3,
                capacity: 8,
                workers: 2,
            },
            true,
        );
        for needle in [
            "scrim_http_requests_total{route=\"/v1/classify\",status=\"200\"} 1",
            "scrim_http_requests_total{route=\"/v1/classify\",status=\"503\"} 1",
            "scrim_http_request_duration_seconds_count{route=\"/v1/classify\"} 2",
            "scrim_batch_size_bucket{le=\"4\"} 2",
            "scrim_batch_size_sum 6",
            "scrim_queue_depth 3",
            "scrim_queue_capacity 8",
            "scrim_ready 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
