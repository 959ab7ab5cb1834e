//! Tests of manifest validation and serialisation.
use super::*;

fn sample() -> Manifest {
    Manifest::recognizer(
        "r",
        InputSpec::rgb(32, 32),
        "gender",
        vec!["m".into(), "f".into()],
    )
}

#[test]
fn round_trips_through_json() {
    let m = sample();
    assert_eq!(Manifest::from_json(&m.to_json()).ok(), Some(m));
}

#[test]
fn rejects_bad_fields_with_the_field_name() {
    type Break = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(Break, &str)> = vec![
        (Box::new(|m| m.format_version = 9), "format_version"),
        (Box::new(|m| m.input.channels = 1), "input.channels"),
        (Box::new(|m| m.input.height = 0), "input.height"),
        (Box::new(|m| m.labels.truncate(1)), "at least 2 labels"),
        (
            Box::new(|m| m.normalization.std[1] = 0.0),
            "normalization.std",
        ),
        (
            Box::new(|m| m.normalization.mean.pop().map(|_| ()).unwrap_or(())),
            "normalization.mean",
        ),
        (
            Box::new(|m| {
                m.key = Some(KeyRequirement {
                    scheme: "rot13".into(),
                    block: 4,
                })
            }),
            "key.scheme",
        ),
        (
            Box::new(|m| {
                m.key = Some(KeyRequirement {
                    scheme: "np".into(),
                    block: 5,
                })
            }),
            "key.block",
        ),
        (Box::new(|m| m.role = Role::Perturber), "perturber"),
    ];
    for (mutate, needle) in cases {
        let mut m = sample();
        mutate(&mut m);
        let err = Manifest::from_json(&m.to_json())
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
}

#[test]
fn rejects_malformed_json() {
    let err = Manifest::from_json("{\"role\": \"perturber\"").expect_err("truncated");
    assert!(matches!(err, Error::InvalidManifest(_)), "{err}");
    let err = Manifest::from_json("{\"role\": \"juggler\"}").expect_err("role");
    assert!(
        err.to_string().contains("role") || err.to_string().contains("juggler"),
        "{err}"
    );
}

#[test]
fn perturber_spec_is_checked() {
    let spec = PerturberSpec {
        sigma_max: 0.0,
        noise: NoiseKind::Gaussian,
        outputs: default_outputs(),
        fill: 0.5,
        standardize: false,
        release: None,
        erase: None,
    };
    let m = Manifest::perturber("p", InputSpec::rgb(8, 8), spec);
    assert!(
        m.validate()
            .expect_err("sigma")
            .to_string()
            .contains("sigma_max")
    );
}

#[test]
fn a_bounded_release_needs_version_2_and_one_map_output() {
    let r = BoundedRelease::new(4, 1, 0.5, 0.2, 32);
    let m = Manifest::perturber("b", InputSpec::rgb(32, 32), PerturberSpec::bounded(r, 0.5));
    assert_eq!(m.format_version, 2);
    let back = Manifest::from_json(&m.to_json()).expect("round trip");
    assert_eq!(back, m);
    let err = |m: Manifest| m.validate().expect_err("invalid").to_string();
    let v1 = Manifest {
        format_version: 1,
        ..m.clone()
    };
    assert!(err(v1).contains("format_version 2"));
    let mut two = m.clone();
    if let Some(p) = &mut two.perturber {
        p.outputs = vec![PerturberOutput::Sigma];
    }
    assert!(err(two).contains("\"map\""));
    let v4 = Manifest {
        format_version: 4,
        ..m.clone()
    };
    assert!(err(v4).contains("versions 1 to 3"));
    // Noise perturbers stay at version 1, which older SDKs read.
    let noise = PerturberSpec::noise(1.0, NoiseKind::Gaussian, default_outputs(), 0.5);
    assert_eq!(
        Manifest::perturber("n", InputSpec::rgb(8, 8), noise).format_version,
        1
    );
}

#[test]
fn a_concept_erasure_needs_version_3_valid_tables_and_no_bounded_release() {
    let erase = crate::erasure::Erasure {
        label: "race".into(),
        channels: 1,
        rank: 2,
        mean: vec![0.5; 64],
        down: vec![0.0; 128],
        up: vec![0.0; 128],
    };
    let mut spec = PerturberSpec::noise(1.0, NoiseKind::Gaussian, default_outputs(), 0.5);
    spec.standardize = true;
    spec.erase = Some(erase.clone());
    let m = Manifest::perturber("e", InputSpec::rgb(8, 8), spec);
    assert_eq!(m.format_version, 3);
    m.validate().expect("valid");
    assert_eq!(Manifest::from_json(&m.to_json()).expect("round trip"), m);
    let err = |m: Manifest| m.validate().expect_err("invalid").to_string();
    assert!(
        err(Manifest {
            format_version: 2,
            ..m.clone()
        })
        .contains("format_version 3")
    );
    let wrong_size = Manifest {
        input: InputSpec::rgb(16, 16),
        normalization: Normalization::identity(3),
        ..m.clone()
    };
    assert!(err(wrong_size).contains("perturber.erase"));
    let mut bounded = Manifest::perturber(
        "b",
        InputSpec::rgb(32, 32),
        PerturberSpec::bounded(BoundedRelease::new(4, 1, 0.5, 0.2, 32), 0.5),
    );
    if let Some(p) = &mut bounded.perturber {
        p.erase = Some(erase);
    }
    bounded.format_version = 3;
    assert!(err(bounded).contains("no image to erase"));
}

#[test]
fn a_missing_manifest_names_itself_and_its_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let onnx = dir.path().join("recognizer.onnx");
    let err = Manifest::load_beside(&onnx)
        .expect_err("no manifest")
        .to_string();
    let json = dir.path().join("recognizer.json");
    assert!(
        err.starts_with(&format!("manifest not found: {}", json.display()))
            && err.contains(&format!("beside the model {}", onnx.display()))
            && !err.contains("os error"),
        "{err}"
    );
    sample().save(&json).expect("save");
    assert_eq!(Manifest::load_beside(&onnx).ok(), Some(sample()));
}

