//! Export of trained networks to ONNX (through scrim-core's writer) with their manifests, and the
//! check that tract reproduces burn's outputs.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use scrim_core::manifest::{Manifest, PerturberOutput, PerturberSpec};
use scrim_core::onnx::{Conv, GraphBuilder, Value};
use scrim_core::release::BoundedRelease;
use scrim_core::{BatchMode, InputSpec, Model, NoiseKind};

use crate::batch;
use crate::data::Dataset;
use crate::nets::{BoundedEncoder, FastConv2d, GlobalView, LUMA, Perturber, Recognizer};
use crate::run::RunDir;
use crate::{Error, Result};

struct ConvWeights {
    w: Vec<f32>,
    shape: [usize; 4],
    b: Option<Vec<f32>>,
    stride: usize,
    pad: usize,
    groups: usize,
}

fn conv_weights(conv: &FastConv2d) -> ConvWeights {
    // Every convolution here is padded symmetrically (or not at all).
    let pad = match conv.padding {
        PaddingConfig2d::Explicit(top, ..) => top,
        PaddingConfig2d::Same => conv.kernel_size[0] / 2,
        PaddingConfig2d::Valid => 0,
    };
    let weight = conv.weight.val();
    let shape = weight.dims();
    ConvWeights {
        w: batch::to_vec(weight),
        shape,
        b: conv.bias.as_ref().map(|b| batch::to_vec(b.val())),
        stride: conv.stride[0],
        pad,
        groups: conv.groups,
    }
}

fn emit_conv(g: &mut GraphBuilder, x: &Value, cw: &ConvWeights) -> Value {
    let mut c = Conv::new(&cw.w, cw.shape)
        .stride(cw.stride)
        .pad(cw.pad)
        .groups(cw.groups);
    if let Some(b) = &cw.b {
        c = c.bias(b);
    }
    g.conv(x, c)
}

/// Nearest upsampling back to the input resolution when σ is computed at a lower one (only
/// where a low-resolution map meets a full-resolution one inside the graph: the maps
/// themselves leave the graph at their own resolution and the device expands them).
fn upsample(g: &mut GraphBuilder, x: &Value, factor: usize) -> Value {
    if factor > 1 {
        g.upsample_nearest(x, factor)
    } else {
        x.clone()
    }
}

/// The perturber's ONNX outputs, in order: `sigma`, then `shift` and `keep` when it has them.
pub fn perturber_outputs(p: &Perturber) -> Vec<PerturberOutput> {
    let mut outputs = vec![PerturberOutput::Sigma];
    // Tone standardisation is computed by the device, not the graph (`PerturberSpec::
    // standardize`); the plain grey conversion stays in the graph.
    if (p.gray && !p.standardize) || p.shift.is_some() {
        outputs.push(PerturberOutput::Shift);
    }
    if p.suppress {
        outputs.push(PerturberOutput::Keep);
    }
    outputs
}

/// The manifest that travels with a perturber's ONNX: what the device must do around the graph
/// (noise kind, σ_max, the outputs it expands, suppression fill, tone standardisation).
pub fn perturber_manifest(p: &Perturber, input: InputSpec, noise: NoiseKind) -> Manifest {
    if let Some(b) = &p.bounded {
        let release = bounded_release(b, input);
        return Manifest::perturber(
            "scrim-perturber",
            input,
            PerturberSpec::bounded(release, b.fill as f32),
        );
    }
    Manifest::perturber(
        "scrim-perturber",
        input,
        PerturberSpec {
            sigma_max: p.sigma_max as f32,
            noise,
            outputs: perturber_outputs(p),
            fill: p.fill as f32,
            standardize: p.standardize,
            release: None,
            erase: p.erase.as_ref().map(|e| e.to_core()),
        },
    )
}

/// The release a bounded encoder renders on `input`: its map side follows from the stride-2
/// convolutions, its channels from the head.
pub fn bounded_release(b: &BoundedEncoder, input: InputSpec) -> BoundedRelease {
    let down: usize = b.convs.iter().map(|c| c.stride[0]).product();
    BoundedRelease::new(
        input.height / down.max(1),
        b.head.weight.dims()[0],
        b.amplitude as f32,
        b.sigma as f32,
        input.height,
    )
}

