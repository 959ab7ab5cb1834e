//! Encrypting a trained patch-embedding model with a secret key, without retraining and without
//! changing its outputs (Iijima & Kiya, 2022).
//!
//! A model whose first convolution has kernel = stride = `p` and no padding (ConvMixer's stem, a
//! ViT patch embedding) computes `e_j = W z_j + b` on each `p×p` patch `z_j` flattened to
//! `L = 3p²` values. Images encrypted with the key's patch permutation π
//! ([`Scheme::Patch`], `x'[k] = x[π(k)]`) are matched by permuting the stem's weight columns,
//! `W'[:, k] = W[:, π(k)]`, so `W' x' = W x` exactly.
//!
//! The runtime normalises per channel before the model, `z[k] = (x[k] − m_c(k)) / s_c(k)`, and a
//! shuffled value is normalised with the statistics of the channel it lands in, not the one it
//! came from. The correction is folded into the weights and the bias:
//! `W'[:, k] = W[:, π(k)] · s_c(k) / s_c(π(k))` and
//! `b' = b + Σ_k W[:, π(k)] · (m_c(k) − m_c(π(k))) / s_c(π(k))`, which makes the encrypted model on
//! encrypted images equal to the plain model on plain images for any normalisation.

use prost::Message;
use scrim_core::blockwise::{BlockTransform, Scheme};
use scrim_core::keys::SecretKey;
use scrim_core::manifest::Manifest;
use tract_onnx::pb;

use crate::proto::{decode, floats, graph_mut};
use crate::{Error, Result};

/// What [`encrypt_patch_model`] found and changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedStem {
    /// Name of the convolution node that was encrypted.
    pub node: String,
    /// Patch size `p` (kernel = stride).
    pub patch: usize,
    /// Output channels of the stem.
    pub channels: usize,
}

/// Encrypts the first convolution of `onnx` with `key`'s patch permutation and returns the new
/// ONNX bytes and a manifest that requires the `patch` transform with block `p`.
///
/// # Errors
/// [`Error::InvalidModel`] when the model's first convolution is not a patch embedding fed by the
/// image input (kernel = stride, square, no padding, no groups, no dilation, 3 input channels),
/// or its weights are not float initializers; [`Error::InvalidManifest`] when the input size is
/// not a multiple of `p`.
pub fn encrypt_patch_model(
    onnx: &[u8],
    manifest: &Manifest,
    key: &SecretKey,
) -> Result<(Vec<u8>, Manifest, EncryptedStem)> {
    let bad = |m: String| Error::InvalidModel(m);
    let mut model = decode(onnx)?;
    let graph = graph_mut(&mut model)?;
    let initialised: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let image = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .find(|n| !initialised.contains(n.as_str()))
        .ok_or_else(|| bad("the ONNX model has no image input".into()))?;
    let idx = graph
        .node
        .iter()
        .position(|n| n.op_type == "Conv")
        .ok_or_else(|| bad("the model has no Conv node to encrypt".into()))?;
    let node = graph.node[idx].clone();
    if node.input.first() != Some(&image) {
        return Err(bad(format!(
            "the first Conv ({:?}) does not read the image input {image:?} directly; only a stem \
             conv applied to the image can be encrypted exactly",
            node.name
        )));
    }
    let ints = |name: &str| -> Option<Vec<i64>> {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
    };
    let group = node
        .attribute
        .iter()
        .find(|a| a.name == "group")
        .map_or(1, |a| a.i);
    let kernel = ints("kernel_shape").unwrap_or_default();
    let strides = ints("strides").unwrap_or_else(|| vec![1, 1]);
    let pads = ints("pads").unwrap_or_else(|| vec![0; 4]);
    let dil = ints("dilations").unwrap_or_else(|| vec![1, 1]);
    let auto_pad = node
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default();
    let p = kernel.first().copied().unwrap_or(0);
    if kernel.len() != 2
        || kernel[1] != p
        || p < 1
        || strides != kernel
        || pads.iter().any(|&x| x != 0)
        || dil.iter().any(|&d| d != 1)
        || group != 1
        || !(auto_pad.is_empty() || auto_pad == "NOTSET" || auto_pad == "VALID")
    {
        return Err(bad(format!(
            "the first Conv ({:?}) is not a patch embedding: kernel {kernel:?}, strides {strides:?}, \
             pads {pads:?}, dilations {dil:?}, group {group} (need kernel = strides, square, no \
             padding, no dilation, group 1)",
            node.name
        )));
    }
    let p = p as usize;
    let w_name = node
        .input
        .get(1)
        .cloned()
        .ok_or_else(|| bad("the stem Conv has no weight input".into()))?;
    let w_init = graph
        .initializer
        .iter()
        .find(|t| t.name == w_name)
        .ok_or_else(|| bad(format!("the stem weight {w_name:?} is not an initializer")))?;
    let dims: Vec<usize> = w_init.dims.iter().map(|&d| d as usize).collect();
    if dims.len() != 4 || dims[1] != 3 || dims[2] != p || dims[3] != p {
        return Err(bad(format!(
            "the stem weight has shape {dims:?}, expected [out, 3, {p}, {p}]"
        )));
    }
    let out_ch = dims[0];
    let w = floats(w_init)?;
    let l = 3 * p * p;
    let bias_name = node.input.get(2).filter(|n| !n.is_empty()).cloned();
    let b = match &bias_name {
        Some(name) => floats(
            graph
                .initializer
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| bad(format!("the stem bias {name:?} is not an initializer")))?,
        )?,
        None => vec![0.0; out_ch],
    };
    if b.len() != out_ch || w.len() != out_ch * l {
        return Err(bad(
            "the stem weight or bias has the wrong number of values".into(),
        ));
    }

    let transform = BlockTransform::new(key, Scheme::Patch, p)?;
    let perm = transform.permutation().unwrap_or_default();
    let norm = &manifest.normalization;
    // ONNX weight index of patch value k (row, col, channel; channel fastest) for output o.
    let widx = |o: usize, k: usize| {
        let (px, ch) = (k / 3, k % 3);
        ((o * 3 + ch) * p + px / p) * p + px % p
    };
    let mut w2 = vec![0.0f32; w.len()];
    let mut b2 = b.clone();
    for o in 0..out_ch {
        let mut shift = 0.0f64;
        for (k, &src) in perm.iter().enumerate() {
            let (ck, cs) = (k % 3, src % 3);
            let wsrc = w[widx(o, src)];
            w2[widx(o, k)] = wsrc * norm.std[ck] / norm.std[cs];
            shift += f64::from(wsrc) * f64::from(norm.mean[ck] - norm.mean[cs])
                / f64::from(norm.std[cs]);
        }
        b2[o] += shift as f32;
    }

    let mut new_manifest = manifest.clone();
    new_manifest.key = Some(transform.requirement());
    new_manifest.validate()?;

    // Write fresh initializers (new names, so a weight shared with another node stays intact).
    let w2_name = format!("{w_name}_encrypted");
    let b2_name = format!("{}_encrypted", bias_name.as_deref().unwrap_or("stem_bias"));
    graph.initializer.push(pb::TensorProto {
        name: w2_name.clone(),
        dims: w_init_dims(&dims),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: w2.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    });
    graph.initializer.push(pb::TensorProto {
        name: b2_name.clone(),
        dims: vec![out_ch as i64],
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: b2.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    });
    let n = &mut graph.node[idx];
    n.input.truncate(1);
    n.input.push(w2_name);
    n.input.push(b2_name);
    // Drop the plain weights unless something else still reads them.
    let still_used =
        |name: &str, g: &pb::GraphProto| g.node.iter().any(|n| n.input.iter().any(|i| i == name));
    for name in [Some(w_name.clone()), bias_name.clone()]
        .into_iter()
        .flatten()
    {
        if !still_used(&name, graph) {
            graph.initializer.retain(|t| t.name != name);
        }
    }
    model.doc_string = format!(
        "{} [patch-embedding encrypted with a secret key: scheme patch, block {p}]",
        model.doc_string
    );
    Ok((
        model.encode_to_vec(),
        new_manifest,
        EncryptedStem {
            node: node.name,
            patch: p,
            channels: out_ch,
        },
    ))
}

