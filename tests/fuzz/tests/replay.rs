//! Every fuzz target on its seeds and on every input of its committed corpus, on stable: what
//! the fuzzer once found stays fixed, and a target that starts to panic fails CI.

use std::path::Path;

#[test]
fn every_target_survives_its_seeds_and_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in scrim_fuzz::TARGETS {
        let seeds = scrim_fuzz::seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for s in &seeds {
            target(s);
        }
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: empty corpus");
        for path in &files {
            let bytes = std::fs::read(path).expect("corpus file");
            // A panic names the file through the hook's message below.
            let result = std::panic::catch_unwind(|| target(&bytes));
            assert!(result.is_ok(), "{name}: {} panics", path.display());
        }
        eprintln!(
            "{name}: {} seeds, {} corpus inputs",
            seeds.len(),
            files.len()
        );
    }
}

#[test]
fn the_corpora_hold_only_known_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for entry in std::fs::read_dir(&root).expect("corpus folder") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            scrim_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
            "corpus/{name} belongs to no target"
        );
    }
}

#[test]
fn the_server_target_reaches_the_classifier() {
    // The seeds must exercise the real paths, not bounce off a broken fixture.
    let seeds = scrim_fuzz::seeds("server_request");
    assert_eq!(
        scrim_fuzz::server_status(&seeds[0]),
        Some(("/v1/classify", 200))
    );
    let mut wrong_token = seeds[0].clone();
    wrong_token[2] = 1;
    assert_eq!(
        scrim_fuzz::server_status(&wrong_token),
        Some(("/v1/classify", 401))
    );
    let mut not_png = seeds[0].clone();
    not_png.truncate(40);
    let (_, status) = scrim_fuzz::server_status(&not_png).expect("status");
    assert!((400..500).contains(&status), "truncated PNG: {status}");
}