/// A bounded encoder as ONNX: input `image [N,3,H,W]`, output `map [N,C,R,R]` =
/// `fill + A·tanh(head(convs(x)))`.
fn bounded_onnx(b: &BoundedEncoder, input: InputSpec) -> Vec<u8> {
    let mut g = GraphBuilder::new("scrim_bounded_release");
    g.doc("Scrim bounded release: image in [0,1] -> low-resolution map in fill +- amplitude");
    let mut h = g.image_input("image", 3, input.height, input.width);
    for conv in &b.convs {
        h = emit_conv(&mut g, &h, &conv_weights(conv));
        h = g.relu(&h);
    }
    let z = emit_conv(&mut g, &h, &conv_weights(&b.head));
    let t = g.tanh(&z);
    let t = g.scale(&t, b.amplitude as f32);
    let map = g.offset(&t, b.fill as f32);
    g.output(&map, "map");
    g.finish()
}

/// The perturber as ONNX: input `image [N,3,H,W]`, outputs `sigma` and, when present, `shift`
/// and `keep` (see [`perturber_outputs`]), each `[N,3,H/D,W/D]` for a perturber that computes
/// its maps at `1/D` resolution (`D` = 1 by default); a shift that includes the grey or tone
/// transform is at full resolution.
pub fn perturber_onnx(p: &Perturber, input: InputSpec) -> Vec<u8> {
    if let Some(b) = &p.bounded {
        return bounded_onnx(b, input);
    }
    let mut g = GraphBuilder::new("scrim_perturber");
    g.doc("Scrim perturber: image in [0,1] -> per-pixel noise scale sigma (+ shift, keep)");
    let x = g.image_input("image", 3, input.height, input.width);
    let mut h = x.clone();
    let z = if let Some(map) = &p.map {
        // Input-independent: a constant map, broadcast over the batch (x·0 carries the shape).
        let m = map.val();
        let zero = g.scale(&x, 0.0);
        let c = g.constant("sigma_map", &m.dims(), &batch::to_vec(m));
        g.add(&zero, &c)
    } else {
        if let Some(gv) = &p.global {
            h = global_view_onnx(&mut g, &h, gv);
        }
        for conv in &p.hidden {
            h = emit_conv(&mut g, &h, &conv_weights(conv));
            h = g.relu(&h);
        }
        // σ, k and μ stay at the head's resolution: nearest upsampling commutes with
        // element-wise ops, so the device expands the maps as it adds the noise (scrim-core's
        // `Perturber::maps`) and the graph does no full-resolution work for them.
        emit_conv(&mut g, &h, &conv_weights(&p.head))
    };
    let s = g.sigmoid(&z);
    let sigma = g.scale(&s, p.sigma_max as f32);
    g.output(&sigma, "sigma");
    let learned = p.shift.as_ref().map(|conv| {
        let t = emit_conv(&mut g, &h, &conv_weights(conv));
        let t = g.tanh(&t);
        g.scale(&t, p.shift_max as f32)
    });
    // Tone standardisation is left to the device (see `perturber_outputs`).
    let gray = if p.standardize {
        None
    } else {
        p.gray.then(|| {
            // A 1×1 conv with weights luma − identity: out_o = Σ_i L_i x_i − x_o.
            let w: Vec<f32> = (0..3)
                .flat_map(|o| (0..3).map(move |i| LUMA[i] - if i == o { 1.0 } else { 0.0 }))
                .collect();
            g.conv(&x, Conv::new(&w, [3, 3, 1, 1]))
        })
    };
    let shift = match (gray, learned) {
        // The fixed transform is per pixel: the learned part joins it at full resolution.
        (Some(a), Some(b)) => {
            let b = upsample(&mut g, &b, p.downsample);
            Some(g.add(&a, &b))
        }
        (a, b) => a.or(b),
    };
    if let Some(shift) = shift {
        g.output(&shift, "shift");
    }
    if p.suppress {
        let neg = g.scale(&z, -1.0);
        let keep = g.sigmoid(&neg);
        g.output(&keep, "keep");
    }
    g.finish()
}

