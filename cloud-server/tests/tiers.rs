//! Service tiers: each API token is answered by the model of its tier's protection level.

mod common;

use std::path::Path;

use axum::http::StatusCode;
use common::*;
use scrim_cloud::{Config, ErrorCode, ModelsResponse, TierConfig};
use scrim_core::Manifest;
use scrim_seal::selective::{self, LayerSelection};

/// Protects the fixture recognizer for 2 levels (12 of its 24 kernels) and writes
/// `encrypted.onnx` (+ manifest), `bundle.scrimlv`, `level-{1,2}.key`, and the level-1 model as
/// `level1.onnx` (+ manifest) for reference. Returns the path of the plain model.
fn protect_fixture(dir: &Path) -> std::path::PathBuf {
    let plain_path = write_fixture(dir, SIZE);
    let plain = std::fs::read(&plain_path).expect("read");
    let manifest = Manifest::load(&Manifest::path_for(&plain_path)).expect("manifest");
    let layer = &selective::conv_layers(&plain).expect("layers")[0];
    let sel = LayerSelection::new(&layer.name, (0..12).collect());
    let p = selective::protect(&plain, &[sel], 2, &mut selective::os_rng()).expect("protect");
    let save = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        manifest.save(&Manifest::path_for(&path)).expect("manifest");
    };
    save("encrypted.onnx", &p.onnx);
    save(
        "level1.onnx",
        &selective::restore(&p.onnx, &p.bundle, &p.keys[0]).expect("level 1"),
    );
    std::fs::write(dir.join("bundle.scrimlv"), &p.bundle).expect("bundle");
    for k in &p.keys {
        k.save(&dir.join(format!("level-{}.key", k.level())))
            .expect("key");
    }
    plain_path
}

fn tier(dir: &Path, name: &str, level: usize) -> TierConfig {
    let tokens = dir.join(format!("{name}.tokens"));
    std::fs::write(&tokens, format!("{name}-token\n")).expect("tokens");
    let mut t = TierConfig::new(name, Some(dir.join(format!("level-{level}.key"))));
    t.tokens_file = Some(tokens);
    t
}

fn tiered_config(dir: &Path) -> Config {
    let mut config = Config::new(dir.join("encrypted.onnx"));
    config.workers = 1;
    config.bundle = Some(dir.join("bundle.scrimlv"));
    config.tiers = vec![tier(dir, "basic", 1), tier(dir, "pro", 2)];
    config
}

fn open_config(model: &Path) -> Config {
    let mut c = Config::new(model);
    c.workers = 1;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_at_two_levels_get_the_two_models_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = protect_fixture(dir.path());
    let (_, app) = router(&tiered_config(dir.path()));
    let (_, plain_app) = router(&open_config(&plain));
    let (_, level1_app) = router(&open_config(&dir.path().join("level1.onnx")));
    let mut differ = false;
    for seed in 1..6 {
        let image = || post("/v1/classify", Some("image/png"), png(32, 32, seed));
        let pro = send(&app, with_token(image(), "pro-token")).await;
        let basic = send(&app, with_token(image(), "basic-token")).await;
        assert_eq!(pro.status, StatusCode::OK);
        assert_eq!(basic.status, StatusCode::OK);
        let want_pro = send(&plain_app, image()).await.json()["labels"].clone();
        let want_basic = send(&level1_app, image()).await.json()["labels"].clone();
        assert_eq!(pro.json()["labels"], want_pro, "pro = the plain model");
        assert_eq!(basic.json()["labels"], want_basic, "basic = level 1");
        differ |= pro.json()["labels"] != basic.json()["labels"];
    }
    assert!(differ, "the two levels must answer differently");
    for bad in [Some("gold-token"), Some("pro-token-"), None] {
        let request = post("/v1/classify", Some("image/png"), png(32, 32, 1));
        let request = match bad {
            Some(t) => with_token(request, t),
            None => request,
        };
        send(&app, request)
            .await
            .expect_error(ErrorCode::Unauthorized);
    }
    let reply = send(&app, with_token(get("/v1/models"), "basic-token")).await;
    let text = reply.text();
    assert!(!text.contains("token") && !text.contains(".key"), "{text}");
    let models: ModelsResponse = serde_json::from_value(reply.json()).expect("models");
    assert_eq!(models.models[0].level, 1);
    assert_eq!(models.models[0].tiers, vec!["basic".to_string()]);
    let listed: Vec<(u32, Option<usize>)> = models.levels.iter().map(|l| (l.level, l.of)).collect();
    // Level 0 (the encrypted model) is loaded but no token is served it, so it is not listed.
    assert_eq!(listed, vec![(1, Some(2)), (2, Some(2))]);
}

#[test]
fn a_wrong_key_or_tampered_bundle_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    protect_fixture(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    protect_fixture(other.path());
    // A key of another protection run.
    let mut config = tiered_config(dir.path());
    config.tiers[1].key_file = Some(other.path().join("level-2.key"));
    let err = scrim_cloud::AppState::new(&config).expect_err("wrong key");
    assert!(err.to_string().contains("belongs to bundle"), "{err}");
    // A flipped bit in the bundle.
    let path = dir.path().join("bundle.scrimlv");
    let mut bundle = std::fs::read(&path).expect("read");
    let n = bundle.len();
    bundle[n - 3] ^= 0x10;
    std::fs::write(&path, bundle).expect("write");
    let err = scrim_cloud::AppState::new(&tiered_config(dir.path())).expect_err("tampered");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    // A token in two tiers.
    let mut config = tiered_config(dir.path());
    config.tiers[0].tokens_file = config.tiers[1].tokens_file.clone();
    assert!(scrim_cloud::AppState::new(&config).is_err());
}

#[test]
fn tiers_parse_from_toml() {
    let c = Config::from_toml_str(
        "model = \"p/encrypted.onnx\"\nbundle = \"p/bundle.scrimlv\"\n\n[[tiers]]\nname = \"basic\"\n\
         key_file = \"p/level-1.key\"\ntokens_file = \"basic.tokens\"\n\n[[tiers]]\nname = \"free\"\n\
         tokens_file = \"free.tokens\"\n",
    )
    .expect("toml");
    assert_eq!(c.tiers.len(), 2);
    assert_eq!(c.tiers[1].key_file, None);
    c.validate().expect("valid");
    assert!(Config::from_toml_str("[[tiers]]\nname = \"x\"\ntokens = [\"t\"]\n").is_err());
    let mut c = c;
    c.bundle = None;
    assert!(c.validate().is_err(), "a key without a bundle");
}
