//! `audit()`: loads the data and its split, resolves the schemes, audits each (images in
//! `images.rs`, ARDEN's features in `arden.rs`) and writes the report, its Markdown, the plots
//! and the sample grid.

use std::path::Path;

use serde::Serialize;

use scrim_train::backend::Backend;
use scrim_train::data::{self, Dataset, LoadOptions, Split, SplitFractions};
use scrim_train::report::note;
use scrim_train::run::RunDir;

use crate::arden::audit_arden;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::images::audit_images;
use crate::markdown::write_markdown;
use crate::perturb::{Resolved, first_rms, resolve};
use crate::plots::{sample_grid, write_plots};
use crate::reports::{AuditReport, SchemeReport};
use crate::request::{AuditRequest, Scheme};

/// Runs the audit and writes `report.json`, `report.md`, the frontier plot and a sample grid
/// into `req.out`.
///
/// # Errors
/// [`Error::NoScheme`] or [`Error::NoSensitive`] for an empty request, [`Error::BadArden`] and
/// [`Error::UniformNeedsSigma`] for schemes that cannot run, [`Error::SplitMismatch`] when the
/// run's split does not fit the data; data (unknown labels), model and training errors.
pub fn audit(req: &AuditRequest) -> Result<AuditReport> {
    if req.schemes.is_empty() {
        return Err(Error::NoScheme);
    }
    if req.sensitive.is_empty() {
        return Err(Error::NoSensitive);
    }
    let mut size = req.size;
    if let Some(path) = split_run(req) {
        size = RunDir::open(path)?.load_config()?.size;
    }
    let ds = data::load(
        &req.data,
        &LoadOptions {
            size,
            cache: req.cache,
            progress: req.progress,
        },
    )?;
    ds.attribute(&req.desired)?;
    for s in &req.sensitive {
        ds.attribute(s)?;
    }
    let split = audit_split(req, &ds)?;
    std::fs::create_dir_all(&req.out).map_err(|e| Error::io(&req.out, e))?;
    let (train, val, test) = (
        ds.subset(&split.train),
        ds.subset(&split.val),
        ds.subset(&split.test),
    );
    note(&format!(
        "audit: {} train / {} val / {} test images at {size}x{size}; desired {:?}, sensitive {:?}",
        train.len(),
        val.len(),
        test.len(),
        req.desired,
        req.sensitive
    ));
    let started = std::time::Instant::now();
    let device = Backend::Flex.device()?;
    let mut ctx = Context::new(&train, &val, &test, req, device);
    let first_rms = first_rms(&req.schemes, &train)?;
    let resolved = req
        .schemes
        .iter()
        .map(|s| resolve(s, first_rms, &train))
        .collect::<Result<Vec<_>>>()?;

    // What the ARDEN schemes share; set up by the first of them.
    let mut arden = None;
    let mut reports = Vec::new();
    for (scheme, r) in req.schemes.iter().zip(&resolved) {
        let name = r.name(scheme);
        note(&format!("— {name}"));
        let report = match r {
            Resolved::Arden { nullify, laplace_b } => {
                audit_arden(&mut ctx, &mut arden, &name, scheme, *nullify, *laplace_b)?
            }
            Resolved::Images(r) => audit_images(&mut ctx, &name, scheme, r)?,
        };
        note_scheme(&report);
        reports.push(report);
        // Written after every scheme so a long audit that is interrupted keeps what it measured.
        let partial = assemble(req, &ds, &split, reports.clone(), started);
        save_json(&req.out.join("report.json"), &partial)?;
    }
    let report = assemble(req, &ds, &split, reports, started);
    save_json(&req.out.join("report.json"), &report)?;
    write_markdown(&report, &req.out.join("report.md"))?;
    write_plots(&report, &req.out)?;
    sample_grid(&req.schemes, &test, &req.out.join("samples.png"))?;
    Ok(report)
}

/// The run whose split (and image size) the audit uses: `split_from`, else the first audited run.
fn split_run(req: &AuditRequest) -> Option<&Path> {
    req.split_from.as_deref().or_else(|| {
        req.schemes.iter().find_map(|s| match s {
            Scheme::Run { path } => Some(path.as_path()),
            _ => None,
        })
    })
}

/// The split the audit uses: the split run's (so test images were never seen in co-training),
/// else a stratified split with `seed`.
fn audit_split(req: &AuditRequest, ds: &Dataset) -> Result<Split> {
    if let Some(path) = split_run(req) {
        let split = RunDir::open(path)?.load_split()?;
        let max = split
            .train
            .iter()
            .chain(&split.val)
            .chain(&split.test)
            .copied()
            .max()
            .unwrap_or(0);
        if max >= ds.len() {
            return Err(Error::SplitMismatch {
                run: path.to_path_buf(),
                needed: max + 1,
                available: ds.len(),
            });
        }
        return Ok(split);
    }
    Ok(Split::stratified(
        ds,
        &req.desired,
        SplitFractions {
            val: 0.1,
            test: 0.2,
        },
        req.seed,
    )?)
}

fn assemble(
    req: &AuditRequest,
    ds: &Dataset,
    split: &Split,
    schemes: Vec<SchemeReport>,
    started: std::time::Instant,
) -> AuditReport {
    AuditReport {
        data: req.data.to_string(),
        desired: req.desired.clone(),
        sensitive: req.sensitive.clone(),
        split_sizes: [split.train.len(), split.val.len(), split.test.len()],
        desired_majority: ds
            .attribute(&req.desired)
            .map(|a| a.majority_rate(&split.test))
            .unwrap_or(0.0),
        draws: req.draws,
        attacker: req.attacker.clone(),
        recipes: Some(req.recipes.clone()),
        attacker_seeds: req.attacker_seeds.max(1),
        wall_seconds: started.elapsed().as_secs_f64(),
        schemes,
        command: std::iter::once("scrim".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn save_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(Error::Serialize)?;
    std::fs::write(path, json).map_err(|e| Error::io(path, e))
}

/// Tells the user what one scheme measured.
fn note_scheme(r: &SchemeReport) {
    note(&format!(
        "  desired: clean {:.3}, perturbed {:.3} ({}); mean σ {:.3}",
        r.desired_clean.accuracy, r.desired_perturbed.accuracy, r.utility_model, r.mean_sigma
    ));
    for a in &r.attacks {
        let epochs = a.epochs();
        let trained = if epochs.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = epochs.iter().map(usize::to_string).collect();
            format!("; epochs {}; {:.0} s", list.join("/"), a.seconds)
        };
        note(&format!(
            "  {:<10} {:<11} {:.3} ± {:.3} (balanced {:.3}; majority {:.3}{trained})",
            a.attribute,
            a.attacker.name(),
            a.accuracy.accuracy,
            a.ci95,
            a.accuracy.balanced,
            a.majority
        ));
    }
    for n in &r.notes {
        note(&format!("  note: {n}"));
    }
    if let Some(rec) = &r.reconstruction {
        note(&format!(
            "  reconstruction: PSNR {:.2} dB, SSIM {:.3} (perturbed input: {:.2} dB, {:.3})",
            rec.psnr, rec.ssim, rec.input_psnr, rec.input_ssim
        ));
    }
}
