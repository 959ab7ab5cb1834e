//! A reduced privacy audit on the synthetic data: a co-trained perturber must lower a fresh
//! attacker's accuracy on the sensitive label (texture) by a clear margin, while the desired
//! label (shape) stays within a few points of the clean model.

use scrim_models::audit::{self, Attack, AuditRequest, Scheme};
use scrim_models::data::{DataSpec, SyntheticConfig};
use scrim_models::eval::ClassifierConfig;
use scrim_models::workflow::{self, TrainRequest};

#[test]
fn perturbation_hides_texture_and_keeps_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 2000,
        seed: 11,
    });
    let run = dir.path().join("run");
    let mut req = TrainRequest::new(data.clone(), "shape", run.clone());
    let c = &mut req.config;
    c.sensitive = Some("texture".into());
    c.epochs = 10;
    c.lambda = 0.5;
    c.recognizer.widths = vec![16, 32, 64];
    // Small batches: enough optimiser steps for the shape task on a small set.
    c.batch_size = 32;
    // A little longer and a faster perturber than the defaults, so σ reaches the border band
    // within a short run (starting from σ = σ_max/2 instead collapses: the recognizer is lost).
    c.epochs = 14;
    c.perturber_lr_scale = 3.0;
    req.draws = 2;
    req.cache = false;
    workflow::train_run(&req).expect("train");

    let out = dir.path().join("audit");
    let mut a = AuditRequest::new(data, "shape", &["texture"], out.clone());
    a.schemes = vec![
        Scheme::None,
        Scheme::Run { path: run.clone() },
        Scheme::Uniform {
            sigma: None,
            matching: None,
        },
    ];
    a.attacks = vec![Attack::Cnn];
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![16, 32, 64])
        .with_epochs(10)
        .with_batch_size(32)
        .with_patience(3);
    a.draws = 2;
    a.cache = false;
    let report = audit::audit(&a).expect("audit");

    let none = &report.schemes[0];
    let scrim = &report.schemes[1];
    let uniform = &report.schemes[2];
    let best =
        |r: &audit::SchemeReport| r.best_attack("texture").expect("attack").accuracy.accuracy;
    let majority = none.attacks[0].majority;
    eprintln!(
        "shape clean {:.3} / uploads {:.3}; texture attack none {:.3}, scrim {:.3}, uniform {:.3} (majority {majority:.3})",
        none.desired_clean.accuracy,
        scrim.desired_perturbed.accuracy,
        best(none),
        best(scrim),
        best(uniform)
    );
    // Clean images: both labels are easy.
    assert!(
        none.desired_clean.accuracy > 0.9,
        "clean shape {:?}",
        none.desired_clean
    );
    assert!(best(none) > 0.85, "clean texture attack {}", best(none));
    // The perturbation removes most of the texture signal a fresh attacker can learn...
    assert!(
        best(scrim) < best(none) - 0.15,
        "texture attack {} vs clean {}",
        best(scrim),
        best(none)
    );
    // ...while the desired task keeps its accuracy within a few points.
    assert!(
        scrim.desired_perturbed.accuracy > none.desired_clean.accuracy - 0.08,
        "shape on uploads {} vs clean {}",
        scrim.desired_perturbed.accuracy,
        none.desired_clean.accuracy
    );
    // Every output of the audit exists and the JSON round-trips.
    for f in ["report.json", "report.md", "samples.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let text = std::fs::read_to_string(out.join("report.json")).expect("read");
    let back: audit::AuditReport = serde_json::from_str(&text).expect("parse");
    assert_eq!(back.schemes.len(), 3);
    assert!(
        uniform.rms_sigma > 0.0,
        "uniform σ matched to the perturber"
    );
}
