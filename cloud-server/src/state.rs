//! The state every handler shares: the loaded model(s), the batching pool, auth, metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scrim_core::{BatchMode, DecodeLimits, Manifest, Model, Role};
use scrim_seal::LevelKey;

use crate::auth::{Auth, Level};
use crate::batcher::{BatchSettings, Batcher};
use crate::connection::ConnLimits;
use crate::metrics::Metrics;
use crate::tokens::ApiToken;
use crate::{Config, Error, Result};

/// One servable model: its manifest and the pool that runs it.
#[derive(Debug)]
pub(crate) struct ModelSlot {
    pub(crate) manifest: Manifest,
    pub(crate) batcher: Batcher,
    /// The protection level this slot serves.
    pub(crate) level: Level,
    /// Names of the tiers served by this slot.
    pub(crate) tiers: Vec<String>,
}

/// Request limits, copied out of the [`Config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_batch_body_bytes: usize,
    pub(crate) max_batch_images: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) connections: ConnLimits,
}

#[derive(Debug)]
struct Shared {
    /// Models by level: always [`Level::DEFAULT`] (the model as configured), plus one per level
    /// restored for a tier.
    models: BTreeMap<Level, ModelSlot>,
    auth: Auth,
    metrics: Arc<Metrics>,
    limits: Limits,
    ready: AtomicBool,
    /// Number of levels M of the configured bundle, if any.
    levels_total: Option<usize>,
    /// The try-a-photo page, when configured.
    try_page: Option<crate::try_page::TryPage>,
}

