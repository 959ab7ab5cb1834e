//! Every fuzz target on its seeds and on every input of its committed corpus, on stable: what
//! the fuzzer once found stays fixed, and a target that starts to panic fails CI.

use std::path::Path;
use std::sync::Mutex;

/// Every panic, caught or not, as libFuzzer sees them: `Model::load` turns a panic inside tract
/// into an error, but a panic is still a defect to fix before it (libFuzzer aborts on it).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
        let mut p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
        p.push(info.to_string());
    }));
}

fn take_panics() -> Vec<String> {
    std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()))
}

#[test]
fn every_target_survives_its_seeds_and_its_corpus() {
    record_panics();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in scrim_fuzz::TARGETS {
        let seeds = scrim_fuzz::seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for s in &seeds {
            target(s);
        }
        assert_eq!(take_panics(), Vec::<String>::new(), "{name}: a seed panics");
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: empty corpus");
        for path in &files {
            let bytes = std::fs::read(path).expect("corpus file");
            let _ = std::panic::catch_unwind(|| target(&bytes));
            let panics = take_panics();
            assert!(
                panics.is_empty(),
                "{name}: {} panics: {panics:?}",
                path.display()
            );
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
