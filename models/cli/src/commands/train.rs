//! `scrim train`: co-train a perturber and a recognizer, export both, test them.

use std::path::PathBuf;

use scrim_core::{NoiseKind, Scheme};
use scrim_train::backend::Backend;
use scrim_train::config::TrainConfig;
use scrim_train::cotrain::AdversaryKind;
use scrim_train::data::DataSpec;
use scrim_train::keyed::BlockKeyConfig;
use scrim_train::nets::{GLOBAL_ENCODER_WIDTHS, PerturberLayout, SIGMA_INIT, head_bias_for};
use scrim_train::workflow::{TrainRequest, train_run};

/// The library's defaults: every flag's default is read from here, never written twice.
fn d() -> TrainConfig {
    TrainConfig::for_data(&DataSpec::Synthetic(Default::default()), "")
}

/// `scrim train` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data: utkface:DIR, imagefolder:DIR[#SUBDIR], csv:FILE or synthetic[:N]. DIR may be a .tar.gz.
    #[arg(long)]
    data: DataSpec,
    /// The label the cloud recognizer must keep (e.g. gender; `shape` for synthetic).
    #[arg(long)]
    desired: String,
    /// The label to hide (e.g. race); needed for --adversarial, recorded for the audit.
    #[arg(long)]
    sensitive: Option<String>,
    /// Input size in pixels (square).
    #[arg(long, default_value_t = d().size)]
    size: usize,
    /// Privacy/utility trade-off λ in CE − λ·mean(log σ).
    #[arg(long, default_value_t = d().lambda)]
    lambda: f64,
    /// Utility-constrained mode: adapt λ by dual ascent so the recognizer's accuracy on
    /// perturbed validation images stays at this fraction (e.g. 0.871 = clean 0.891 − 2
    /// points); --lambda becomes the starting value.
    #[arg(long)]
    target_accuracy: Option<f64>,
    /// Step of the dual ascent on log λ per accuracy unit (with --target-accuracy).
    #[arg(long, default_value_t = d().dual_rate)]
    dual_rate: f64,
    /// Epochs (warm-up included) [default: 16 for the bounded release with --sensitive, else 12].
    #[arg(long)]
    epochs: Option<usize>,
    /// Recognizer-only warm-up epochs on clean images [default: 2; 0 for the bounded layout].
    #[arg(long)]
    warmup: Option<usize>,
    /// The last N epochs (counted in --epochs) train the recognizer alone on the frozen
    /// perturber's output, so the cloud model ends adapted to the final perturbation.
    #[arg(long, default_value_t = d().finetune_epochs)]
    finetune_epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = d().batch_size)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = d().learning_rate)]
    lr: f64,
    /// The perturber's learning rate as a multiple of --lr.
    #[arg(long, default_value_t = d().perturber_lr_scale)]
    perturber_lr_scale: f64,
    /// Initial σ as a fraction of σ_max (sets the σ head's bias).
    #[arg(long, default_value_t = SIGMA_INIT)]
    sigma_init: f64,
    /// Upper bound of σ.
    #[arg(long, default_value_t = d().perturber.sigma_max)]
    sigma_max: f64,
    /// Noise kind: gaussian or laplace.
    #[arg(long, default_value = "gaussian")]
    noise: NoiseKind,
    /// Recognizer widths, comma-separated (depth = count).
    #[arg(long, value_delimiter = ',', default_values_t = d().recognizer.widths)]
    widths: Vec<usize>,
    /// Train an adversary on the sensitive label and reward the perturber for defeating it.
    #[arg(long)]
    adversarial: bool,
    /// A pool of adversaries trained on every batch, comma-separated kinds: cnn (the upload),
    /// blur (its 3×3 blur), variance (its local noise level), linear (logistic regression). The
    /// perturber is rewarded on the worst of them; --adversary-reset restarts each member on
    /// that period, at staggered epochs. Needs --sensitive.
    #[arg(long, value_delimiter = ',')]
    adversary_pool: Vec<AdversaryKind>,
    /// Widths of the pool's CNN adversaries, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = d().adversary_widths)]
    adversary_widths: Vec<usize>,
    /// Weight of the adversarial term.
    #[arg(long, default_value_t = d().adversary_weight)]
    adversary_weight: f64,
    /// Distillation weight: the recognizer also matches the soft labels of a frozen teacher
    /// (itself after warm-up) that sees each image without noise (0 = off).
    #[arg(long, default_value_t = d().distill)]
    distill: f64,
    /// Weight of the attacker-free term: the perturber also lowers the dependence (normalised
    /// HSIC) of the noise-free upload on the sensitive label within each desired class, what an
    /// attacker who averages many uploads reads; no adversary to overfit (0 = off; needs
    /// --sensitive; e.g. --hsic 2) [default: 0.5 for the bounded release with --sensitive, else 0].
    #[arg(long)]
    hsic: Option<f64>,
    /// Co-training epochs over which --hsic's weight rises from 0 (first co-training epoch)
    /// to its value, so the release learns the desired label before the term shapes it (0 = in
    /// full from the first step) [default: 3 for the bounded release with --sensitive, else 0].
    #[arg(long)]
    hsic_ramp: Option<usize>,
    /// More labels the attacker-free term takes out of the release besides --sensitive,
    /// comma-separated, each with --hsic's weight (e.g. --sensitive race --also-hide age_group).
    #[arg(long, value_delimiter = ',')]
    also_hide: Vec<String>,
    /// Re-initialise the adversary every K co-training epochs (0 = never), so the perturber
    /// cannot settle on fooling one adversary.
    #[arg(long, default_value_t = d().adversary_reset_epochs)]
    adversary_reset: usize,
    /// Update steps of every adversary per perturber step, each on a fresh noise draw of the
    /// batch (with --adversarial or --adversary-pool): the adversaries see several draws of
    /// every image, as an attacker who holds the perturber does.
    #[arg(long, default_value_t = d().adversary_steps)]
    adversary_steps: usize,
    /// Keep the epoch where a freshly trained attacker (linear or cnn: on uploads of 4,000
    /// training images, two draws each, scored on the validation split) reads the least of
    /// --sensitive, among the epochs within --select-tolerance of the best validation
    /// accuracy, not the one with the lowest validation objective. Costs that attacker's
    /// training at every eligible epoch; every scored epoch's networks stay in the run folder.
    #[arg(long)]
    select_attacker: Option<AdversaryKind>,
    /// With --select-attacker: how far below the best validation accuracy (a fraction) the
    /// kept epoch may be.
    #[arg(long, default_value_t = d().select_tolerance)]
    select_tolerance: f64,
    /// Upload luma only: a fixed grey conversion on the device before the noise.
    #[arg(long)]
    gray: bool,
    /// Tone standardisation (implies --gray): each image's luma is shifted and scaled to a
    /// fixed mean and contrast on the device, removing overall brightness such as skin tone.
    #[arg(long)]
    standardize: bool,
    /// Linear concept erasure (LEACE) of --sensitive: a fixed correction of rank classes − 1,
    /// fitted on the training split after the grey or tone transform and applied on the device
    /// before suppression and noise. Every class of the label then has the same mean image, so
    /// a linear classifier of the erased images reads it no better than the majority rate; the
    /// noise is left to hide what is nonlinear. Not with the bounded release (choose --layout,
    /// e.g. --layout global --standardize --suppress --erase).
    #[arg(long)]
    erase: bool,
    /// Suppression: pixels fade to mid-grey where σ saturates (k = 1 − σ/σ_max).
    #[arg(long)]
    suppress: bool,
    /// Add a learned deterministic shift μ(x) bounded by this value (0 = off; useful with
    /// --adversarial).
    #[arg(long, default_value_t = d().perturber.shift_max)]
    shift_max: f64,
    /// Baseline: one learned σ map for every image (Cloak-style, input-independent).
    #[arg(long, conflicts_with_all = ["separable", "depthwise"])]
    input_independent: bool,
    /// Channels of the perturber's hidden convolutions (fewer = faster on the phone).
    #[arg(long, default_value_t = d().perturber.channels)]
    perturber_channels: usize,
    /// Compute σ at 1/D of the input resolution and upsample it (faster on the phone; 1 = off).
    #[arg(long, default_value_t = d().perturber.downsample)]
    downsample: usize,
    /// Depthwise-separable perturber: a D×D patch stem (D = --downsample), depthwise 3×3
    /// convolutions and 1×1 heads; about 2× faster in tract than the dense layout.
    #[arg(long)]
    separable: bool,
    /// Fully depthwise perturber: every convolution (a D×D patch stem, depthwise 3×3 layers and
    /// heads) works on each colour channel alone; the fastest layout in tract.
    #[arg(long, conflicts_with = "separable")]
    depthwise: bool,
    /// Bounded-capacity release: the phone uploads an R×R map (R = --release-side) of bounded
    /// amplitude that an encoder renders from the whole face, upsampled, plus Gaussian noise of
    /// a fixed σ; nothing else of the photo reaches the upload, and the manifest states the
    /// most bits one upload can carry. λ and σ_max do not apply; warm-up defaults to 0. The
    /// default for utkface: data (same as --layout bounded).
    #[arg(long, conflicts_with_all = ["input_independent", "separable", "depthwise"])]
    bounded: bool,
    /// The perturber's architecture: dense, separable, depthwise, input-independent, bounded
    /// or global [default: bounded for utkface: data, dense otherwise]. global: an encoder down
    /// to an R×R bottleneck (R = --release-side) and back to half resolution through a skip
    /// connection, so σ, the keep fraction and the shift depend on the whole face; the upload
    /// is the photo, perturbed. --bounded, --separable, --depthwise and --input-independent are
    /// shortcuts for it.
    #[arg(long, conflicts_with_all = ["input_independent", "separable", "depthwise", "bounded"])]
    layout: Option<PerturberLayout>,
    /// Side R of the bounded release's map, or of the global view's bottleneck (the input size
    /// divided by a power of two).
    #[arg(long, default_value_t = d().perturber.release_side)]
    release_side: usize,
    /// Channels of the bounded release's map: 1 (grey) or 3.
    #[arg(long, default_value_t = d().perturber.release_channels)]
    release_channels: usize,
    /// The bounded release's map lies in 0.5 ± this amplitude.
    #[arg(long, default_value_t = d().perturber.release_amplitude)]
    release_amplitude: f64,
    /// σ of the bounded release's noise (fixed; more noise, fewer bits per upload).
    #[arg(long, default_value_t = d().perturber.release_sigma)]
    release_sigma: f64,
    /// Widths of the bounded release's or the global view's encoder, comma-separated: one
    /// stride-2 3×3 convolution per halving from --size to --release-side, then 3×3
    /// convolutions at that side [default: 16,32,48,48 bounded; 16,32,32,32 global].
    #[arg(long, value_delimiter = ',')]
    encoder_widths: Option<Vec<usize>>,
    /// Weight of a training-only linear probe of the desired label on the bounded release's
    /// noiseless map, which gives the encoder a direct gradient toward drawing the desired
    /// label (0 = off; never exported).
    #[arg(long, default_value_t = d().perturber.release_probe)]
    release_probe: f64,
    /// Seed (initialisation, shuffling, training noise, split).
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// Backend: flex (default), ndarray or wgpu (cargo features).
    #[arg(long, default_value_t = d().backend)]
    backend: Backend,
    /// Noise draws averaged in the final test evaluation.
    #[arg(long, default_value_t = 3)]
    draws: usize,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Do not read or write the decoded-image cache.
    #[arg(long)]
    no_cache: bool,
    /// Train the recognizer behind a key-based block-wise transform with this key file
    /// (`scrim keygen`); the recognizer's manifest records the scheme and block size.
    #[arg(long, requires = "block_scheme")]
    block_key: Option<PathBuf>,
    /// Block-wise scheme for --block-key: shuffle, np, ffx or patch.
    #[arg(long, requires = "block_key")]
    block_scheme: Option<Scheme>,
    /// Block size M for --block-key.
    #[arg(long, default_value_t = 4)]
    block: usize,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
}

