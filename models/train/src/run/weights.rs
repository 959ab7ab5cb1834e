//! The networks and optimisers of a run folder: `best`, `last` and per-epoch checkpoints, each
//! written in one commit (temporary files renamed into place).

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;

use super::commit::{self, Commit};
use super::{Checkpoint, RunDir, json_text, record_err};
use crate::Result;
use crate::nets::Nets;

/// What burn's `save_file` returns.
type SaveResult = std::result::Result<(), burn::store::RecordError>;

impl RunDir {
    fn stage_nets(commit: &mut Commit, prefix: &str, nets: &Nets) -> Result<()> {
        let mut stage = |name: &str, m: &dyn Fn(&Path) -> SaveResult| {
            commit.stage(&format!("{prefix}-{name}.bpk"), |f| {
                m(f).map_err(|e| record_err(f, e))
            })
        };
        stage("perturber", &|f| nets.perturber.clone().save_file(f))?;
        stage("recognizer", &|f| nets.recognizer.clone().save_file(f))?;
        if let Some(a) = &nets.adversary {
            stage("adversary", &|f| a.clone().save_file(f))?;
        }
        if let Some(t) = &nets.teacher {
            stage("teacher", &|f| t.clone().save_file(f))?;
        }
        Ok(())
    }

    pub(crate) fn load_nets(&self, prefix: &str, template: &Nets, device: &Device) -> Result<Nets> {
        let f = |name: &str| self.file(&format!("{prefix}-{name}.bpk"));
        let p = template.perturber.clone().fork(device);
        let c = template.recognizer.clone().fork(device);
        Ok(Nets {
            perturber: p
                .try_load_file(f("perturber"))
                .map_err(|e| record_err(&f("perturber"), e))?,
            recognizer: c
                .try_load_file(f("recognizer"))
                .map_err(|e| record_err(&f("recognizer"), e))?,
            adversary: match &template.adversary {
                Some(a) => Some(
                    a.clone()
                        .fork(device)
                        .try_load_file(f("adversary"))
                        .map_err(|e| record_err(&f("adversary"), e))?,
                ),
                None => None,
            },
            // The teacher exists once warm-up is over; a run stopped before has none.
            teacher: match &template.teacher {
                Some(t) if f("teacher").is_file() => Some(
                    t.clone()
                        .fork(device)
                        .try_load_file(f("teacher"))
                        .map_err(|e| record_err(&f("teacher"), e))?,
                ),
                _ => None,
            },
        })
    }

    pub(crate) fn save_best(&self, nets: &Nets) -> Result<()> {
        self.save_nets("best", nets)
    }

    /// Saves `nets` as `{prefix}-*.bpk` in one commit.
    pub(crate) fn save_nets(&self, prefix: &str, nets: &Nets) -> Result<()> {
        let mut commit = Commit::begin(&self.path)?;
        Self::stage_nets(&mut commit, prefix, nets)?;
        commit.finish()
    }

    /// Loads the best checkpoint into networks shaped like `template`.
    ///
    /// # Errors
    /// [`Error::BadRecord`] when the weights are missing or do not fit.
    pub fn load_best(&self, template: &Nets, device: &Device) -> Result<Nets> {
        self.load_nets("best", template, device)
    }

    /// Commits the end of an epoch as one step: the `last` networks, their optimisers,
    /// `checkpoint.json` and, when `best` is given, the `best` networks.
    pub(crate) fn save_last(
        &self,
        nets: &Nets,
        best: Option<&Nets>,
        state: &Checkpoint,
        optimizers: [&ModuleOptimizer; 3],
    ) -> Result<()> {
        let mut commit = Commit::begin(&self.path)?;
        if let Some(best) = best {
            Self::stage_nets(&mut commit, "best", best)?;
        }
        Self::stage_nets(&mut commit, "last", nets)?;
        for (name, o) in ["perturber", "recognizer", "adversary"]
            .iter()
            .zip(optimizers)
        {
            commit.stage(&format!("last-optim-{name}.bpk"), |f| {
                o.save(f).map_err(|e| record_err(f, e))
            })?;
        }
        commit.stage_bytes("checkpoint.json", (json_text(state)? + "\n").as_bytes())?;
        commit.finish()
    }

    pub(crate) fn load_last(
        &self,
        template: &Nets,
        device: &Device,
    ) -> Result<Option<(Nets, Checkpoint)>> {
        commit::recover(&self.path)?;
        if !self.file("checkpoint.json").is_file() {
            return Ok(None);
        }
        let state: Checkpoint = self.read_json("checkpoint.json")?;
        Ok(Some((self.load_nets("last", template, device)?, state)))
    }

    pub(crate) fn load_optimizers(
        &self,
        p: ModuleOptimizer,
        c: ModuleOptimizer,
        a: ModuleOptimizer,
    ) -> Result<(ModuleOptimizer, ModuleOptimizer, ModuleOptimizer)> {
        let load = |o: ModuleOptimizer, name: &str| {
            let f = self.file(&format!("last-optim-{name}.bpk"));
            o.load(&f).map_err(|e| record_err(&f, e))
        };
        Ok((
            load(p, "perturber")?,
            load(c, "recognizer")?,
            load(a, "adversary")?,
        ))
    }
}