fn w_init_dims(dims: &[usize]) -> Vec<i64> {
    dims.iter().map(|&d| d as i64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrim_core::manifest::Normalization;
    use scrim_core::{BatchMode, ImageTensor, Model};

    fn images(n: usize, size: usize, seed: u32) -> ImageTensor {
        let mut s = seed | 1;
        let data = (0..n * 3 * size * size)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                f32::from((s % 256) as u8) / 255.0
            })
            .collect();
        ImageTensor::new([n, 3, size, size], data).expect("shape")
    }

    #[test]
    fn encrypted_model_on_encrypted_images_equals_plain_model() {
        let labels = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let (onnx, mut manifest) = scrim_core::fixtures::recognizer(16, &labels);
        for norm in [
            Normalization::identity(3),
            Normalization {
                mean: vec![0.49, 0.48, 0.45],
                std: vec![0.25, 0.24, 0.26],
            },
        ] {
            manifest.normalization = norm;
            let key = SecretKey::from_bytes([5; 32]);
            let (enc, enc_manifest, stem) =
                encrypt_patch_model(&onnx, &manifest, &key).expect("encrypt");
            assert_eq!(stem.patch, 4);
            let req = enc_manifest.key.clone().expect("key requirement");
            assert_eq!((req.scheme.as_str(), req.block), ("patch", 4));
            let plain = Model::load(&onnx, manifest.clone(), BatchMode::Dynamic).expect("plain");
            let model = Model::load(&enc, enc_manifest, BatchMode::Dynamic).expect("enc");
            let x = images(64, 16, 17);
            let t = BlockTransform::new(&key, Scheme::Patch, 4).expect("t");
            let xe = t.apply(&x).expect("apply");
            let want = &plain.run(&x).expect("run")[0].data;
            let got = &model.run(&xe).expect("run")[0].data;
            let diff = want
                .iter()
                .zip(got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-4, "max |diff| {diff}");
            // Plain images, or images under another key, give other logits. (Predictions of
            // random weights on noise barely depend on the input; the trained-model test in
            // scrim-models checks that predictions change.)
            let other =
                BlockTransform::new(&SecretKey::from_bytes([6; 32]), Scheme::Patch, 4).expect("t");
            for wrong in [x.clone(), other.apply(&x).expect("apply")] {
                let out = &model.run(&wrong).expect("run")[0].data;
                let changed = out
                    .chunks(labels.len())
                    .zip(want.chunks(labels.len()))
                    .filter(|(a, b)| a.iter().zip(*b).any(|(u, v)| (u - v).abs() > 1e-2))
                    .count();
                assert!(changed >= 60, "only {changed}/64 logit rows changed");
            }
        }
    }

    #[test]
    fn refuses_models_without_a_patch_stem() {
        let (onnx, manifest) = scrim_core::fixtures::perturber(16, 1.0);
        let err = encrypt_patch_model(&onnx, &manifest, &SecretKey::from_bytes([1; 32]))
            .expect_err("3x3 pad 1");
        assert!(err.to_string().contains("not a patch embedding"), "{err}");
        let err = encrypt_patch_model(b"junk", &manifest, &SecretKey::from_bytes([1; 32]))
            .expect_err("junk");
        assert!(err.to_string().contains("ONNX"), "{err}");
    }
}