impl Args {
    /// The flags as a training request (checked by [`TrainConfig::validate`] when it runs).
    fn request(self) -> TrainRequest {
        let mut req = TrainRequest::new(self.data, &self.desired, self.out);
        let c = &mut req.config;
        c.sensitive = self.sensitive;
        c.size = self.size;
        c.lambda = self.lambda;
        c.target_accuracy = self.target_accuracy;
        c.dual_rate = self.dual_rate;
        c.finetune_epochs = self.finetune_epochs;
        c.batch_size = self.batch_size;
        c.learning_rate = self.lr;
        c.perturber_lr_scale = self.perturber_lr_scale;
        c.noise = self.noise;
        c.recognizer.widths = self.widths;
        c.adversarial = self.adversarial;
        c.adversary_pool = self.adversary_pool.clone();
        c.adversary_widths = self.adversary_widths.clone();
        c.adversary_weight = self.adversary_weight;
        c.adversary_reset_epochs = self.adversary_reset;
        c.adversary_steps = self.adversary_steps;
        c.select_attacker = self.select_attacker;
        c.select_tolerance = self.select_tolerance;
        c.distill = self.distill;
        c.seed = self.seed;
        c.backend = self.backend;
        let p = &mut c.perturber;
        p.sigma_max = self.sigma_max;
        p.head_bias = head_bias_for(self.sigma_init);
        p.gray = self.gray || self.standardize;
        p.standardize = self.standardize;
        p.suppress = self.suppress;
        p.erase = self.erase;
        p.shift_max = self.shift_max;
        p.channels = self.perturber_channels;
        p.downsample = self.downsample;
        // Without a choice, the data's default stays (TrainConfig::for_data: bounded for faces).
        let shortcut = [
            (self.input_independent, PerturberLayout::InputIndependent),
            (self.separable, PerturberLayout::Separable),
            (self.depthwise, PerturberLayout::Depthwise),
            (self.bounded, PerturberLayout::Bounded),
        ]
        .into_iter()
        .find_map(|(on, layout)| on.then_some(layout));
        if let Some(layout) = self.layout.or(shortcut) {
            p.layout = layout;
        }
        // The data's default warm-up belongs to its default layout: a layout chosen here brings
        // its own (faces trained with --layout dense warm up as on any other data).
        let warmup = TrainConfig::default_warmup_epochs(p.layout);
        if p.layout == PerturberLayout::Global {
            p.release_side = self.release_side;
            p.encoder_widths = self
                .encoder_widths
                .clone()
                .unwrap_or_else(|| GLOBAL_ENCODER_WIDTHS.to_vec());
        }
        if p.layout == PerturberLayout::Bounded {
            p.release_side = self.release_side;
            p.release_channels = self.release_channels;
            p.release_amplitude = self.release_amplitude;
            p.release_sigma = self.release_sigma;
            if let Some(widths) = &self.encoder_widths {
                p.encoder_widths = widths.clone();
            }
            p.release_probe = self.release_probe;
        }
        c.warmup_epochs = self.warmup.unwrap_or(warmup);
        let private = TrainConfig::sensitive_defaults(c.perturber.layout, c.sensitive.is_some());
        c.hsic = self.hsic.unwrap_or(private.hsic);
        c.hsic_ramp_epochs = self.hsic_ramp.unwrap_or(private.hsic_ramp_epochs);
        c.also_hide = self.also_hide;
        c.epochs = self.epochs.unwrap_or(private.epochs);
        if let (Some(key), Some(scheme)) = (self.block_key, self.block_scheme) {
            // An absolute path, so `--resume` works from another directory.
            let key = key.canonicalize().unwrap_or(key).display().to_string();
            c.block_key = Some(BlockKeyConfig::new(key, scheme.to_string()).with_block(self.block));
        }
        req.resume = self.resume;
        req.cache = !self.no_cache;
        req.progress = true;
        req.draws = self.draws;
        req
    }
}

