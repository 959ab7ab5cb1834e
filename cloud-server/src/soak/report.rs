//! The report of a soak run: what was measured, the checks that decide pass or fail, and the
//! table `scrim-cloud soak` prints.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::{HostileStats, MIB, ShutdownStats, SoakMode, SoakOptions};
use crate::load::{OK, OVERLOADED_RETRY};

/// The legitimate load.
#[derive(Debug, Clone, Serialize)]
pub struct LegitStats {
    /// Keep-alive connections.
    pub connections: usize,
    /// Requests sent.
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Wall time of the load.
    pub seconds: f64,
    /// 200 answers per second.
    pub throughput: f64,
    /// Latency of 200 answers, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Requests by outcome: `"200"`, `"503 overloaded + Retry-After"`, `"<status> <code>"`,
    /// `"connection error: …"`.
    pub outcomes: BTreeMap<String, usize>,
}

/// The server's resident memory, in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStats {
    /// Right after start.
    pub start: u64,
    /// After the warm-up.
    pub before: u64,
    /// The most ever resident (`VmHWM`), read after the load.
    pub peak: u64,
    /// After the load, once the queue is empty.
    pub after: u64,
    /// `after` may not exceed `before` + this.
    pub margin: u64,
    /// `peak` may not exceed this: `before` + `queue × max_body_bytes` + a head buffer
    /// (`max_header_bytes`) per connection + `margin`.
    pub peak_cap: u64,
}

/// Everything a soak run measured, and what failed.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The preset.
    pub mode: SoakMode,
    /// Manifest name.
    pub model: String,
    /// Input size, `CxHxW`.
    pub input: String,
    /// The server's settings, as passed to `scrim-cloud serve`.
    pub server_args: Vec<String>,
    /// Legitimate load.
    pub legit: LegitStats,
    /// Hostile senders.
    pub hostile: HostileStats,
    /// Server memory.
    pub memory: MemoryStats,
    /// SIGTERM under load.
    pub shutdown: ShutdownStats,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl SoakReport {
    /// No failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Everything in `outcomes` that is not one of `allowed`, as `"kind ×N"`.
fn unexpected(outcomes: &BTreeMap<String, usize>, allowed: &[&str]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(k, _)| !allowed.contains(&k.as_str()))
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect()
}

