//! What a new user meets first, through the binary: `scrim perturb` and `scrim classify` (what
//! they print, write and exit with, on the untrained fixture models of scrim-core) and where
//! commands write by default.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scrim_core::{Manifest, fixtures};

/// Writes the fixture perturber and recognizer (16×16, labels cat/dog) into `dir`.
fn models(dir: &Path) -> (PathBuf, PathBuf) {
    let (p, pm) = fixtures::perturber(16, 0.3);
    let (r, rm) = fixtures::recognizer(16, &["cat", "dog"]);
    let write = |name: &str, onnx: Vec<u8>, m: Manifest| {
        let path = dir.join(name);
        std::fs::write(&path, onnx).expect("onnx");
        m.save(&Manifest::path_for(&path)).expect("manifest");
        path
    };
    (
        write("perturber.onnx", p, pm),
        write("recognizer.onnx", r, rm),
    )
}

/// Marks the models in `dir` as written by run `name` with id `id`.
fn mark(model: &Path, name: &str, id: &str) {
    let m = Manifest::load_beside(model).expect("manifest");
    m.with_run(name, id)
        .save(&Manifest::path_for(model))
        .expect("save");
}

/// Saves a `w × h` gradient at `path` (format from the extension).
fn photo(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90]))
        .save(path)
        .expect("image");
}

fn scrim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scrim"))
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run scrim")
}

/// `scrim perturb --model MODEL --input INPUT --output OUTPUT EXTRA...`.
fn perturb(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "perturb",
        "--model",
        s(model),
        "--input",
        s(input),
        "--output",
        s(output),
    ];
    args.extend_from_slice(extra);
    scrim(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn classify_with_a_perturber_says_which_file_to_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, _) = models(dir.path());
    let input = dir.path().join("up.png");
    photo(&input, 16, 16);
    let out = scrim(&["classify", "--model", s(&perturber), "--input", s(&input)]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(text(&out.stdout).is_empty(), "no empty labels printed");
    assert!(
        err.contains("is a perturber") && err.contains("recognizer.onnx"),
        "{err}"
    );
}

#[test]
fn classify_refuses_other_sizes_like_the_server_unless_resize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, recognizer) = models(dir.path());
    let input = dir.path().join("photo.jpg");
    photo(&input, 40, 30);
    let out = scrim(&["classify", "--model", s(&recognizer), "--input", s(&input)]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(s(&input))
            && err.contains("40x30")
            && err.contains("16x16")
            && err.contains("--resize"),
        "{err}"
    );
    let out = scrim(&[
        "classify",
        "--model",
        s(&recognizer),
        "--input",
        s(&input),
        "--resize",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"label\":\"cat\""));
}

#[test]
fn perturb_names_uploads_after_inputs_as_the_help_says() {
    let help = text(&scrim(&["--help"]).stdout);
    assert!(help.contains("photo.jpg → photo.png"), "{help}");
    let help = text(&scrim(&["perturb", "--help"]).stdout);
    assert!(help.contains("photo.jpg → photo.png"), "{help}");

    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, _) = models(dir.path());
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("mkdir");
    photo(&inputs.join("photo.jpg"), 40, 30);
    photo(&inputs.join("other.png"), 20, 20);
    let uploads = dir.path().join("up");
    let out = perturb(&perturber, &inputs, &uploads, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "no --seed, no warning: {err}");
    let mut names: Vec<_> = std::fs::read_dir(&uploads)
        .expect("uploads")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["other.png", "photo.png"]);
}

#[test]
fn seeded_noise_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, _) = models(dir.path());
    let input = dir.path().join("photo.png");
    photo(&input, 16, 16);
    let out = perturb(&perturber, &input, &dir.path().join("up"), &["--seed", "7"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: --seed makes the noise reproducible") && err.contains("tests only"),
        "{err}"
    );
}

