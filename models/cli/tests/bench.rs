//! `scrim bench --smoke` through the library: every section runs at tiny sizes and lands in
//! bench.json. Timings are only checked to be finite and positive; a bench asserts nothing
//! about speed.

use scrim_bench::{self as bench, BenchOptions};

#[test]
fn smoke_bench_writes_every_section() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BenchOptions {
        out: dir.path().join("bench"),
        doc: Some(dir.path().join("PERFORMANCE.md")),
        scrim_exe: Some(env!("CARGO_BIN_EXE_scrim").into()),
        command_line: "cargo test (smoke)".into(),
        ..BenchOptions::smoke()
    };
    let report = bench::run(&opts).expect("bench");
    let per_variant = opts.sizes.len() * opts.variants.len();
    assert_eq!(report.perturbation.len(), per_variant);
    for row in &report.perturbation {
        assert!(row.tract_sigma_ms > 0.0 && row.tract_path_ms.is_finite());
        assert!(row.onnx_bytes > 0);
    }
    assert!(report.cotrain.burn_step_ms > 0.0);
    assert_eq!(report.epoch_growth.len(), opts.epoch_counts.len());
    // The RSS probe runs the real `scrim` binary as a child.
    assert_eq!(report.memory.rss.len(), per_variant, "{:?}", report.notes);
    assert!(
        report
            .memory
            .rss
            .iter()
            .all(|r| r.peak_kib >= r.baseline_kib)
    );

    let text = std::fs::read_to_string(opts.out.join("bench.json")).expect("bench.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    for key in [
        "machine",
        "command",
        "date",
        "perturbation",
        "cotrain",
        "server",
        "memory",
        "epoch_growth",
        "ratios",
        "notes",
    ] {
        assert!(json.get(key).is_some(), "bench.json lacks {key}");
    }
    let md = std::fs::read_to_string(dir.path().join("PERFORMANCE.md")).expect("markdown");
    for heading in ["## 1.", "## 2.", "## 3.", "## 4.", "## 5."] {
        assert!(md.contains(heading), "report lacks {heading}");
    }
}
