//! The ARDEN-style feature baseline on the synthetic data: without noise the released features
//! keep both labels (the desired shape for the cloud, the sensitive texture for an attacker); with
//! a Laplace scale far above the bounded feature range the texture attacker falls to the
//! majority rate.

use scrim_audit::{self as audit, Attack, AuditRequest, Scheme};
use scrim_train::data::{DataSpec, SyntheticConfig};
use scrim_train::eval::ClassifierConfig;

#[test]
fn arden_noise_hides_texture_and_no_noise_keeps_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 1200,
        seed: 5,
    });
    let out = dir.path().join("audit");
    let mut a = AuditRequest::new(data, "shape", &["texture"], out.clone());
    a.schemes = vec![
        Scheme::Arden {
            nullify: 0.0,
            laplace_b: 0.0,
        },
        Scheme::Arden {
            nullify: 0.1,
            laplace_b: 20.0,
        },
    ];
    // Blur is requested to check that it is skipped with a note, not faked.
    a.attacks = vec![Attack::Cnn, Attack::Blur];
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![16, 32, 64])
        .with_epochs(8)
        .with_batch_size(32)
        .with_patience(3);
    a.draws = 2;
    a.attacker_seeds = 1;
    a.cache = false;
    let report = audit::audit(&a).expect("audit");

    let clean = &report.schemes[0];
    let noisy = &report.schemes[1];
    let texture = |r: &audit::SchemeReport| r.best_attack("texture").expect("attack").clone();
    let majority = texture(clean).majority;
    eprintln!(
        "shape: clean images {:.3}, features b=0 {:.3}, b=20 {:.3}; texture attack b=0 {:.3}, b=20 {:.3} (majority {majority:.3})",
        clean.desired_clean.accuracy,
        clean.desired_perturbed.accuracy,
        noisy.desired_perturbed.accuracy,
        texture(clean).accuracy.accuracy,
        texture(noisy).accuracy.accuracy,
    );
    // Noise-free features: the cloud part recovers the shape and an attacker the texture.
    assert!(
        clean.desired_perturbed.accuracy > 0.85,
        "shape on noise-free features {:?}",
        clean.desired_perturbed
    );
    assert!(
        texture(clean).accuracy.accuracy > majority + 0.2,
        "texture attack on noise-free features {} vs majority {majority}",
        texture(clean).accuracy.accuracy
    );
    // Laplace noise 20× the feature range: the attacker learns next to nothing.
    assert!(
        texture(noisy).accuracy.accuracy < majority + 0.08,
        "texture attack at b = 20: {} vs majority {majority}",
        texture(noisy).accuracy.accuracy
    );
    // Only the CNN attacker ran; blur is reported as skipped.
    for r in &report.schemes {
        assert!(r.attacks.iter().all(|x| x.attacker == Attack::Cnn));
        assert!(
            r.notes.iter().any(|n| n.contains("blur not run")),
            "{:?}",
            r.notes
        );
        assert_eq!(r.family, "arden");
    }
    assert_eq!(noisy.mean_sigma, 20.0);
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("arden μ=0.1 b=20"), "{md}");
    let text = std::fs::read_to_string(out.join("report.json")).expect("read");
    let back: audit::AuditReport = serde_json::from_str(&text).expect("parse");
    assert_eq!(back.schemes[1].scheme, noisy.scheme);
}
