//! The privacy audit: how much of the sensitive label survives a perturbation, measured by
//! attackers trained from scratch on perturbed images (DESIGN §4).
//!
//! Every *scheme* (a trained Scrim run, any perturber ONNX, or a baseline) is turned into
//! perturbed copies of the train, validation and test splits. Then, per sensitive attribute:
//!
//! | attacker | trained on | what it models |
//! |---|---|---|
//! | `kerckhoffs` | the train split uploaded afresh every epoch (augmented), a residual CNN | the provider who holds the perturber |
//! | `variance` | the local noise level of those uploads | the σ side channel |
//! | `linear` | those uploads (or their blur), logistic regression | the floor a CNN must beat |
//! | `cnn` | one perturbed copy of the train split, early stopping on perturbed val | the curious provider |
//! | `blur` | the same after a 3×3 binomial blur | a denoise-then-classify provider |
//! | `finetune` | first clean images, then perturbed ones | a provider with public clean faces |
//! | `reconstruct` | a decoder x' → x, then the clean attacker on its output | image recovery |
//!
//! The perturber ships in every app, so the first three may upload their training faces as
//! often as they like (`uploads.rs` draws them, `holders.rs` trains them); every attacker is
//! tested on one upload per test image. Averaging several uploads of the *user's* photo is
//! outside the threat model: each photo is uploaded once, with noise drawn fresh on the device.
//! Each attack is trained with [`AuditRequest::attacker_seeds`] seeds (3 by default); the
//! headline ([`SchemeReport::best_attack`]) is the highest mean over seeds among the kinds.
//!
//! Utility is the desired-task accuracy on perturbed test images averaged over `draws` noise
//! draws: with the scheme's own recognizer where it has one (a Scrim run), else with a
//! recognizer trained on perturbed images (noisy training), which is how the baselines would be
//! deployed.
//!
//! The ARDEN-style baseline ([`Scheme::Arden`], see `arden.rs`) uploads noisy features of a
//! frozen first conv block instead of images: its attackers are CNNs on those features, its
//! utility is the cloud part trained on them, and the image attackers (blur, reconstruct) are
//! skipped with a note in the report.
//!
//! ```no_run
//! use scrim_audit::{AuditRequest, Scheme, audit};
//! # fn main() -> scrim_audit::Result<()> {
//! let mut req = AuditRequest::new("synthetic".parse()?, "shape", &["texture"], "audit".into());
//! req.schemes = vec![Scheme::None, Scheme::Run { path: "runs/demo".into() }];
//! let report = audit(&req)?;
//! // `audit/` now holds report.json, report.md, frontier.svg/png and samples.png.
//! // How much better than a guess of the commonest texture the best attacker does on the run:
//! let leak = report.schemes[1]
//!     .best_attack("texture")
//!     .map(|a| a.accuracy.accuracy - a.majority);
//! # Ok(()) }
//! ```
//!
//! Where things are: `request.rs` says what to audit and `reports.rs` what was measured;
//! `audit.rs` runs an audit, with `perturb.rs` resolving each scheme, `context.rs` holding what
//! the schemes share, `images.rs` and `arden.rs` auditing one scheme (`reconstruct.rs` and
//! `quality.rs` for the decoder), and `markdown.rs` and `plots.rs` writing the outputs.
//! `merge.rs` and `results.rs` combine audits into one document, `sweep.rs` trains and audits a
//! grid of runs, and `runs.rs` reads what a run folder says about its training.

mod arden;
mod audit;
mod context;
mod error;
mod holders;
mod images;
mod markdown;
mod merge;
mod perturb;
mod plots;
mod quality;
mod reconstruct;
mod reports;
mod request;
mod results;
mod runs;
mod sweep;
mod uploads;

pub use audit::audit;
pub use error::{Audited, Error, Result};
pub use markdown::{markdown, write_markdown};
pub use merge::merge;
pub use perturb::uniform_noise;
pub use plots::write_plots;
pub use quality::{Reconstruction, psnr, ssim};
pub use reports::{AttackResult, AuditReport, SchemeReport};
pub use request::{Attack, AuditRequest, Baseline, Recipes, Scheme};
pub use results::{ResultsRequest, write_results};
pub use runs::run_lambda;
pub use sweep::{SweepRequest, Variant, sweep};
pub use uploads::{Augment, View};
