//! A reduced privacy audit on the synthetic data: a co-trained perturber (global view, with
//! suppression) must bring a fresh attacker's accuracy on the sensitive label (texture) near
//! the majority rate, keep the desired label (shape) within a few points of clean, and keep it
//! where uniform noise of equal energy destroys it.

use scrim_audit::{self as audit, Attack, AuditRequest, Scheme};
use scrim_train::data::{DataSpec, SyntheticConfig};
use scrim_train::eval::ClassifierConfig;
use scrim_train::workflow::{self, TrainRequest};

/// The tests one at a time: burn's random generator is shared by the process, so a test's
/// training draws would otherwise depend on when the other test draws from it.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn perturbation_hides_texture_and_keeps_shape() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 3000,
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
    // Suppression fades the faint stripes to grey where σ saturates, so a short run hides them
    // without σ having to reach σ_max. (A faster perturber, ×3, or starting at σ = σ_max/2
    // collapsed here: σ → σ_max and the recognizer fell to chance.) The global view (what
    // `scrim demo` trains) sees where the stripes are; the dense layout's 7×7 view hid them in
    // most runs but not all (session 13: one run left the texture attack at 100%).
    c.epochs = 12;
    c.perturber.suppress = true;
    c.perturber.layout = scrim_train::nets::PerturberLayout::Global;
    c.perturber.encoder_widths = scrim_train::nets::GLOBAL_ENCODER_WIDTHS.to_vec();
    req.draws = 2;
    req.cache = false;
    workflow::train_run(&req).expect("train");
    // Each epoch's figures, so a failure below shows whether (and when) training collapsed.
    let metrics = scrim_train::run::RunDir::open(&run)
        .and_then(|r| r.metrics())
        .expect("metrics");
    for m in &metrics {
        eprintln!(
            "epoch {:>2} {:<7} train acc {:.3} | val clean {:.3} uploads {:.3} | mean σ {:.3} | objective {:.3}",
            m.epoch + 1,
            m.phase,
            m.train_acc,
            m.val_acc_clean,
            m.val_acc_perturbed,
            m.mean_sigma,
            m.val_objective
        );
    }

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
    a.attacker_seeds = 1;
    a.cache = false;
    // The CPU, for a failure seen on one machine only (the kernels of burn and tract are chosen
    // at run time).
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "CPU: avx2 {} fma {} avx512f {}",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f")
    );
    let report = audit::audit(&a).expect("audit");

    let none = &report.schemes[0];
    let scrim = &report.schemes[1];
    let uniform = &report.schemes[2];
    let best =
        |r: &audit::SchemeReport| r.best_attack("texture").expect("attack").accuracy.accuracy;
    let majority = none.attacks[0].majority;
    eprintln!(
        "shape clean {:.3} / uploads {:.3} / under uniform noise {:.3}; texture attack none {:.3}, scrim {:.3}, uniform {:.3} (majority {majority:.3}); mean σ Scrim {:.3}, uniform {:.3}",
        none.desired_clean.accuracy,
        scrim.desired_perturbed.accuracy,
        uniform.desired_perturbed.accuracy,
        best(none),
        best(scrim),
        best(uniform),
        scrim.mean_sigma,
        uniform.mean_sigma
    );
    // Measured with these settings (upload noise comes from the OS, so utility varies): the
    // global view, shape clean 1.000 / uploads 0.985; texture attack clean 1.000, Scrim 0.470
    // (majority 0.540); under uniform noise of equal energy, shape 0.508. The dense layout
    // before it: uploads 0.971 and 0.943, texture 0.530 and 0.458, then 1.000 in one run of
    // session 13's final test. The margins below leave room for run-to-run variation.
    // Clean images: both labels are easy.
    assert!(
        none.desired_clean.accuracy > 0.9,
        "clean shape {:?}",
        none.desired_clean
    );
    assert!(best(none) > 0.85, "clean texture attack {}", best(none));
    // A fresh attacker learns next to nothing about the texture from the uploads...
    assert!(
        best(scrim) < majority + 0.10,
        "texture attack {} vs majority {majority}",
        best(scrim)
    );
    // ...while the desired task stays within a few points of clean...
    assert!(
        scrim.desired_perturbed.accuracy > none.desired_clean.accuracy - 0.08,
        "shape on uploads {} vs clean {}",
        scrim.desired_perturbed.accuracy,
        none.desired_clean.accuracy
    );
    // ...and uniform noise of the same energy destroys the shape: the learned allocation is what
    // keeps it.
    assert!(
        scrim.desired_perturbed.accuracy > uniform.desired_perturbed.accuracy + 0.15,
        "shape: Scrim {} vs uniform {}",
        scrim.desired_perturbed.accuracy,
        uniform.desired_perturbed.accuracy
    );
    // (Uniform noise this strong also leaves the texture attacker near the majority rate, 0.49–0.63
    // across runs with OS-drawn noise, so texture does not separate the two; shape does.)
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

#[test]
fn attacker_seeds_are_reported_with_their_mean() {
    let _serial = serial();
    // Two attackers per attack: the report keeps each seed's accuracy, the headline is their
    // mean, and the Markdown shows their spread.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 600,
        seed: 3,
    });
    let out = dir.path().join("audit");
    let mut a = AuditRequest::new(data, "shape", &["texture"], out.clone());
    a.size = 16;
    a.schemes = vec![Scheme::Uniform {
        sigma: Some(0.3),
        matching: None,
    }];
    a.attacks = vec![Attack::Cnn];
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![8, 16])
        .with_epochs(2)
        .with_batch_size(32);
    a.attacker_seeds = 2;
    a.draws = 1;
    a.cache = false;
    let report = audit::audit(&a).expect("audit");
    let attack = &report.schemes[0].attacks[0];
    assert_eq!(attack.seeds.len(), 2, "{attack:?}");
    let mean = attack.seeds.iter().sum::<f64>() / 2.0;
    assert!(
        (attack.accuracy.accuracy - mean).abs() < 1e-12,
        "{attack:?}"
    );
    assert!(attack.best_seed() >= attack.accuracy.accuracy);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let sd = attack.spread().expect("two seeds have a spread");
    assert!((0.0..0.5).contains(&sd), "{sd}");
    assert!(md.contains(&format!("sd {:.1}", 100.0 * sd)), "{md}");
    // Each seed's validation history: one accuracy per epoch trained, at most `epochs` (2).
    assert_eq!(attack.val_histories.len(), 2, "{attack:?}");
    for h in &attack.val_histories {
        assert!((1..=2).contains(&h.len()), "{h:?}");
        assert!(h.iter().all(|a| (0.0..=1.0).contains(a)), "{h:?}");
    }
    let epochs = attack.epochs();
    let shown = format!("| {} / {} |", epochs[0], epochs[1]);
    assert!(
        md.contains(&shown),
        "report.md shows the epochs {shown}: {md}"
    );
}
