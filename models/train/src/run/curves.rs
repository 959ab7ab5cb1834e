//! Training curves (`curves.svg` and `curves.png` in the run folder), redrawn after every epoch
//! from `metrics.jsonl`.

use scrim_plots::{LineChart, Series};

use super::{EpochMetrics, RunDir};

impl RunDir {
    /// Redraws the training curves from `metrics.jsonl`. A figure never fails a run: problems
    /// are logged.
    pub fn write_curves(&self) {
        let metrics = match self.metrics() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("training curves: {e}");
                return;
            }
        };
        let name = self
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        if let Err(e) = curves(&name, &metrics).save(&self.file("curves")) {
            tracing::warn!("training curves: {e}");
        }
    }
}

/// The chart: accuracies in one panel, the noise and λ in the other.
pub(crate) fn curves(run: &str, metrics: &[EpochMetrics]) -> LineChart {
    let series = |name: &str, f: &dyn Fn(&EpochMetrics) -> Option<f64>| Series {
        name: name.into(),
        points: metrics
            .iter()
            .filter_map(|m| f(m).map(|v| ((m.epoch + 1) as f64, v)))
            .collect(),
    };
    let mut chart = LineChart::new(format!("training curves: {run}"), "epoch");
    chart.panel(
        "accuracy (validation unless marked)",
        vec![
            series("uploads", &|m| Some(m.val_acc_perturbed)),
            series("clean photos", &|m| Some(m.val_acc_clean)),
            series("training batches", &|m| Some(m.train_acc)),
            series("adversary on uploads", &|m| m.adversary_val_acc),
        ],
    );
    chart.panel(
        "noise",
        vec![
            series("mean σ", &|m| Some(m.mean_sigma)),
            series("λ", &|m| Some(m.lambda)),
        ],
    );
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(i: usize, adversary: Option<f64>) -> EpochMetrics {
        EpochMetrics {
            epoch: i,
            phase: "cotrain".into(),
            lambda: 0.1,
            lr: 1e-3,
            train_loss: 0.5,
            train_acc: 0.8,
            train_acc_tail: None,
            val_acc_clean: 0.9,
            val_acc_perturbed: 0.7 + 0.01 * i as f64,
            val_ce: 0.6,
            mean_sigma: 0.3,
            mean_log_sigma: -1.2,
            val_objective: 0.7,
            adversary_val_acc: adversary,
            val_attack_acc: None,
            seconds: 1.0,
            images_per_sec: 100.0,
        }
    }

    #[test]
    fn curves_show_every_epoch_and_only_the_series_a_run_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics: Vec<EpochMetrics> = (0..3).map(|i| epoch(i, None)).collect();
        let [svg, png] = curves("faces", &metrics)
            .save(&dir.path().join("curves"))
            .expect("save");
        let text = std::fs::read_to_string(svg).expect("svg");
        assert!(text.contains("training curves: faces"));
        assert!(text.contains("uploads") && text.contains("mean σ"));
        assert!(!text.contains("adversary"), "no adversary in this run");
        assert!(png.exists());
        let with_adversary: Vec<EpochMetrics> = (0..2).map(|i| epoch(i, Some(0.4))).collect();
        let [svg, _] = curves("adv", &with_adversary)
            .save(&dir.path().join("adv"))
            .expect("save");
        assert!(
            std::fs::read_to_string(svg)
                .expect("svg")
                .contains("adversary on uploads")
        );
    }
}
