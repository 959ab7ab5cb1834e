//! The attackers who hold the perturber (`kerckhoffs`, `variance`, `linear`) on data built so
//! that each has something only it can find: noise a single-draw attacker memorises, and a σ
//! map that carries the label while the pixels are suppressed.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scrim_audit::{self as audit, Attack, AuditReport, AuditRequest, Scheme, View};
use scrim_core::NoiseKind;
use scrim_core::manifest::{InputSpec, Manifest, PerturberOutput, PerturberSpec};
use scrim_core::onnx::{Conv, GraphBuilder};
use scrim_train::data::{DataSpec, SyntheticConfig};
use scrim_train::eval::{ClassifierConfig, FitConfig};

const SIZE: usize = 16;

/// How the `sensitive` label shows in an image.
#[derive(Clone, Copy)]
enum Encoding {
    /// Horizontal (0) or vertical (1) stripes of period 4 and this amplitude, random phase.
    Stripes(f32),
    /// The whole image is darker (0) or brighter (1) by this gap.
    Brightness(f32),
}

/// `n` labelled 16×16 PNGs and their CSV (`path,desired,sensitive`) in `dir`: mid-grey with a
/// per-image brightness jitter; `desired` is a bright centred 6×6 square, present or absent.
/// Both labels survive a mirror and a small shift.
fn write_set(dir: &Path, n: usize, seed: u64, enc: Encoding) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut csv = String::from("path,desired,sensitive\n");
    for i in 0..n {
        let (d, s) = (rng.random::<bool>(), rng.random::<bool>());
        let jitter = rng.random_range(-0.08f32..0.08);
        let phase = rng.random_range(0..4usize);
        let img = image::RgbImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let mut v = 0.5 + jitter;
            if d && (5..11).contains(&x) && (5..11).contains(&y) {
                v += 0.25;
            }
            match enc {
                Encoding::Stripes(a) => {
                    let t = if s { x } else { y };
                    v += if (t + phase) % 4 < 2 { a } else { -a };
                }
                Encoding::Brightness(gap) => v += if s { gap / 2.0 } else { -gap / 2.0 },
            }
            let b = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            image::Rgb([b, b, b])
        });
        let name = format!("{i}.png");
        img.save(dir.join(&name)).expect("png");
        csv.push_str(&format!("{name},{},{}\n", u8::from(d), u8::from(s)));
    }
    let path = dir.join("set.csv");
    std::fs::write(&path, csv).expect("csv");
    path
}

/// Writes a perturber graph and its manifest as `dir/NAME.onnx` and `dir/NAME.json`.
fn write_perturber(dir: &Path, name: &str, g: GraphBuilder, spec: PerturberSpec) -> PathBuf {
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, g.finish()).expect("onnx");
    Manifest::perturber(name, InputSpec::rgb(SIZE, SIZE), spec)
        .save(&Manifest::path_for(&path))
        .expect("manifest");
    path
}

fn spec(sigma_max: f32, outputs: Vec<PerturberOutput>, fill: f32) -> PerturberSpec {
    PerturberSpec {
        sigma_max,
        noise: NoiseKind::Gaussian,
        outputs,
        fill,
        standardize: false,
        release: None,
        erase: None,
    }
}

/// Gaussian noise of one σ on every pixel, as a perturber graph (σ is a constant map that the
/// device expands to the image).
fn constant_sigma(dir: &Path, sigma: f32) -> PathBuf {
    let mut g = GraphBuilder::new("constant_sigma");
    let x = g.image_input("image", 3, SIZE, SIZE);
    let m = g.global_avg_pool(&x);
    let z = g.scale(&m, 0.0);
    let s = g.offset(&z, sigma);
    g.output(&s, "sigma");
    write_perturber(
        dir,
        "constant",
        g,
        spec(sigma, vec![PerturberOutput::Sigma], 0.5),
    )
}

