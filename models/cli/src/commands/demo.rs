//! `scrim demo`: the first-run demo on built-in synthetic data. No downloads.

use std::path::PathBuf;

use scrim_train::workflow::{self, DemoOptions, DemoReport};

/// `scrim demo` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run folder.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Synthetic images to generate.
    #[arg(long, default_value_t = 3000)]
    count: usize,
    /// Co-training epochs (warm-up included).
    #[arg(long, default_value_t = 12)]
    epochs: usize,
}

/// Runs `scrim demo`.
///
/// # Errors
/// Training, export and evaluation errors.
pub fn run(a: Args) -> anyhow::Result<()> {
    let report = workflow::demo(&DemoOptions {
        out: a.out,
        count: a.count,
        epochs: a.epochs,
        progress: true,
        ..Default::default()
    })?;
    print_demo(&report);
    Ok(())
}

fn print_demo(r: &DemoReport) {
    let (d, s) = &r.labels;
    println!();
    println!("Scrim demo (synthetic data, desired = {d}, sensitive = {s}; test split)");
    println!(
        "| images uploaded | {d} accuracy (cloud recognizer) | {s} accuracy (fresh attacker) |"
    );
    println!(
        "|-----------------|------------------------------------|-------------------------------|"
    );
    for row in &r.rows {
        println!(
            "| {:<15} | {:>34} | {:>29} |",
            row.images,
            format!(
                "{:.1}% ± {:.1}",
                100.0 * row.desired.accuracy,
                100.0 * row.desired.ci95()
            ),
            format!(
                "{:.1}% ± {:.1}",
                100.0 * row.attacker.accuracy,
                100.0 * row.attacker.ci95()
            )
        );
    }
    println!(
        "majority-class rate of {s}: {:.1}%; mean σ {:.3}",
        100.0 * r.sensitive_majority,
        r.train.mean_sigma
    );
    println!(
        "clean: a recognizer and an attacker trained on raw images; perturbed: the co-trained"
    );
    println!("recognizer on Scrim uploads, and an attacker trained from scratch on Scrim uploads.");
    if let Some(bits) = r.train.bits_per_upload {
        println!(
            "each upload is a 4×4 map drawn on the device plus fixed noise: at most {bits:.1} bits \
             of the photo"
        );
    }
    println!(
        "attackers who hold the perturber: scrim audit --data synthetic --desired {d} --sensitive \
         {s} --run {}",
        r.train.run.display()
    );
    if let Some(line) = raw_photo_line(d, r.train.test_clean.accuracy, r.train.majority) {
        println!("{line}");
    }
    println!(
        "artifacts: {}/perturber.onnx, recognizer.onnx (+ .json manifests)",
        r.train.run.display()
    );
}

/// The line that explains the co-trained recognizer's accuracy on raw photos when it is near
/// chance (within 10 points of the majority rate), which the epoch lines show as "val acc
/// clean" and `demo.json` as `train.test_clean`. A perturber that keeps part of the photo as it
/// is (suppression elsewhere) leaves the recognizer able to read raw photos too: no line then.
fn raw_photo_line(desired: &str, accuracy: f64, majority: f64) -> Option<String> {
    if accuracy > majority + 0.1 {
        return None;
    }
    Some(format!(
        "the co-trained recognizer on raw photos: {desired} {:.1}% (majority {:.1}%), near chance \
         by design: after warm-up it is trained on perturbed uploads only, the only images the \
         server ever sees (the epoch lines' \"val acc clean\")",
        100.0 * accuracy,
        100.0 * majority
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_raw_photo_accuracy_comes_with_its_reason() {
        let line = super::raw_photo_line("shape", 0.503, 0.51).expect("near chance");
        assert!(super::raw_photo_line("shape", 0.98, 0.51).is_none());
        assert!(line.contains("shape 50.3% (majority 51.0%)"), "{line}");
        assert!(
            line.contains("near chance by design") && line.contains("perturbed uploads only"),
            "{line}"
        );
    }
}