/// Everything the router needs, cheap to clone. Build it with [`AppState::new`] (loads the model
/// named by the config) or [`AppState::with_model`] (an already loaded model), then pass it to
/// [`app`](crate::app).
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    /// Validates `config`, loads the recognizer and its manifest, reads the API tokens and starts
    /// the inference pool.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::Model`] for a missing or invalid
    /// model or manifest (the message says which file and what is wrong); [`Error::Io`] for an
    /// unreadable token file.
    pub fn new(config: &Config) -> Result<Self> {
        config.validate()?;
        let (engine, batch) = config.engine()?;
        let model = Model::load_path_with(&config.model, batch, &engine).map_err(|e| match e {
            scrim_core::Error::Io { path, source }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Error::Model(scrim_core::Error::Io {
                    path,
                    source: std::io::Error::new(
                        source.kind(),
                        "not found (the server needs recognizer.onnx and recognizer.json \
                         side by side, as written by `scrim train`)",
                    ),
                })
            }
            other => Error::Model(other),
        })?;
        if config.tiers.is_empty() {
            return Self::with_model(config, model);
        }
        let restored = restore_levels(config, &model)?;
        Self::build(config, model, restored)
    }

    /// As [`AppState::new`], with a model that is already loaded for any batch size
    /// ([`BatchMode::Tuned`] or [`BatchMode::Planned`] as [`Config::engine`] says, or
    /// [`BatchMode::Dynamic`]).
    /// `config.model` is not read.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or a model that is not a recognizer loaded
    /// for dynamic batches; [`Error::Io`] for an unreadable token file.
    pub fn with_model(config: &Config, model: Model) -> Result<Self> {
        Self::build(config, model, Restored::default())
    }

    fn build(config: &Config, model: Model, restored: Restored) -> Result<Self> {
        let mut config = config.clone();
        if config.model.as_os_str().is_empty() {
            config.model = "<in memory>".into();
        }
        config.validate()?;
        let manifest = model.manifest().clone();
        if manifest.role != Role::Recognizer {
            return Err(Error::Config(format!(
                "model {:?} is a {:?}, but the server serves recognizers (recognizer.onnx)",
                manifest.name, manifest.role
            )));
        }
        if model.batch_mode() == BatchMode::Single {
            return Err(Error::Config(
                "the model must be loaded for batches (BatchMode::Tuned, Planned or Dynamic)"
                    .into(),
            ));
        }
        let pixels = (manifest.input.width * manifest.input.height) as u64;
        if config.max_pixels < pixels {
            return Err(Error::Config(format!(
                "max_pixels ({}) is below the model's input size {}x{} = {pixels} pixels",
                config.max_pixels, manifest.input.width, manifest.input.height
            )));
        }
        let try_page = match &config.try_page {
            Some(perturber) => {
                let ort = config
                    .try_page_ort
                    .clone()
                    .or_else(crate::try_page::default_ort_dir)
                    .unwrap_or_default();
                Some(crate::try_page::TryPage::load(perturber, &ort, &manifest)?)
            }
            None => None,
        };
        let auth = Auth::with_levels(tokens_with_levels(&config, &restored)?);
        let metrics = Arc::new(Metrics::default());
        let settings = BatchSettings {
            max_batch: config.max_batch,
            max_wait: Duration::from_millis(config.max_wait_ms),
            queue: config.queue,
            workers: config.worker_threads(),
            retry_after_secs: config.retry_after_secs,
            decode: DecodeLimits {
                max_pixels: config.max_pixels,
            },
        };
        let batcher = Batcher::start(model, settings, Arc::clone(&metrics))?;
        let mut models = BTreeMap::new();
        models.insert(
            Level::DEFAULT,
            ModelSlot {
                manifest,
                batcher,
                level: Level::DEFAULT,
                tiers: restored.tier_names(Level::DEFAULT),
            },
        );
        for (level, model) in restored.models {
            let manifest = model.manifest().clone();
            let batcher = Batcher::start(model, settings, Arc::clone(&metrics))?;
            let tiers = restored.tiers.iter().filter(|(_, l)| *l == level);
            models.insert(
                level,
                ModelSlot {
                    manifest,
                    batcher,
                    level,
                    tiers: tiers.map(|(n, _)| n.clone()).collect(),
                },
            );
            tracing::info!(level = level.0, "restored protection level");
        }
        let limits = Limits {
            max_body_bytes: config.max_body_bytes,
            max_batch_body_bytes: config.max_batch_body_bytes,
            max_batch_images: config.max_batch_images,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            connections: ConnLimits {
                max_connections: config.max_connections,
                header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
                idle_timeout: Duration::from_millis(config.idle_timeout_ms),
                max_header_bytes: config.max_header_bytes,
            },
        };
        tracing::info!(
            auth = auth.enabled(),
            max_batch = settings.max_batch,
            max_wait_ms = config.max_wait_ms,
            queue = settings.queue,
            workers = settings.workers,
            "state ready"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                models,
                auth,
                metrics,
                limits,
                ready: AtomicBool::new(true),
                levels_total: restored.levels_total,
                try_page,
            }),
        })
    }

    /// The manifest of the model served to callers without a special level.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.shared.models.get(&Level::DEFAULT).map(|s| &s.manifest)
    }

    /// Whether `/readyz` reports ready. Turned off when shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// Marks the server ready or draining (for `/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether bearer tokens are required on `/v1`.
    pub fn auth_enabled(&self) -> bool {
        self.shared.auth.enabled()
    }

    /// Prometheus text of all metrics (what `GET /metrics` returns).
    pub fn render_metrics(&self) -> String {
        let gauges = self.default_slot().map(|s| s.batcher.gauges()).unwrap_or(
            crate::metrics::QueueGauges {
                depth: 0,
                capacity: 0,
                workers: 0,
            },
        );
        self.shared.metrics.render(gauges, self.is_ready())
    }

    /// Waits (at most `limit`) until no image is queued or running in any pool. Whether the
    /// queues emptied.
    pub(crate) async fn drain(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.slots().all(|s| s.batcher.gauges().depth == 0) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn slot(&self, level: Level) -> Result<&ModelSlot> {
        self.shared
            .models
            .get(&level)
            .ok_or_else(|| Error::Internal(format!("no model for level {level:?}")))
    }

    /// Every model served, by level.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &ModelSlot> {
        self.shared.models.values()
    }

    /// Number of levels M of the configured bundle, if any.
    pub(crate) fn levels_total(&self) -> Option<usize> {
        self.shared.levels_total
    }

    fn default_slot(&self) -> Option<&ModelSlot> {
        self.shared.models.get(&Level::DEFAULT)
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.shared.auth
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn limits(&self) -> Limits {
        self.shared.limits
    }

    pub(crate) fn try_page(&self) -> Option<&crate::try_page::TryPage> {
        self.shared.try_page.as_ref()
    }
}