/// A global view's features ([`GlobalView::forward`]) into `g`.
fn global_view_onnx(g: &mut GraphBuilder, x: &Value, gv: &GlobalView) -> Value {
    let mut convs = gv.convs.iter();
    let Some(first) = convs.next() else {
        return x.clone();
    };
    let f1 = emit_conv(g, x, &conv_weights(first));
    let f1 = g.relu(&f1);
    let mut h = f1.clone();
    for conv in convs {
        if conv.stride[0] == 1 {
            let mean = g.global_avg_pool(&h);
            h = g.add(&h, &mean);
        }
        h = emit_conv(g, &h, &conv_weights(conv));
        h = g.relu(&h);
    }
    let up = upsample(g, &h, gv.factor);
    let skip = emit_conv(g, &f1, &conv_weights(&gv.skip));
    let sum = g.add(&up, &skip);
    g.relu(&sum)
}

/// The recognizer as ONNX: input `image [N,3,H,W]`, output `logits [N,K]`.
pub fn recognizer_onnx(c: &Recognizer, input: InputSpec) -> Vec<u8> {
    let mut g = GraphBuilder::new("scrim_recognizer");
    g.doc("Scrim recognizer: perturbed image in [0,1] -> class logits");
    let mut h = g.image_input("image", 3, input.height, input.width);
    for b in &c.blocks {
        h = emit_conv(&mut g, &h, &conv_weights(&b.conv));
        let bn = &b.bn;
        h = g.batch_norm(
            &h,
            &batch::to_vec(bn.gamma.val()),
            &batch::to_vec(bn.beta.val()),
            &batch::to_vec(bn.running_mean.value()),
            &batch::to_vec(bn.running_var.value()),
            bn.epsilon as f32,
        );
        h = g.relu(&h);
        h = g.max_pool(&h, 2, 2, 0);
    }
    let pooled = g.global_avg_pool(&h);
    let flat = g.flatten(&pooled);
    let w = c.fc.weight.val();
    let shape = w.dims();
    let bias = c.fc.bias.as_ref().map(|b| batch::to_vec(b.val()));
    let logits = g.linear(&flat, &batch::to_vec(w), shape, bias.as_deref());
    g.output(&logits, "logits");
    g.finish()
}

/// What [`export`] checked.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExportCheck {
    /// Images compared.
    pub images: usize,
    /// max |tract − burn| of σ.
    pub perturber_max_abs_diff: f32,
    /// max |tract − burn| of the logits.
    pub recognizer_max_abs_diff: f32,
}

/// Tolerance of the tract-vs-burn check.
pub const EXPORT_TOLERANCE: f32 = 1e-4;

