//! `scrim-cloud soak --short` against the built binary: it must pass, and its report must show
//! that every hostile sender actually ran into the defence it targets (so a soak whose senders
//! did nothing cannot pass this test).

use std::process::Command;

use serde_json::Value;

fn count(map: &Value, key: &str) -> u64 {
    map.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn keys(map: &Value) -> Vec<String> {
    map.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_short_soak_passes_with_every_hostile_sender_active() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scrim-cloud"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SCRIM_CLOUD_") {
            command.env_remove(key);
        }
    }
    let output = command
        .args(["soak", "--short", "--json"])
        .output()
        .expect("run scrim-cloud soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{stdout}\n{stderr}"));
    let failures = &report["failures"];
    assert!(
        output.status.success() && failures.as_array().is_some_and(Vec::is_empty),
        "{:?}: {failures:#}\n{stderr}",
        output.status
    );

    // Legitimate load: at least 10 000 requests on 64 connections, only 200 (or 503 with
    // Retry-After).
    let legit = &report["legit"];
    assert_eq!(legit["connections"], 64);
    assert!(legit["requests"].as_u64().unwrap_or(0) >= 10_000, "{legit}");
    for outcome in keys(&legit["outcomes"]) {
        assert!(
            outcome == "200" || outcome == "503 overloaded + Retry-After",
            "{legit}"
        );
    }

    // Slowloris: every finished connection was closed by the header timeout (1 s), none held.
    let slow = &report["hostile"]["slowloris"];
    let senders = slow["senders"].as_u64().unwrap_or(0);
    assert!(senders > 0, "{slow}");
    assert!(
        slow["closed_by_header_timeout"].as_u64().unwrap_or(0) >= senders,
        "{slow}"
    );
    assert_eq!(slow["held_past_limit"], 0, "{slow}");
    assert!(
        slow["close_ms_min"].as_f64().unwrap_or(0.0) >= 900.0,
        "{slow}"
    );

    // Slow bodies: answered 408 body_timeout.
    let body = &report["hostile"]["slow_body"];
    assert!(
        count(&body["outcomes"], "408 body_timeout") >= body["senders"].as_u64().unwrap_or(1),
        "{body}"
    );

    // Decode amplification: a small file declaring 2000x2000, refused wrong_size every time.
    let amp = &report["hostile"]["decode_amp"];
    assert!(
        amp["upload_bytes"].as_u64().unwrap_or(u64::MAX) < 100_000,
        "{amp}"
    );
    assert_eq!(keys(&amp["outcomes"]), vec!["400 wrong_size"], "{amp}");
    assert!(count(&amp["outcomes"], "400 wrong_size") >= 4, "{amp}");

    // Memory was read, and bounded.
    let m = &report["memory"];
    let read = |k: &str| m[k].as_u64().unwrap_or(0);
    assert!(read("before") > 0 && read("peak") >= read("before"), "{m}");
    assert!(read("after") <= read("before") + read("margin"), "{m}");
    assert!(read("peak") <= read("peak_cap"), "{m}");

    // SIGTERM under load: requests answered after it, none cut off, a clean exit.
    let t = &report["shutdown"];
    assert!(t["answered_after_sigterm"].as_u64().unwrap_or(0) > 0, "{t}");
    assert_eq!(t["cut_off"], 0, "{t}");
    assert_eq!(t["violations"], serde_json::json!({}), "{t}");
    assert_eq!(t["exit_success"], true, "{t}");
}
