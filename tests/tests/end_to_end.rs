//! The whole path: train a tiny pair on synthetic data → export → perturb through the SDK →
//! upload to a scrim-cloud on an ephemeral loopback port → the labels equal an in-process
//! classification of the same perturbed image. Then a wrong token and a server that is down.

use scrim_cloud::{ApiToken, Config};
use scrim_core::{BatchMode, DecodeLimits, Manifest, Model};
use scrim_mobile::{ClientConfig, Perturber, ScrimClient, ScrimError};
use scrim_train::data::{DataSpec, SyntheticConfig};
use scrim_train::workflow::{self, TrainRequest};

fn train_tiny(out: &std::path::Path) -> scrim_train::run::RunDir {
    let data = DataSpec::Synthetic(SyntheticConfig {
        count: 200,
        seed: 11,
    });
    let mut req = TrainRequest::new(data, "shape", out.to_path_buf());
    let c = &mut req.config;
    c.size = 16;
    c.epochs = 2;
    c.warmup_epochs = 1;
    c.lambda_ramp_epochs = 1;
    c.batch_size = 32;
    c.recognizer.widths = vec![8, 16];
    c.perturber.channels = 8;
    req.draws = 1;
    workflow::train_run(&req).expect("train");
    scrim_train::run::RunDir::open(out).expect("run")
}

fn photo() -> Vec<u8> {
    // A "photo" larger than the model input, as a JPEG: the SDK must resize it.
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .expect("jpeg");
    out
}

#[test]
fn sdk_to_server_matches_in_process_classification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = train_tiny(&dir.path().join("run"));

    let mut config = Config::new(run.recognizer_onnx());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.tokens = vec![ApiToken::new("right-token")];
    let server = scrim_cloud::spawn(config).expect("server");

    let onnx = std::fs::read(run.perturber_onnx()).expect("onnx");
    let manifest =
        std::fs::read_to_string(Manifest::path_for(&run.perturber_onnx())).expect("manifest");
    let perturber = Perturber::seeded_for_tests(onnx, manifest, 3).expect("perturber");
    let perturbed = perturber.perturb(photo()).expect("perturb");
    assert_eq!((perturbed.width(), perturbed.height()), (16, 16));

    let client = ScrimClient::new(ClientConfig {
        api_token: Some("right-token".into()),
        ..ClientConfig::new(server.url())
    })
    .expect("client");
    let remote = client.classify(&perturbed).expect("classify");

    // In process: the same PNG through scrim-core and the same recognizer.
    let model = Model::load_path(&run.recognizer_onnx(), BatchMode::Single).expect("model");
    let x = scrim_core::imaging::decode_exact(
        &perturbed.png(),
        model.manifest().input,
        DecodeLimits::default(),
    )
    .expect("decode");
    let logits = &model.run(&x).expect("run")[0].data;
    let local = workflow::softmax_labels(logits, &model.manifest().labels);
    assert_eq!(remote.labels.len(), local.len());
    for (r, (label, score)) in remote.labels.iter().zip(&local) {
        assert_eq!(&r.label, label);
        assert!((r.score - score).abs() < 1e-5, "{} vs {score}", r.score);
    }

    // The one-call path uploads the same kind of thing and gets the same label set.
    let again = client
        .classify_image(&perturber, photo())
        .expect("classify_image");
    assert_eq!(again.labels.len(), local.len());

    // A wrong token is Unauthorized, not a generic server error.
    let wrong = ScrimClient::new(ClientConfig {
        api_token: Some("wrong".into()),
        ..ClientConfig::new(server.url())
    })
    .expect("client");
    assert!(matches!(
        wrong.classify(&perturbed),
        Err(ScrimError::Unauthorized { .. })
    ));

    // A server that is down is a Network error after the configured retries.
    let url = server.url();
    server.shutdown();
    let down = ScrimClient::new(ClientConfig {
        api_token: Some("right-token".into()),
        max_retries: 2,
        initial_backoff_ms: 10,
        connect_timeout_ms: 500,
        ..ClientConfig::new(url)
    })
    .expect("client");
    // (How many attempts were made is checked against a counting stub in mobile-ffi's tests.)
    assert!(matches!(
        down.classify(&perturbed),
        Err(ScrimError::Network { .. })
    ));
}