#[test]
fn a_missing_manifest_is_named_with_its_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, recognizer) = models(dir.path());
    let manifest = Manifest::path_for(&recognizer);
    std::fs::remove_file(&manifest).expect("rm");
    let input = dir.path().join("up.png");
    photo(&input, 16, 16);
    let out = scrim(&["classify", "--model", s(&recognizer), "--input", s(&input)]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "manifest not found: {} (expected beside the model {}",
            manifest.display(),
            recognizer.display()
        )) && !err.contains("os error"),
        "{err}"
    );
}

#[test]
fn one_bad_file_does_not_stop_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, recognizer) = models(dir.path());
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("mkdir");
    photo(&inputs.join("a.png"), 30, 20);
    std::fs::write(inputs.join("b.jpg"), b"not a photo").expect("junk");
    photo(&inputs.join("c.png"), 20, 20);
    let uploads = dir.path().join("up");
    let out = perturb(&perturber, &inputs, &uploads, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(s(&inputs.join("b.jpg"))), "{err}");
    assert!(err.contains("1 of 3 files"), "{err}");
    assert!(uploads.join("a.png").is_file() && uploads.join("c.png").is_file());

    // Classify the uploads plus one junk file: two JSON lines, one error, exit 1.
    std::fs::write(uploads.join("junk.png"), b"junk").expect("junk");
    let out = scrim(&[
        "classify",
        "--model",
        s(&recognizer),
        "--input",
        s(&uploads),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(text(&out.stdout).lines().count(), 2);
    assert!(
        err.contains(s(&uploads.join("junk.png"))) && err.contains("1 of 3 files"),
        "{err}"
    );
}

#[test]
fn documents_are_written_only_where_out_says() {
    // `scrim results` and `scrim protect eval` used to write into ./docs of whatever folder they
    // started in; now they need --out (bench writes into its own --out folder, see bench.rs).
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    for args in [
        vec!["results", "--report", s(&report)],
        vec![
            "protect",
            "eval",
            "--train",
            "synthetic",
            "--test",
            "synthetic",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_scrim"))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("run scrim");
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("--out"), "{args:?}: {err}");
        assert!(!dir.path().join("docs").exists(), "{args:?} wrote ./docs");
    }
}

#[test]
fn classify_refuses_a_perturber_of_another_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, recognizer) = models(dir.path());
    let input = dir.path().join("photo.jpg");
    photo(&input, 40, 30);
    let classify = || {
        scrim(&[
            "classify",
            "--model",
            s(&recognizer),
            "--perturber",
            s(&perturber),
            "--input",
            s(&input),
        ])
    };
    // Models without run ids (exported before them) pair unchecked, with a warning.
    let out = classify();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no run id"), "{err}");
    assert!(text(&out.stdout).contains("\"label\""));

    mark(&perturber, "a", "00000000000000aa");
    mark(&recognizer, "a", "00000000000000aa");
    let out = classify();
    let err = text(&out.stderr);
    assert!(out.status.success() && !err.contains("warning"), "{err}");

    mark(&recognizer, "b", "00000000000000bb");
    let out = classify();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(text(&out.stdout).is_empty());
    assert!(
        err.contains("different training runs")
            && err.contains("run a, id 00000000000000aa")
            && err.contains("run b, id 00000000000000bb"),
        "{err}"
    );
}

#[test]
fn save_maps_draws_photo_sigma_and_upload_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (perturber, _) = models(dir.path());
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("mkdir");
    photo(&inputs.join("photo.jpg"), 40, 30);
    let out_dir = dir.path().join("up");
    let out = perturb(&perturber, &inputs, &out_dir, &["--save-maps"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("wrote 1 maps"), "{err}");
    let maps = image::open(out_dir.join("photo-maps.png"))
        .expect("maps png")
        .to_rgb8();
    let upload = image::open(out_dir.join("photo.png")).expect("upload");
    // Three 16×16 images scaled up side by side, with labels and a colour bar: far wider than
    // one upload, and in colour (the σ map), which neither a grey photo nor an upload is alone.
    assert!(maps.width() > 3 * 8 * upload.width(), "{}", maps.width());
    let coloured = maps
        .pixels()
        .filter(|p| p[0].abs_diff(p[1]) > 40 || p[1].abs_diff(p[2]) > 40)
        .count();
    assert!(coloured > 500, "{coloured}");
}
