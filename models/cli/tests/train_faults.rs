//! `kill -9` of `scrim train` at a random point, then `--resume`: the run holds every epoch once
//! and ends with the same metrics as a run that was never interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use scrim_train::run::{EpochMetrics, RunDir};

const EPOCHS: &str = "5";

fn train(out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scrim"));
    c.args([
        "--quiet",
        "train",
        "--data",
        "synthetic:1200",
        "--desired",
        "shape",
        "--size",
        "16",
        "--widths",
        "8,16",
        "--perturber-channels",
        "8",
        "--batch-size",
        "32",
        "--warmup",
        "1",
        "--epochs",
        EPOCHS,
        "--seed",
        "7",
        "--out",
    ])
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

/// What an epoch computed (its timing left out).
fn outcome(m: &EpochMetrics) -> (usize, String, [u64; 7]) {
    let bits = [
        m.train_loss,
        m.train_acc,
        m.val_acc_clean,
        m.val_acc_perturbed,
        m.val_ce,
        m.mean_sigma,
        m.val_objective,
    ]
    .map(f64::to_bits);
    (m.epoch, m.phase.clone(), bits)
}

fn outcomes(dir: &Path) -> Vec<(usize, String, [u64; 7])> {
    RunDir::open(dir)
        .expect("run")
        .metrics()
        .expect("metrics")
        .iter()
        .map(outcome)
        .collect()
}

/// A number in `0..n` that differs from run to run (no cryptographic need).
fn random_below(n: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) % n
}

#[test]
fn kill_9_then_resume_gives_every_epoch_once_and_the_same_result() {
    let dir = tempfile::tempdir().expect("tmp");
    let whole = dir.path().join("whole");
    let started = Instant::now();
    assert!(train(&whole, false).status().expect("run").success());
    let full_time = started.elapsed();
    let expected = outcomes(&whole);
    assert_eq!(expected.len(), 5);

    // The narrowest window, made by hand: killed after the first epoch's metrics line and before
    // its checkpoint. Resuming starts over and keeps no stale line.
    let early = dir.path().join("early");
    std::fs::create_dir_all(&early).expect("mkdir");
    for f in ["config.json", "split.json"] {
        std::fs::copy(whole.join(f), early.join(f)).expect("copy");
    }
    let first = std::fs::read_to_string(whole.join("metrics.jsonl")).expect("metrics");
    let first = first.lines().next().expect("a line");
    std::fs::write(early.join("metrics.jsonl"), format!("{first}\n")).expect("write");
    assert!(train(&early, true).status().expect("resume").success());
    assert_eq!(outcomes(&early), expected, "a line without its checkpoint");

    // Kill at a random point of the run (several times over, resuming in between), then finish.
    let cut = dir.path().join("cut");
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = train(&cut, cut.join("config.json").is_file())
            .spawn()
            .expect("spawn");
        // Somewhere in the first 80% of a whole run's time: start-up, an epoch, a checkpoint
        // being written, the export.
        let wait = Duration::from_millis(random_below(full_time.as_millis() as u64 * 4 / 5 + 1));
        std::thread::sleep(wait);
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            let lines = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap_or_default();
            eprintln!(
                "killed after {wait:?}, {} metrics lines",
                lines.lines().count()
            );
            kills += 1;
        }
        child.wait().expect("reap");
    }
    assert!(kills > 0, "the first run was never killed");
    eprintln!("killed {kills} times");
    let finished = train(&cut, cut.join("config.json").is_file())
        .status()
        .expect("resume");
    assert!(finished.success(), "resume after {kills} kills failed");
    assert_eq!(
        outcomes(&cut),
        expected,
        "after {kills} kills: every epoch once, each as in the uninterrupted run"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&cut)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("staged-") || n == "commit.json" || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