/// Suppresses every pixel to `fill` and sets σ from the image's mean brightness: `lo` below 0.5,
/// `hi` above. The upload's mean carries nothing; its noise level carries the brightness.
fn sigma_keyed_by_brightness(dir: &Path, lo: f32, hi: f32) -> PathBuf {
    let k = 40.0f32;
    let w = vec![k / 3.0; 9];
    let b = vec![-k / 2.0; 3];
    let mut g = GraphBuilder::new("sigma_side_channel");
    let x = g.image_input("image", 3, SIZE, SIZE);
    let m = g.global_avg_pool(&x);
    let z = g.conv(&m, Conv::new(&w, [3, 3, 1, 1]).bias(&b));
    let s = g.sigmoid(&z);
    let sigma = g.scale(&s, hi - lo);
    let sigma = g.offset(&sigma, lo);
    let keep = g.scale(&s, 0.0);
    g.output(&sigma, "sigma");
    g.output(&keep, "keep");
    write_perturber(
        dir,
        "side",
        g,
        spec(
            hi,
            vec![PerturberOutput::Sigma, PerturberOutput::Keep],
            128.0 / 255.0,
        ),
    )
}

fn request(data: DataSpec, out: PathBuf, attacks: Vec<Attack>, seeds: usize) -> AuditRequest {
    let mut a = AuditRequest::new(data, "desired", &["sensitive"], out);
    a.size = SIZE;
    a.attacks = attacks;
    a.attacker_seeds = seeds;
    a.draws = 1;
    a.cache = false;
    a
}

fn accuracy(report: &AuditReport, attack: Attack) -> f64 {
    let a = report.schemes[0]
        .attacks
        .iter()
        .find(|a| a.attacker == attack)
        .unwrap_or_else(|| panic!("no {attack:?} result"));
    a.accuracy.accuracy
}

#[test]
fn the_holder_of_the_perturber_learns_the_stripes_and_is_never_far_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Faint stripes under σ 0.2: one upload of 420 training images is too little to learn them
    // from, and a network that sees that one upload fits its noise; a new upload every epoch
    // does not let it. Calibrated on data seeds 11–14: kerckhoffs 0.80–0.88, cnn 0.51–0.67.
    // The uploads' noise comes from the OS, so runs differ, and the single-draw attacker
    // sometimes does as well (seen since: kerckhoffs 0.750 / cnn 0.654, 0.804 / 0.838). What
    // holds in every run: the holder learns the stripes, and it is never far behind.
    let csv = write_set(dir.path(), 600, 11, Encoding::Stripes(0.03));
    let perturber = constant_sigma(dir.path(), 0.2);
    let mut a = request(
        DataSpec::Csv(csv),
        dir.path().join("audit"),
        vec![Attack::Kerckhoffs, Attack::Cnn],
        2,
    );
    a.schemes = vec![Scheme::Onnx {
        perturber,
        recognizer: None,
    }];
    // Fresh uploads cannot be memorised, so the holder may train longer than the single-draw
    // attacker (whose own patience stops it once it fits the noise).
    let fit = FitConfig::new()
        .with_epochs(40)
        .with_patience(10)
        .with_batch_size(32);
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![16, 32])
        .with_epochs(15)
        .with_patience(4)
        .with_batch_size(32);
    a.recipes.kerckhoffs_widths = vec![16, 32];
    a.recipes.kerckhoffs = fit;
    let report = audit::audit(&a).expect("audit");
    let (k, cnn) = (
        accuracy(&report, Attack::Kerckhoffs),
        accuracy(&report, Attack::Cnn),
    );
    eprintln!("kerckhoffs {k:.3}, cnn {cnn:.3}");
    assert!(k >= 0.70, "kerckhoffs {k:.3} (cnn {cnn:.3})");
    assert!(k >= cnn - 0.08, "kerckhoffs {k:.3}, cnn {cnn:.3}");
    // The headline is the stronger kind.
    let best = report.schemes[0].best_attack("sensitive").expect("best");
    assert!((best.accuracy.accuracy - k.max(cnn)).abs() < 1e-12);
}