/// Models restored for the tiers, with the tiers' levels.
#[derive(Debug, Default)]
struct Restored {
    /// One model per level above 0.
    models: BTreeMap<Level, Model>,
    /// (tier name, level), in configuration order.
    tiers: Vec<(String, Level)>,
    levels_total: Option<usize>,
}

impl Restored {
    fn tier_names(&self, level: Level) -> Vec<String> {
        self.tiers
            .iter()
            .filter(|(_, l)| *l == level)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Restores each level named by a tier's key once: the encrypted model (`config.model`) plus the
/// bundle, opened with the key.
fn restore_levels(config: &Config, base: &Model) -> Result<Restored> {
    let mut out = Restored::default();
    let encrypted = std::fs::read(&config.model).map_err(|source| Error::Io {
        path: config.model.clone(),
        source,
    })?;
    let bundle = match &config.bundle {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let info = scrim_seal::sealed::bundle_info(&bytes).map_err(Error::Model)?;
            out.levels_total = Some(info.levels);
            Some(bytes)
        }
        None => None,
    };
    for tier in &config.tiers {
        let Some(key_path) = &tier.key_file else {
            out.tiers.push((tier.name.clone(), Level::DEFAULT));
            continue;
        };
        let key = LevelKey::load(key_path).map_err(Error::Model)?;
        let level = Level(key.level() as u32);
        out.tiers.push((tier.name.clone(), level));
        if out.models.contains_key(&level) {
            continue;
        }
        let Some(bundle) = &bundle else {
            return Err(Error::Config(format!(
                "tier {:?} has a key_file but no bundle is configured",
                tier.name
            )));
        };
        let bytes = scrim_seal::selective::restore(&encrypted, bundle, &key).map_err(|e| {
            Error::Config(format!(
                "tier {:?}: cannot restore level {} of {} with {}: {e}",
                tier.name,
                key.level(),
                config.model.display(),
                key_path.display()
            ))
        })?;
        let model = Model::load_with(
            &bytes,
            base.manifest().clone(),
            base.batch_mode(),
            base.engine(),
        )
        .map_err(Error::Model)?;
        out.models.insert(level, model);
    }
    Ok(out)
}

/// The server-wide tokens at [`Level::DEFAULT`] and each tier's tokens at its level. A token
/// configured twice is refused (it could only ever get one of its levels).
fn tokens_with_levels(config: &Config, restored: &Restored) -> Result<Vec<(ApiToken, Level)>> {
    let mut out: Vec<(ApiToken, Level, String)> = config
        .load_tokens()?
        .into_iter()
        .map(|t| (t, Level::DEFAULT, "the server-wide tokens".to_string()))
        .collect();
    for (tier, (name, level)) in config.tiers.iter().zip(&restored.tiers) {
        for t in tier.load_tokens()? {
            if let Some((_, _, other)) = out.iter().find(|(u, _, _)| *u == t) {
                return Err(Error::Config(format!(
                    "an API token of tier {name:?} is also configured for {other}; every token \
                     must belong to one tier"
                )));
            }
            out.push((t, *level, format!("tier {name:?}")));
        }
    }
    Ok(out.into_iter().map(|(t, l, _)| (t, l)).collect())
}