/// Writes `perturber.onnx`, `recognizer.onnx` and their manifests into the run, then runs both
/// in tract and in burn on `check` images and requires them to agree within
/// [`EXPORT_TOLERANCE`].
///
/// # Errors
/// [`Error::ExportMismatch`] when tract and burn disagree; I/O and model errors otherwise.
#[allow(clippy::too_many_arguments)]
pub fn export(
    run: &RunDir,
    perturber: &Perturber,
    recognizer: &Recognizer,
    ds: &Dataset,
    desired: &str,
    noise: NoiseKind,
    check: &[usize],
    device: &Device,
) -> Result<ExportCheck> {
    let input = ds.input();
    let p = perturber.valid();
    let c = recognizer.valid();
    let attr = ds.attribute(desired)?;
    // Both models get the same run name and a fresh run id: the SDK and the CLI refuse to pair
    // a perturber with another run's recognizer.
    let run_name = run_name(run);
    let run_id = scrim_core::manifest::new_run_id()?;
    let p_manifest = perturber_manifest(&p, input, noise).with_run(&run_name, &run_id);
    let c_manifest =
        Manifest::recognizer("scrim-recognizer", input, &attr.name, attr.classes.clone())
            .with_run(&run_name, &run_id);
    let p_bytes = scrim_core::onnx::with_model_card(&perturber_onnx(&p, input), &p_manifest)?;
    let c_bytes = scrim_core::onnx::with_model_card(&recognizer_onnx(&c, input), &c_manifest)?;
    for (path, bytes, manifest) in [
        (run.perturber_onnx(), &p_bytes, &p_manifest),
        (run.recognizer_onnx(), &c_bytes, &c_manifest),
    ] {
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        manifest.save(&Manifest::path_for(&path))?;
    }
    let tp = Model::load(&p_bytes, p_manifest, BatchMode::Dynamic)?;
    let tc = Model::load(&c_bytes, c_manifest, BatchMode::Dynamic)?;
    let x = batch::images(ds, check, device);
    let xs = batch::to_image_tensor(x.clone());
    // Every perturber output (σ, then shift and keep when present; a bounded release's map),
    // concatenated.
    let out = p.forward(x.clone());
    if let Some(map) = out.map {
        let burn_map = batch::to_vec(map);
        let tract_map = &tp.run(&xs)?[0].data;
        let burn_logits = batch::to_vec(c.forward(x));
        let tract_logits = &tc.run(&xs)?[0].data;
        return finish_check(
            run,
            ExportCheck {
                images: check.len(),
                perturber_max_abs_diff: max_abs_diff(&burn_map, tract_map),
                recognizer_max_abs_diff: max_abs_diff(&burn_logits, tract_logits),
            },
        );
    }
    let mut burn_sigma = batch::to_vec(out.sigma);
    for t in [out.shift, out.keep].into_iter().flatten() {
        burn_sigma.extend(batch::to_vec(t));
    }
    // The maps as the device forms them: low-resolution maps upsampled, the device's own tone
    // standardisation added to the shift.
    let spec = tp
        .manifest()
        .perturber
        .clone()
        .ok_or_else(|| Error::Internal("perturber manifest without its section".into()))?;
    let maps = scrim_core::perturb::maps_from_outputs(&spec, &xs, tp.run(&xs)?)?;
    let mut tract_sigma = maps.sigma.into_data();
    for t in [maps.shift, maps.keep].into_iter().flatten() {
        tract_sigma.extend(t.into_data());
    }
    let burn_logits = batch::to_vec(c.forward(x));
    let tract_logits = &tc.run(&xs)?[0].data;
    let report = ExportCheck {
        images: check.len(),
        perturber_max_abs_diff: max_abs_diff(&burn_sigma, &tract_sigma),
        recognizer_max_abs_diff: max_abs_diff(&burn_logits, tract_logits),
    };
    finish_check(run, report)
}

/// The largest `|a − b|` over the pairs of `a` and `b`; infinite where either side is NaN or
/// infinite (`f32::max` would skip a NaN, and a graph that outputs NaN would pass the check).
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_finite() { d } else { f32::INFINITY }
        })
        .fold(0.0f32, f32::max)
}

/// A run's name: its folder's name (`runs/utk` → `utk`), at most
/// [`scrim_core::manifest::MAX_RUN_NAME`] characters.
pub fn run_name(run: &RunDir) -> String {
    let name = run
        .path()
        .canonicalize()
        .unwrap_or_else(|_| run.path().to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    name.chars()
        .filter(|c| !c.is_control())
        .take(scrim_core::manifest::MAX_RUN_NAME)
        .collect()
}

/// Fails when either difference is over [`EXPORT_TOLERANCE`], else saves the check in the run.
fn finish_check(run: &RunDir, report: ExportCheck) -> Result<ExportCheck> {
    if report.perturber_max_abs_diff > EXPORT_TOLERANCE
        || report.recognizer_max_abs_diff > EXPORT_TOLERANCE
    {
        return Err(Error::ExportMismatch {
            sigma: report.perturber_max_abs_diff,
            logits: report.recognizer_max_abs_diff,
            tolerance: EXPORT_TOLERANCE,
        });
    }
    run.save_json("export-check.json", &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::max_abs_diff;

    #[test]
    fn a_nan_or_infinite_output_is_an_infinite_difference() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert_eq!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[f32::NAN]), f32::INFINITY);
        assert_eq!(
            max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]),
            f32::INFINITY
        );
    }
}