#[test]
fn run_name_and_id_round_trip_and_are_checked() {
    let id = new_run_id().expect("id");
    assert_eq!(id.len(), RUN_ID_LEN);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_ne!(id, new_run_id().expect("id"), "ids come from the CSPRNG");
    let m = sample().with_run("utk", &id);
    let json = m.to_json();
    assert!(
        json.contains("\"run_name\": \"utk\"") && json.contains(&id),
        "{json}"
    );
    assert_eq!(Manifest::from_json(&json).ok(), Some(m.clone()));
    for (bad, needle) in [
        (m.clone().with_run("utk", "not hex!"), "run_id"),
        (m.clone().with_run("a\nb", &id), "run_name"),
    ] {
        let err = bad.validate().expect_err(needle).to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn manifests_written_before_run_ids_still_load() {
    // A recognizer manifest as scrim 0.1 wrote it, before run names and ids.
    let old = r#"{
        "format_version": 1, "role": "recognizer", "name": "scrim-recognizer",
        "input": {"channels": 3, "height": 32, "width": 32},
        "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
        "task": "gender", "labels": ["m", "f"], "producer": "scrim 0.1.0"
    }"#;
    let m = Manifest::from_json(old).expect("an older manifest loads");
    assert_eq!((m.run_name, m.run_id), (None, None));
    // Without a run, nothing of it is written either: older SDKs read the same JSON as before.
    assert!(!sample().to_json().contains("run_"));
}

#[test]
fn a_perturber_and_a_recognizer_of_different_runs_do_not_pair() {
    let (_, p) = crate::fixtures::perturber(8, 0.2);
    let (_, r) = crate::fixtures::recognizer(8, &["a", "b"]);
    let (a, b) = ("0123456789abcdef", "fedcba9876543210");
    let pair = |p: &Manifest, r: &Manifest| check_pair(p, r);
    assert_eq!(
        pair(&p.clone().with_run("x", a), &r.clone().with_run("x", a)).ok(),
        Some(Pairing::SameRun)
    );
    let err = pair(&p.clone().with_run("x", a), &r.clone().with_run("y", b))
        .expect_err("mismatch")
        .to_string();
    assert!(
        err.contains("different training runs") && err.contains(a) && err.contains(b),
        "{err}"
    );
    // Older models without ids pair with anything, unchecked.
    assert_eq!(
        pair(&p, &r.clone().with_run("y", b)).ok(),
        Some(Pairing::Unknown)
    );
    assert_eq!(pair(&p.with_run("x", a), &r).ok(), Some(Pairing::Unknown));
}

#[test]
fn the_model_card_travels_in_the_onnx_metadata() {
    let (onnx, m) = crate::fixtures::recognizer(8, &["cat", "dog"]);
    let m = m.with_run("demo", "00112233aabbccdd");
    let carded = crate::onnx::with_model_card(&onnx, &m).expect("card");
    let card = crate::onnx_graph::metadata(&carded).expect("read");
    assert_eq!(card["scrim.run_name"], "demo");
    assert_eq!(card["scrim.run_id"], "00112233aabbccdd");
    assert_eq!(card["scrim.role"], "recognizer");
    assert_eq!(card["scrim.labels"], r#"["cat","dog"]"#);
    // Written twice, it holds one card; the model still loads.
    let again = crate::onnx::with_model_card(&carded, &m).expect("card");
    assert_eq!(crate::onnx_graph::metadata(&again).expect("read"), card);
    crate::Model::load(&again, m, crate::BatchMode::Single).expect("loads");
}
