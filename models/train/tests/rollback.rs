//! A co-training epoch that collapses (σ saturates, the recognizer falls to the majority rate)
//! is repeated from the previous checkpoint, at most twice, and the run's records stay whole.

use scrim_train::run::{Checkpoint, RunDir};
use scrim_train::workflow;

mod common;
use common::tiny_request;

#[test]
fn a_collapsed_epoch_is_repeated_from_the_previous_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    // Small networks on 1,200 16×16 images: warm-up learns the shape (train 72%, validation
    // 88% here), and a global-view perturber with suppression at λ = 0.5 saturates σ in the first
    // co-training epoch, every time (measured with the perturber's rate at 2–20× the
    // recognizer's), so both repeats happen and the run then carries on.
    let mut req = tiny_request(&out, 5);
    req.data = scrim_train::data::DataSpec::Synthetic(scrim_train::data::SyntheticConfig {
        count: 1200,
        seed: 5,
    });
    let c = &mut req.config;
    c.warmup_epochs = 2;
    c.sensitive = Some("texture".into());
    c.lambda = 0.5;
    c.batch_size = 16;
    c.perturber.suppress = true;
    c.perturber.layout = scrim_train::nets::PerturberLayout::Global;
    c.perturber.encoder_widths = scrim_train::nets::GLOBAL_ENCODER_WIDTHS.to_vec();
    workflow::train_run(&req).expect("train");

    let run = RunDir::open(&out).expect("open");
    let metrics = run.metrics().expect("metrics");
    let line = |m: &scrim_train::run::EpochMetrics| {
        format!(
            "epoch {} {} train {:.3} uploads {:.3} σ {:.3}",
            m.epoch + 1,
            m.phase,
            m.train_acc,
            m.val_acc_perturbed,
            m.mean_sigma
        )
    };
    let lines: Vec<String> = metrics.iter().map(line).collect();
    // Warm-up learned; co-training fell to the majority rate.
    assert!(metrics[1].train_acc > 0.65, "{lines:#?}");
    assert!(metrics[2].val_acc_perturbed < 0.6, "{lines:#?}");
    // One metrics line per epoch, in order: the repeated epochs left no line behind.
    assert_eq!(
        metrics.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4],
        "{lines:#?}"
    );
    let state: Checkpoint =
        serde_json::from_str(&std::fs::read_to_string(run.file("checkpoint.json")).expect("read"))
            .expect("checkpoint.json");
    assert_eq!(state.rollbacks, 2, "both repeats recorded: {lines:#?}");
    assert_eq!(state.epochs_done, 5);
    // A collapsed epoch is never the kept one (its objective, CE at chance and σ at its
    // maximum, can be the lowest of the run).
    if let Some(best) = state.best_epoch {
        assert!(
            metrics[best].val_acc_perturbed >= 0.6,
            "kept epoch {}: {lines:#?}",
            best + 1
        );
    }
    // The run still ends with its files: the kept networks export and load.
    assert!(run.perturber_onnx().is_file() && run.recognizer_onnx().is_file());
}