/// Runs `scrim train`.
///
/// # Errors
/// Bad options, data, training and export errors.
pub fn run(args: Args) -> anyhow::Result<()> {
    let s = train_run(&args.request())?;
    println!(
        "test accuracy ({}): clean {:.3}, perturbed {:.3} ± {:.3} (mean of {} draws), majority {:.3}; mean σ {:.3}; trained in {:.0} s",
        s.desired,
        s.test_clean.accuracy,
        s.test_perturbed.accuracy,
        s.test_perturbed.ci95(),
        s.draws,
        s.majority,
        s.mean_sigma,
        s.train_seconds
    );
    println!(
        "wrote {}/perturber.onnx and recognizer.onnx (+ manifests)",
        s.run.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    fn config(extra: &[&str]) -> scrim_train::config::TrainConfig {
        let faces = [
            "train",
            "--data",
            "utkface:/data/UTKFace",
            "--desired",
            "gender",
            "--out",
            "runs/x",
        ];
        let line = faces.iter().chain(extra).copied();
        Cli::try_parse_from(line)
            .expect("a valid command line")
            .args
            .request()
            .config
    }

    #[test]
    fn a_sensitive_label_brings_the_private_defaults_and_flags_override_them() {
        let of = |extra: &[&str]| {
            let c = config(extra);
            (c.hsic, c.hsic_ramp_epochs, c.epochs)
        };
        assert_eq!(of(&[]), (0.0, 0, 12));
        assert_eq!(of(&["--sensitive", "race"]), (0.5, 3, 16));
        assert_eq!(
            of(&["--sensitive", "race", "--hsic", "0", "--epochs", "12"]),
            (0.0, 3, 12)
        );
        assert_eq!(
            of(&["--sensitive", "race", "--hsic-ramp", "1"]),
            (0.5, 1, 16)
        );
        // The paper's noise-only loss stays one flag away.
        assert_eq!(
            of(&["--sensitive", "race", "--layout", "dense"]),
            (0.0, 0, 12)
        );
    }

    fn warmup(extra: &[&str]) -> usize {
        config(extra).warmup_epochs
    }

    #[test]
    fn faces_trained_with_a_noise_layout_warm_up_like_any_other_data() {
        // The bounded default for faces has no warm-up; choosing another layout used to keep
        // that 0 (the recognizer then met σ_max noise from its first step).
        assert_eq!(warmup(&[]), 0);
        assert_eq!(warmup(&["--layout", "dense"]), 2);
        assert_eq!(warmup(&["--input-independent"]), 2);
        assert_eq!(warmup(&["--layout", "dense", "--warmup", "1"]), 1);
        assert_eq!(warmup(&["--bounded", "--warmup", "3"]), 3);
    }
}