/// The failures of a run, each a sentence that says why.
pub(crate) fn check(r: &SoakReport, o: &SoakOptions) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |cond: bool, why: String| {
        if cond {
            failures.push(why);
        }
    };
    let bad = unexpected(&r.legit.outcomes, &[OK, OVERLOADED_RETRY]);
    fail(
        !bad.is_empty(),
        format!("legitimate requests failed: {}", bad.join(", ")),
    );
    fail(
        r.legit.requests < o.requests,
        format!(
            "only {} of {} legitimate requests were sent within {:?}",
            r.legit.requests, o.requests, o.max_duration
        ),
    );

    let s = &r.hostile.slowloris;
    fail(
        o.slowloris > 0 && s.closed_by_header_timeout == 0,
        "no slowloris connection was closed by the header timeout".into(),
    );
    fail(
        s.held_past_limit > 0,
        format!(
            "{} slowloris connections were still open long after the header timeout",
            s.held_past_limit
        ),
    );
    let b = &r.hostile.slow_body;
    let body_timeout = format!("{} body_timeout", 408);
    let bad = unexpected(&b.outcomes, &[&body_timeout, OVERLOADED_RETRY]);
    fail(
        !bad.is_empty(),
        format!("slow bodies got other answers: {}", bad.join(", ")),
    );
    fail(
        o.slow_body > 0 && b.outcomes.get(&body_timeout).is_none_or(|&n| n == 0),
        "no slow body was answered 408 body_timeout".into(),
    );
    let d = &r.hostile.decode_amp;
    let bad = unexpected(&d.outcomes, &["400 wrong_size"]);
    fail(
        !bad.is_empty(),
        format!(
            "decode-amplification uploads got other answers: {}",
            bad.join(", ")
        ),
    );
    fail(
        o.decode_amp > 0 && d.uploads == 0,
        "no decode-amplification upload was answered".into(),
    );

    let m = &r.memory;
    fail(
        m.after > m.before + m.margin,
        format!(
            "server memory after the run, {:.1} MiB, exceeds before ({:.1} MiB) + the margin \
             ({:.1} MiB)",
            mib(m.after),
            mib(m.before),
            mib(m.margin)
        ),
    );
    fail(
        m.peak > m.peak_cap,
        format!(
            "server peak memory, {:.1} MiB, exceeds the cap of {:.1} MiB",
            mib(m.peak),
            mib(m.peak_cap)
        ),
    );

    let t = &r.shutdown;
    fail(
        t.cut_off > 0,
        format!(
            "{} requests written whole on served keep-alive connections got EOF instead of an \
             answer after SIGTERM",
            t.cut_off
        ),
    );
    let mut bad: Vec<String> = t
        .violations
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect();
    bad.extend(unexpected(&t.answers, &[OK, OVERLOADED_RETRY]));
    fail(
        !bad.is_empty(),
        format!("SIGTERM phase: {}", bad.join(", ")),
    );
    fail(
        t.answered_after_sigterm == 0,
        "no request was answered after SIGTERM, so the shutdown phase tested nothing".into(),
    );
    fail(
        !t.exit_success,
        format!("the server did not exit cleanly after SIGTERM: {}", t.exit),
    );
    failures
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn outcomes(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.legit;
        writeln!(
            f,
            "soak ({:?}): model {} ({}), server: {}",
            self.mode,
            self.model,
            self.input,
            self.server_args.join(" ")
        )?;
        writeln!(f)?;
        writeln!(f, "legitimate: {} keep-alive connections", l.connections)?;
        writeln!(
            f,
            "  {:>9} {:>9} {:>8} {:>10} {:>8} {:>8}",
            "requests", "ok", "seconds", "req/s", "p50 ms", "p99 ms"
        )?;
        writeln!(
            f,
            "  {:>9} {:>9} {:>8.1} {:>10.1} {:>8.2} {:>8.2}",
            l.requests, l.ok, l.seconds, l.throughput, l.p50_ms, l.p99_ms
        )?;
        writeln!(f, "  outcomes: {}", outcomes(&l.outcomes))?;
        writeln!(f)?;
        let s = &self.hostile.slowloris;
        writeln!(
            f,
            "slowloris ({} senders): {} connections; closed by the header timeout {}, earlier {}, \
             held past the limit {}; closed after {:.0}–{:.0} ms; answers: {}",
            s.senders,
            s.connections,
            s.closed_by_header_timeout,
            s.closed_early,
            s.held_past_limit,
            s.close_ms_min,
            s.close_ms_max,
            outcomes(&s.answers)
        )?;
        let b = &self.hostile.slow_body;
        writeln!(
            f,
            "slow body ({} senders): {} uploads; {}; slowest answer {:.0} ms",
            b.senders,
            b.attempts,
            outcomes(&b.outcomes),
            b.answer_ms_max
        )?;
        let d = &self.hostile.decode_amp;
        writeln!(
            f,
            "decode amplification ({} senders, {} bytes declaring {}): {} uploads; {}; p99 {:.2} \
             ms, max {:.2} ms",
            d.senders,
            d.upload_bytes,
            d.declared,
            d.uploads,
            outcomes(&d.outcomes),
            d.p99_ms,
            d.max_ms
        )?;
        writeln!(f)?;
        let m = &self.memory;
        writeln!(
            f,
            "server RSS (MiB): start {:.1}, before {:.1}, peak {:.1} (cap {:.1}), after {:.1} \
             (bound {:.1})",
            mib(m.start),
            mib(m.before),
            mib(m.peak),
            mib(m.peak_cap),
            mib(m.after),
            mib(m.before + m.margin)
        )?;
        writeln!(f)?;
        let t = &self.shutdown;
        writeln!(
            f,
            "SIGTERM after {:.0} ms of load from {} clients: {} answered after it ({} with \
             Connection: close); allowed: {} refused, {} new connections closed, {} unwritten; \
             cut off: {}; {}; exit in {:.0} ms",
            t.sigterm_after_ms,
            t.clients,
            t.answered_after_sigterm,
            t.closed_with_answer,
            t.refused,
            t.new_connection_closed,
            t.unwritten,
            t.cut_off,
            t.exit,
            t.exit_ms
        )?;
        writeln!(f, "  answers: {}", outcomes(&t.answers))?;
        writeln!(f)?;
        if self.passed() {
            writeln!(f, "PASSED")
        } else {
            writeln!(f, "FAILED:")?;
            for why in &self.failures {
                writeln!(f, "  - {why}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::SoakMode;
    use std::path::PathBuf;

    #[test]
    fn only_200_and_503_with_retry_after_are_allowed() {
        let outcomes: BTreeMap<String, usize> = [
            (OK.to_owned(), 10),
            (OVERLOADED_RETRY.to_owned(), 2),
            ("503 overloaded".to_owned(), 1),
            ("connection error: reset".to_owned(), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            unexpected(&outcomes, &[OK, OVERLOADED_RETRY]),
            vec!["503 overloaded ×1", "connection error: reset ×3"]
        );
    }

    /// A report that passes every check.
    fn passing(o: &SoakOptions) -> SoakReport {
        let mut hostile = HostileStats::default();
        hostile.slowloris.closed_by_header_timeout = 16;
        hostile.slow_body.outcomes = [("408 body_timeout".to_owned(), 16)].into();
        hostile.decode_amp.uploads = 4;
        hostile.decode_amp.outcomes = [("400 wrong_size".to_owned(), 4)].into();
        SoakReport {
            mode: o.mode,
            model: "m".into(),
            input: "3x32x32".into(),
            server_args: Vec::new(),
            legit: LegitStats {
                connections: 64,
                requests: o.requests,
                ok: o.requests,
                seconds: 1.0,
                throughput: 1.0,
                p50_ms: 1.0,
                p99_ms: 1.0,
                outcomes: [(OK.to_owned(), o.requests)].into(),
            },
            hostile,
            memory: MemoryStats {
                start: 20 * MIB,
                before: 30 * MIB,
                peak: 40 * MIB,
                after: 35 * MIB,
                margin: 32 * MIB,
                peak_cap: 100 * MIB,
            },
            shutdown: ShutdownStats {
                answered_after_sigterm: 64,
                answers: [(OK.to_owned(), 100)].into(),
                exit_success: true,
                ..ShutdownStats::default()
            },
            failures: Vec::new(),
        }
    }

    #[test]
    fn every_kind_of_misbehaviour_is_a_failure() {
        let o = SoakOptions::new(SoakMode::Short, PathBuf::from("x"));
        assert_eq!(check(&passing(&o), &o), Vec::<String>::new());
        type Spoil = fn(&mut SoakReport);
        let cases: [(Spoil, &str); 9] = [
            (
                |r| r.memory.after = r.memory.before + r.memory.margin + 1,
                "memory after the run",
            ),
            (|r| r.memory.peak = r.memory.peak_cap + 1, "peak memory"),
            (
                |r| {
                    r.legit.outcomes.insert("503 overloaded".into(), 1);
                },
                "legitimate requests failed: 503 overloaded ×1",
            ),
            (|r| r.legit.requests = 10, "only 10 of"),
            (
                |r| r.hostile.slowloris.closed_by_header_timeout = 0,
                "no slowloris connection",
            ),
            (
                |r| {
                    r.hostile.decode_amp.outcomes.insert(OK.into(), 1);
                },
                "decode-amplification uploads got other answers: 200",
            ),
            (
                |r| r.hostile.slow_body.outcomes.clear(),
                "no slow body was answered",
            ),
            (|r| r.shutdown.cut_off = 2, "2 requests written whole"),
            (|r| r.shutdown.answered_after_sigterm = 0, "tested nothing"),
        ];
        for (spoil, why) in cases {
            let mut r = passing(&o);
            spoil(&mut r);
            let failures = check(&r, &o);
            assert!(
                failures.iter().any(|f| f.contains(why)),
                "{why}: {failures:?}"
            );
        }
    }
}