#[test]
fn variance_reads_the_sigma_side_channel_that_pixels_do_not_carry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_set(dir.path(), 800, 12, Encoding::Brightness(0.3));
    let perturber = sigma_keyed_by_brightness(dir.path(), 0.08, 0.2);
    let mut a = request(
        DataSpec::Csv(csv),
        dir.path().join("audit"),
        vec![Attack::Variance, Attack::Linear, Attack::Cnn],
        1,
    );
    a.schemes = vec![Scheme::Onnx {
        perturber,
        recognizer: None,
    }];
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![16, 32])
        .with_epochs(6)
        .with_batch_size(32);
    a.recipes.variance_widths = vec![16, 32];
    a.recipes.variance = FitConfig::new().with_epochs(10).with_batch_size(32);
    a.recipes.linear = FitConfig::new().with_epochs(10).with_batch_size(32);
    a.recipes.linear_views = vec![View::Pixels, View::Blur];
    let report = audit::audit(&a).expect("audit");
    let majority = report.schemes[0].attacks[0].majority;
    let (v, l, cnn) = (
        accuracy(&report, Attack::Variance),
        accuracy(&report, Attack::Linear),
        accuracy(&report, Attack::Cnn),
    );
    let l_ci = report.schemes[0]
        .attacks
        .iter()
        .find(|a| a.attacker == Attack::Linear)
        .map(|a| a.accuracy.ci95())
        .expect("linear result");
    // A pixel CNN can learn |x − fill| and is not asserted on: it is logged only.
    eprintln!("variance {v:.3}, linear {l:.3} ± {l_ci:.3}, cnn {cnn:.3}, majority {majority:.3}");
    assert!(v >= 0.9, "variance {v:.3}");
    // The linear views stay near the majority rate, within their own 95% interval on the 160
    // test images (±0.075): twelve reruns gave 0.46–0.57 against a majority of 0.537, and CI
    // once 0.656 (the uploads' noise comes from the OS, and clipping at 0 and 1 leaves a faint
    // linear trace of σ). Reading the σ channel, as the variance attacker does, is near 1.0.
    assert!(
        l - l_ci <= majority + 0.05,
        "linear {l:.3} ± {l_ci:.3}, majority {majority:.3}"
    );
}

#[test]
fn every_attack_kind_runs_on_every_scheme_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (onnx, manifest) = scrim_core::fixtures::perturber(8, 0.3);
    let perturber = dir.path().join("p.onnx");
    std::fs::write(&perturber, onnx).expect("onnx");
    manifest
        .save(&Manifest::path_for(&perturber))
        .expect("manifest");
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 300,
        seed: 4,
    });
    let mut a = AuditRequest::new(data, "shape", &["texture"], dir.path().join("audit"));
    a.size = 8;
    a.attacker_seeds = 1;
    a.draws = 1;
    a.cache = false;
    a.schemes = vec![
        Scheme::None,
        Scheme::Uniform {
            sigma: Some(0.2),
            matching: None,
        },
        Scheme::Onnx {
            perturber,
            recognizer: None,
        },
        Scheme::Arden {
            nullify: 0.1,
            laplace_b: 0.5,
        },
    ];
    let tiny = FitConfig::new().with_epochs(1).with_batch_size(32);
    a.attacker = ClassifierConfig::new()
        .with_widths(vec![8, 16])
        .with_epochs(1)
        .with_batch_size(32);
    a.recipes.kerckhoffs_widths = vec![8, 16];
    a.recipes.kerckhoffs = tiny.clone();
    a.recipes.variance_widths = vec![8];
    a.recipes.variance = tiny.clone();
    a.recipes.linear = tiny;
    assert_eq!(a.attacks, Attack::ALL.to_vec(), "every kind by default");
    let report = audit::audit(&a).expect("audit");
    for s in &report.schemes {
        let kinds: Vec<Attack> = s.attacks.iter().map(|r| r.attacker).collect();
        for k in Attack::HOLDERS {
            assert!(kinds.contains(&k), "{}: {kinds:?}", s.name);
        }
        for r in &s.attacks {
            assert!((0.0..=1.0).contains(&r.accuracy.accuracy), "{r:?}");
            assert!(r.seconds >= 0.0);
        }
    }
    // Image schemes run all seven; ARDEN's feature uploads skip the two image attacks.
    assert_eq!(report.schemes[1].attacks.len(), 7);
    assert_eq!(report.schemes[3].attacks.len(), 5);
    let json = std::fs::read_to_string(dir.path().join("audit/report.json")).expect("json");
    let back: AuditReport = serde_json::from_str(&json).expect("parse");
    assert_eq!(back.recipes, report.recipes);
    assert!(back.wall_seconds > 0.0);
}
