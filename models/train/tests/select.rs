//! Adversaries that see several noise draws per step, and checkpoint selection on a freshly
//! trained validation attacker.

use scrim_train::cotrain::AdversaryKind;
use scrim_train::run::{Checkpoint, RunDir};
use scrim_train::workflow;

mod common;
use common::{serial, tiny_request};

#[test]
fn the_kept_epoch_is_the_one_the_fresh_attacker_scores_best() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = tiny_request(&dir.path().join("run"), 4);
    req.config.sensitive = Some("texture".into());
    req.config.adversary_pool = vec![AdversaryKind::Linear];
    req.config.adversary_steps = 3;
    req.config.select_attacker = Some(AdversaryKind::Linear);
    // A tolerance that lets every epoch compete: the kept one is the least read of all.
    req.config.select_tolerance = 0.5;
    let summary = workflow::train_run(&req).expect("train with a fresh validation attacker");
    assert!((0.0..=1.0).contains(&summary.test_perturbed.accuracy));
    let run = RunDir::open(&dir.path().join("run")).expect("run");
    let metrics = run.metrics().expect("metrics");
    // Epoch 0 is warm-up: the co-training epochs at full λ (1 to 3) are scored.
    let scored: Vec<_> = metrics
        .iter()
        .filter(|m| m.val_attack_acc.is_some())
        .collect();
    assert_eq!(
        scored.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{metrics:?}"
    );
    let state: Checkpoint =
        serde_json::from_str(&std::fs::read_to_string(run.file("checkpoint.json")).expect("read"))
            .expect("checkpoint.json");
    let kept = scored
        .iter()
        .find(|m| Some(m.epoch) == state.best_epoch)
        .expect("the kept epoch was scored");
    let top = scored
        .iter()
        .map(|m| m.val_acc_perturbed)
        .fold(0.0, f64::max);
    assert!(kept.val_acc_perturbed >= top - 0.5 - 1e-9, "{metrics:?}");
    let attack = |m: &&&scrim_train::run::EpochMetrics| m.val_attack_acc.expect("scored");
    for m in scored.iter().filter(|m| m.val_acc_perturbed >= top - 0.5) {
        assert!(attack(&kept) <= attack(&m), "kept {kept:?} in {metrics:?}");
    }
    // The kept networks are that epoch's.
    for net in ["perturber", "recognizer"] {
        let bytes = |prefix: &str| std::fs::read(run.file(&format!("{prefix}-{net}.bpk")));
        assert_eq!(
            bytes("best").expect("best"),
            bytes(&format!("epoch-{}", kept.epoch)).expect("the epoch's networks"),
        );
    }
    for m in &scored {
        assert!((0.0..=1.0).contains(&m.val_attack_acc.expect("scored")));
    }
}

#[test]
fn selection_and_adversary_steps_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bad = tiny_request(&dir.path().join("a"), 2);
    bad.config.select_attacker = Some(AdversaryKind::Linear);
    let err = workflow::train_run(&bad).expect_err("no sensitive label");
    assert!(err.to_string().contains("--select-attacker"), "{err}");

    bad.config.sensitive = Some("texture".into());
    bad.config.select_attacker = Some(AdversaryKind::Variance);
    let err = workflow::train_run(&bad).expect_err("a kind it does not train");
    assert!(err.to_string().contains("linear or cnn"), "{err}");
    bad.config.select_attacker = Some(AdversaryKind::Linear);
    bad.config.select_tolerance = 2.0;
    let err = workflow::train_run(&bad).expect_err("a tolerance above 1");
    assert!(err.to_string().contains("--select-tolerance"), "{err}");

    let mut bad = tiny_request(&dir.path().join("b"), 2);
    bad.config.adversary_steps = 2;
    let err = workflow::train_run(&bad).expect_err("steps without adversaries");
    assert!(err.to_string().contains("--adversary-steps"), "{err}");
    bad.config.adversary_steps = 0;
    let err = workflow::train_run(&bad).expect_err("zero steps");
    assert!(err.to_string().contains("--adversary-steps"), "{err}");
}
