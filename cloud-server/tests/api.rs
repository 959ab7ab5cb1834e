//! The API through `app().oneshot(...)`: happy paths and every bad-input case (single and batch
//! uploads). The operational side is in `operations.rs`.

mod common;

use axum::http::{StatusCode, header};
use common::*;
use scrim_cloud::{BatchResponse, ClassifyResponse, ErrorCode};
use scrim_core::{BatchMode, DecodeLimits, InputSpec, Model, imaging};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_png_and_jpeg_return_ranked_softmax_scores() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    for (bytes, ct) in [
        (png(32, 32, 1), "image/png"),
        (jpeg(32, 32, 2), "image/jpeg"),
    ] {
        let reply = send(&app, post("/v1/classify", Some(ct), bytes)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(
            reply.headers[header::CONTENT_TYPE]
                .to_str()
                .expect("ct")
                .starts_with("application/json")
        );
        let r: ClassifyResponse = serde_json::from_slice(&reply.body).expect("response");
        assert_eq!(r.model, "fixture-recognizer");
        assert!(r.latency_ms >= 0.0);
        let mut names: Vec<&str> = r.labels.iter().map(|l| l.label.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cat", "dog", "owl"]);
        assert!(
            r.labels.windows(2).all(|w| w[0].score >= w[1].score),
            "best first: {r:?}"
        );
        let sum: f32 = r.labels.iter().map(|l| l.score).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_the_softmax_of_the_model_logits() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let bytes = png(32, 32, 7);
    let r: ClassifyResponse =
        serde_json::from_slice(&classify_png(&app, bytes.clone()).await.body).expect("response");
    let model = Model::load_path(&config.model, BatchMode::Single).expect("model");
    let tensor = imaging::decode_exact(&bytes, InputSpec::rgb(32, 32), DecodeLimits::default())
        .expect("decode");
    let logits = model.run(&tensor).expect("run").remove(0).data;
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    for ls in &r.labels {
        let i = LABELS
            .iter()
            .position(|l| *l == ls.label)
            .expect("known label");
        let want = (logits[i] - max).exp() / z;
        assert!(
            (ls.score - want).abs() < 1e-5,
            "{}: {} vs {want}",
            ls.label,
            ls.score
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_returns_one_result_per_part_in_order() {
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let images = [png(32, 32, 11), jpeg(32, 32, 12), png(32, 32, 13)];
    let (ct, body) = multipart(&[
        ("first", Some("image/png"), &images[0]),
        ("second", Some("image/jpeg"), &images[1]),
        ("third", Some("image/png"), &images[2]),
    ]);
    let reply = send(&app, post("/v1/classify/batch", Some(&ct), body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let batch: BatchResponse = serde_json::from_slice(&reply.body).expect("response");
    assert_eq!(batch.model, "fixture-recognizer");
    let names: Vec<_> = batch.results.iter().map(|r| r.name.as_deref()).collect();
    assert_eq!(names, [Some("first"), Some("second"), Some("third")]);
    for (item, (bytes, ct)) in batch.results.iter().zip([
        (&images[0], "image/png"),
        (&images[1], "image/jpeg"),
        (&images[2], "image/png"),
    ]) {
        let single = send(&app, post("/v1/classify", Some(ct), bytes.clone())).await;
        let single: ClassifyResponse = serde_json::from_slice(&single.body).expect("single");
        assert_eq!(item.labels.len(), single.labels.len());
        for (a, b) in item.labels.iter().zip(&single.labels) {
            assert_eq!(a.label, b.label);
            assert!((a.score - b.score).abs() < 1e-5);
        }
    }
}

/// Every bad input of the single-image route: a 4xx JSON error with its stable code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_single_uploads_get_stable_4xx_codes() {
    let (_dir, mut config) = fixture_config();
    config.max_body_bytes = 8 * 1024;
    config.max_pixels = 40 * 40;
    let (_, app) = router(&config);
    let big_png = png(48, 48, 3); // noisy: ~7 KB, under the body limit, over the pixel limit
    assert!(big_png.len() < 8 * 1024);
    let mut truncated = png(32, 32, 4);
    truncated.truncate(truncated.len() / 2);
    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        ErrorCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "text",
            Some("image/png"),
            b"definitely not an image".to_vec(),
            ErrorCode::InvalidImage,
            "PNG",
        ),
        (
            "empty",
            Some("image/png"),
            Vec::new(),
            ErrorCode::InvalidImage,
            "image",
        ),
        (
            "truncated",
            Some("image/png"),
            truncated,
            ErrorCode::InvalidImage,
            "image",
        ),
        (
            "gif",
            Some("image/gif"),
            b"GIF89a".to_vec(),
            ErrorCode::UnsupportedMediaType,
            "image/gif",
        ),
        (
            "json",
            Some("application/json"),
            b"{}".to_vec(),
            ErrorCode::UnsupportedMediaType,
            "image/png",
        ),
        (
            "no type",
            None,
            png(32, 32, 5),
            ErrorCode::UnsupportedMediaType,
            "Content-Type",
        ),
        (
            "small",
            Some("image/png"),
            png(16, 16, 6),
            ErrorCode::WrongSize,
            "32x32",
        ),
        (
            "not square",
            Some("image/jpeg"),
            jpeg(32, 24, 6),
            ErrorCode::WrongSize,
            "perturbed",
        ),
        (
            "too many pixels",
            Some("image/png"),
            big_png,
            ErrorCode::ImageTooLarge,
            "1600",
        ),
        (
            "too large",
            Some("image/png"),
            vec![0u8; 9 * 1024],
            ErrorCode::PayloadTooLarge,
            "8192",
        ),
    ];
    for (what, ct, body, code, needle) in cases {
        let reply = send(&app, post("/v1/classify", ct, body)).await;
        let message = reply.expect_error(code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} should mention {needle:?}"
        );
    }
    // A declared Content-Length over the limit is refused too.
    let mut request = post("/v1/classify", Some("image/png"), vec![0u8; 20_000]);
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, 20_000.into());
    send(&app, request)
        .await
        .expect_error(ErrorCode::PayloadTooLarge);
    // After all that the server still serves.
    assert_eq!(
        classify_png(&app, png(32, 32, 8)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_stable_4xx_codes_naming_the_image() {
    let (_dir, mut config) = fixture_config();
    config.max_batch_images = 3;
    config.max_batch_body_bytes = 64 * 1024;
    config.max_body_bytes = 16 * 1024;
    let (_, app) = router(&config);
    let good_png = png(32, 32, 1);
    let small_png = png(8, 8, 2);
    let noise_bytes = vec![7u8; 20 * 1024];
    let huge_bytes = vec![7u8; 70 * 1024];
    let (good, small, noise, huge): (&[u8], &[u8], &[u8], &[u8]) =
        (&good_png, &small_png, &noise_bytes, &huge_bytes);
    type Case<'a> = (&'a str, Vec<Part<'a>>, ErrorCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "wrong size",
            vec![
                ("a", Some("image/png"), good),
                ("b", Some("image/png"), small),
            ],
            ErrorCode::WrongSize,
            "image 1 (\"b\")",
        ),
        (
            "garbage",
            vec![("a", Some("image/png"), &b"nope"[..])],
            ErrorCode::InvalidImage,
            "image 0",
        ),
        (
            "part type",
            vec![("a", Some("text/plain"), good)],
            ErrorCode::UnsupportedMediaType,
            "text/plain",
        ),
        (
            "no part type",
            vec![("a", None, good)],
            ErrorCode::UnsupportedMediaType,
            "Content-Type",
        ),
        (
            "too many",
            vec![("a", Some("image/png"), good); 4],
            ErrorCode::PayloadTooLarge,
            "at most 3",
        ),
        (
            "part too big",
            vec![("a", Some("image/png"), noise)],
            ErrorCode::PayloadTooLarge,
            "16384",
        ),
        (
            "body too big",
            vec![("a", Some("image/png"), huge)],
            ErrorCode::PayloadTooLarge,
            "65536",
        ),
        ("empty", vec![], ErrorCode::InvalidImage, "no image"),
    ];
    for (what, parts, code, needle) in cases {
        let (ct, body) = multipart(&parts);
        let message = send(&app, post("/v1/classify/batch", Some(&ct), body))
            .await
            .expect_error(code);
        assert!(
            message.contains(needle),
            "{what}: {message:?} should mention {needle:?}"
        );
    }
    // Not multipart at all, and a malformed multipart body.
    send(
        &app,
        post("/v1/classify/batch", Some("image/png"), good.to_vec()),
    )
    .await
    .expect_error(ErrorCode::UnsupportedMediaType);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    send(
        &app,
        post("/v1/classify/batch", Some(&ct), b"--garbage".to_vec()),
    )
    .await
    .expect_error(ErrorCode::InvalidImage);
}

/// A PNG whose header declares 2000×2000 16-bit RGBA (under the pixel limit) is refused from its
/// header alone: the answer does not wait for, or depend on, its pixel data. The cut-off copy
/// proves it: decoding it would fail on the missing data (`invalid_image`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_size_is_decided_from_the_header_before_decoding() {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Rgba};
    let (_dir, config) = fixture_config();
    let (_, app) = router(&config);
    let rgba16 = |w, h| {
        let img: ImageBuffer<Rgba<u16>, Vec<u16>> = ImageBuffer::new(w, h);
        let mut out = Vec::new();
        DynamicImage::ImageRgba16(img)
            .write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    };
    let full = rgba16(2000, 2000);
    assert!(full.len() < 1 << 20, "compresses well: {}", full.len());
    let message = classify_png(&app, full.clone())
        .await
        .expect_error(ErrorCode::WrongSize);
    assert!(message.contains("2000x2000"), "{message}");
    // Signature, IHDR and the first bytes of IDAT only.
    let message = classify_png(&app, full[..100].to_vec())
        .await
        .expect_error(ErrorCode::WrongSize);
    assert!(message.contains("2000x2000"), "{message}");
    // The header check does not refuse what the decoder accepts: 16-bit RGBA at the right size.
    let reply = classify_png(&app, rgba16(32, 32)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
