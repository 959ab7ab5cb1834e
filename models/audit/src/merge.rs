//! Merging audit reports of the same data and split into one (`scrim results`).

use crate::error::{Audited, Error, Result};
use crate::reports::{AuditReport, SchemeReport};

/// True when two data specs name the same data: equal strings, or the same kind with paths that
/// resolve to the same file (an audit run from another folder writes `../x` or `/abs/x`).
fn same_data(a: &str, b: &str) -> bool {
    let canonical = |spec: &str| {
        let (kind, rest) = spec.split_once(':')?;
        let (path, sub) = rest.split_once('#').unwrap_or((rest, ""));
        Some((
            kind.to_string(),
            std::fs::canonicalize(path).ok()?,
            sub.to_string(),
        ))
    };
    a == b || canonical(a).is_some_and(|x| Some(x) == canonical(b))
}

/// Merges audits of the same data, desired label and split into one report (schemes keep their
/// order; a scheme name seen twice keeps its first measurement).
///
/// # Errors
/// [`Error::NoReport`] for no reports, [`Error::Incompatible`] when they audit different data,
/// labels or splits.
pub fn merge(reports: Vec<AuditReport>) -> Result<AuditReport> {
    let mut it = reports.into_iter();
    let mut merged = it.next().ok_or(Error::NoReport)?;
    for r in it {
        if !same_data(&r.data, &merged.data)
            || r.desired != merged.desired
            || r.split_sizes != merged.split_sizes
        {
            return Err(Error::Incompatible {
                report: Box::new(audited(&r)),
                into: Box::new(audited(&merged)),
            });
        }
        for s in &r.sensitive {
            if !merged.sensitive.contains(s) {
                merged.sensitive.push(s.clone());
            }
        }
        merge_schemes(&mut merged.schemes, r.schemes);
        merged.command = format!("{}\n{}", merged.command, r.command);
    }
    Ok(merged)
}

/// What `report` audited.
fn audited(report: &AuditReport) -> Audited {
    Audited {
        data: report.data.clone(),
        desired: report.desired.clone(),
        split: report.split_sizes,
    }
}

/// Adds `from` to `into`: new schemes are appended; a scheme already there (same name, e.g.
/// audited again with other attackers) gains the attacks it lacks, and an attack measured twice
/// keeps the first number.
fn merge_schemes(into: &mut Vec<SchemeReport>, from: Vec<SchemeReport>) {
    for s in from {
        match into.iter_mut().find(|m| m.name == s.name) {
            // The same scheme audited again (e.g. with other attackers): its new attacks
            // join the first report's; an attack measured twice keeps the first number.
            Some(m) => {
                for a in s.attacks {
                    if !m
                        .attacks
                        .iter()
                        .any(|b| b.attribute == a.attribute && b.attacker == a.attacker)
                    {
                        m.attacks.push(a);
                    }
                }
                m.reconstruction = m.reconstruction.or(s.reconstruction);
                for n in s.notes {
                    if !m.notes.contains(&n) {
                        m.notes.push(n);
                    }
                }
            }
            None => into.push(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::fixtures::{report, scheme};
    use crate::request::Attack;

    #[test]
    fn a_scheme_audited_twice_gains_the_attacks_it_lacked() {
        let mut into = vec![scheme("run", &[("race", Attack::Cnn, 0.5)])];
        let from = vec![
            scheme(
                "run",
                &[("race", Attack::Cnn, 0.9), ("race", Attack::Blur, 0.6)],
            ),
            scheme("other", &[("race", Attack::Cnn, 0.7)]),
        ];
        merge_schemes(&mut into, from);
        assert_eq!(into.len(), 2);
        let run = &into[0];
        assert_eq!(run.attacks.len(), 2);
        // The first measurement of an attack is kept; the new attacker joins it.
        assert_eq!(
            run.best_attack("race").map(|a| a.attacker),
            Some(Attack::Blur)
        );
        assert!((run.attacks[0].accuracy.accuracy - 0.5).abs() < 1e-12);
    }

    #[test]
    fn data_specs_match_by_resolved_path() {
        let dir = std::env::temp_dir();
        let abs = format!("utkface:{}", dir.display());
        let dotted = format!(
            "utkface:{}/../{}",
            dir.display(),
            dir.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        );
        assert!(same_data(&abs, &abs));
        assert!(same_data(&abs, &dotted));
        assert!(!same_data(&abs, &format!("csv:{}", dir.display())));
        assert!(!same_data("synthetic:100", "synthetic:200"));
    }

    #[test]
    fn reports_of_other_data_do_not_merge() {
        let e = merge(vec![
            report(
                "synthetic:100",
                vec![scheme("run", &[("texture", Attack::Cnn, 0.5)])],
            ),
            report(
                "synthetic:200",
                vec![scheme("run", &[("texture", Attack::Cnn, 0.5)])],
            ),
        ])
        .expect_err("different data");
        assert_eq!(
            e.to_string(),
            "cannot merge an audit of synthetic:200 (shape; split [1, 2, 3]) with one of \
             synthetic:100 (shape; split [1, 2, 3])"
        );
        assert!(matches!(merge(Vec::new()), Err(Error::NoReport)));
        let merged = merge(vec![
            report(
                "synthetic:100",
                vec![scheme("run", &[("texture", Attack::Cnn, 0.5)])],
            ),
            report(
                "synthetic:100",
                vec![scheme("run", &[("texture", Attack::Cnn, 0.5)])],
            ),
        ]);
        assert_eq!(merged.map(|m| m.schemes.len()).ok(), Some(1));
    }
}
