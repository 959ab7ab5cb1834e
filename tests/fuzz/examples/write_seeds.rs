//! Writes each target's seeds into `DIR/<target>/seed-N` (default: this crate's `corpus/`).

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for (name, _) in scrim_fuzz::TARGETS {
        let dir = root.join(name);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("error: {}: {e}", dir.display());
            std::process::exit(1);
        }
        for (i, seed) in scrim_fuzz::seeds(name).iter().enumerate() {
            let path = dir.join(format!("seed-{i}"));
            if let Err(e) = std::fs::write(&path, seed) {
                eprintln!("error: {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    println!("seeds written under {}", root.display());
}
