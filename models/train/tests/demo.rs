//! The demo's promise on its synthetic data (issue #20): the desired label within 3 points of a
//! recognizer trained on clean images, and a fresh attacker on the uploads within 5 points of
//! the sensitive label's majority rate, while on clean images the same attacker reads it.

use scrim_train::workflow::{self, DemoOptions};

#[test]
fn the_demo_keeps_shape_and_hides_texture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = workflow::demo(&DemoOptions {
        out: dir.path().join("demo"),
        count: COUNT,
        epochs: EPOCHS,
        attacker_epochs: 8,
        progress: false,
    })
    .expect("demo");
    let (clean, perturbed) = (&report.rows[0], &report.rows[1]);
    assert_eq!((clean.images.as_str(), perturbed.images.as_str()), ("clean", "perturbed"));
    // The data carries the sensitive label: an attacker reads it from clean images.
    assert!(
        clean.attacker.accuracy >= 0.9,
        "clean texture attacker {:.3}",
        clean.attacker.accuracy
    );
    assert!(
        perturbed.desired.accuracy >= clean.desired.accuracy - 0.03,
        "shape on uploads {:.3}, clean {:.3}",
        perturbed.desired.accuracy,
        clean.desired.accuracy
    );
    assert!(
        perturbed.attacker.accuracy <= report.sensitive_majority + 0.05,
        "texture attacker on uploads {:.3}, majority {:.3}",
        perturbed.attacker.accuracy,
        report.sensitive_majority
    );
}

/// Smaller than `scrim demo`'s 3000 images and 12 epochs, to stay within a minute or two.
const COUNT: usize = 1500;
const EPOCHS: usize = 10;
