//! `scrim keygen`: a new 256-bit secret key file.

use std::path::PathBuf;

use scrim_protect::keys as protect;

/// `scrim keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the new key file (never overwritten; owner-readable only on Unix).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `scrim keygen`.
///
/// # Errors
/// An existing file at the path, or an unwritable folder.
pub fn run(a: Args) -> anyhow::Result<()> {
    protect::keygen(&a.out)?;
    eprintln!(
        "wrote a new 256-bit key to {} (keep it secret; it cannot be recovered)",
        a.out.display()
    );
    Ok(())
}
