// Scrim's device path in the browser: the same steps and the same f32 arithmetic as scrim-core
// (core/runtime/src: imaging.rs, perturb.rs, noise.rs, release.rs, upload.rs, tensor.rs).
//
// Pure functions, no DOM and no onnxruntime: the page (app.js) runs the perturber's graph and
// calls these; the conformance test (tests/tests/try_page/, through tests/js/conformance.mjs)
// calls them in node with scrim-core's own model outputs and noise, and compares the uploads
// with scrim-core's bit for bit.
//
// Every f32 operation of the Rust code is an f64 operation here followed by Math.fround: for
// +, −, ×, ÷ and √ of f32 inputs that rounds exactly as f32 arithmetic does.

const f = Math.fround;

/** ITU-R BT.601 luma weights (noise.rs `LUMA`). */
export const LUMA = [f(0.299), f(0.587), f(0.114)];
/** Standard deviation of the luma after tone standardisation (noise.rs `STANDARD_STD`). */
export const STANDARD_STD = f(0.2);
/** Added to the luma variance before its square root (noise.rs `STANDARD_EPS`). */
export const STANDARD_EPS = f(1e-4);
/** The decoder's pixel limit (imaging.rs `DEFAULT_MAX_PIXELS`). */
export const MAX_PIXELS = 40_000_000;
/** The newest manifest format this page reads (manifest `MANIFEST_VERSION`). */
export const MANIFEST_VERSION = 3;

/**
 * Checks that a manifest is a perturber this page can run, and returns its input and spec.
 * Throws an Error naming what is wrong.
 */
export function perturberSpec(manifest) {
  if (!manifest || typeof manifest !== 'object') throw new Error('the manifest is not an object');
  if (!(manifest.format_version >= 1 && manifest.format_version <= MANIFEST_VERSION)) {
    throw new Error(`manifest format ${manifest.format_version} is not one this page reads (1 to ${MANIFEST_VERSION})`);
  }
  if (manifest.role !== 'perturber') throw new Error(`the model is a ${manifest.role}, not a perturber`);
  const input = manifest.input;
  if (!input || input.channels !== 3 || !(input.height > 0) || !(input.width > 0)) {
    throw new Error('the manifest input must be 3 channels of a positive size');
  }
  const spec = manifest.perturber;
  if (!spec) throw new Error('the manifest has no perturber section');
  const outputs = spec.outputs ?? ['sigma'];
  const fill = f(spec.fill ?? 0.5);
  const release = spec.release ?? null;
  if (release) {
    if (outputs.length !== 1 || outputs[0] !== 'map') throw new Error('a bounded release has one output, "map"');
    if (input.height % release.side || input.width % release.side || input.height / release.side !== input.width / release.side) {
      throw new Error(`release side ${release.side} must divide the input ${input.height}x${input.width} by one factor`);
    }
    if (release.channels !== 1 && release.channels !== 3) throw new Error('release channels must be 1 or 3');
  } else {
    for (const o of outputs) {
      if (!['sigma', 'shift', 'keep'].includes(o)) throw new Error(`unknown perturber output ${JSON.stringify(o)}`);
    }
  }
  if (manifest.key) throw new Error('this perturber needs a secret key transform, which the page cannot apply');
  const erase = spec.erase ?? null;
  if (erase) {
    const d = erase.channels * input.height * input.width;
    if (release) throw new Error('a bounded release has no image to erase');
    if (erase.channels !== 1 && erase.channels !== 3) {
      throw new Error('erase channels must be 1 or 3');
    }
    if (!(erase.rank >= 1) || erase.mean?.length !== d || erase.down?.length !== d * erase.rank
      || erase.up?.length !== d * erase.rank) {
      throw new Error(`the erasure needs ${d} means and ${d}×${erase.rank} tables`);
    }
  }
  const norm = manifest.normalization ?? { mean: [0, 0, 0], std: [1, 1, 1] };
  return {
    height: input.height,
    width: input.width,
    outputs,
    fill,
    standardize: Boolean(spec.standardize),
    // The tables as the f32 values Rust holds (JSON carries their shortest decimal form).
    erase: erase && {
      label: String(erase.label ?? ''),
      channels: erase.channels,
      rank: erase.rank,
      mean: Float32Array.from(erase.mean),
      down: Float32Array.from(erase.down),
      up: Float32Array.from(erase.up),
    },
    noise: spec.noise ?? 'gaussian',
    release: release && {
      side: release.side,
      channels: release.channels,
      amplitude: f(release.amplitude),
      sigma: f(release.sigma),
      bits: release.bits_per_upload,
    },
    mean: norm.mean.map(f),
    std: norm.std.map(f),
  };
}

// ---------------------------------------------------------------------------------------------
// Resizing: the `image` crate's `imageops::resize` with `FilterType::Triangle` (what
// imaging.rs `resize_rgb` calls): a vertical pass into f32, then a horizontal pass rounded to
// 8 bits. The filter widens by the scale factor when it shrinks, so photos are area-averaged.

function triangle(x) {
  const a = Math.abs(x);
  return a < 1 ? f(1 - a) : 0;
}

/** The taps of one output sample: first input index and normalised f32 weights. */
function taps(inLen, outLen, out) {
  const ratio = f(inLen / outLen);
  const sratio = ratio < 1 ? 1 : ratio;
  const support = sratio; // the triangle's support is 1
  let centre = f(f(out + 0.5) * ratio);
  let left = Math.floor(f(centre - support));
  left = Math.min(Math.max(left, 0), inLen - 1);
  let right = Math.ceil(f(centre + support));
  right = Math.min(Math.max(right, left + 1), inLen);
  centre = f(centre - 0.5);
  const ws = [];
  let sum = 0;
  for (let i = left; i < right; i++) {
    const w = triangle(f(f(i - centre) / sratio));
    ws.push(w);
    sum = f(sum + w);
  }
  for (let k = 0; k < ws.length; k++) ws[k] = f(ws[k] / sum);
  return { left, ws };
}

/**
 * Resizes 8-bit RGB (`rgb`, `width × height`, interleaved) to `newWidth × newHeight` as
 * scrim-core does. Returns a new Uint8Array.
 */
export function resizeRgb(rgb, width, height, newWidth, newHeight) {
  if (width === newWidth && height === newHeight) return Uint8Array.from(rgb);
  // Vertical pass: width × newHeight, f32.
  const mid = new Float32Array(width * newHeight * 3);
  for (let oy = 0; oy < newHeight; oy++) {
    const { left, ws } = taps(height, newHeight, oy);
    for (let x = 0; x < width; x++) {
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < ws.length; k++) {
        const p = ((left + k) * width + x) * 3;
        const w = ws[k];
        r = f(r + f(rgb[p] * w));
        g = f(g + f(rgb[p + 1] * w));
        b = f(b + f(rgb[p + 2] * w));
      }
      const q = (oy * width + x) * 3;
      mid[q] = r; mid[q + 1] = g; mid[q + 2] = b;
    }
  }
  // Horizontal pass: newWidth × newHeight, clamped to [0, 255] and rounded half away from 0.
  const out = new Uint8Array(newWidth * newHeight * 3);
  for (let ox = 0; ox < newWidth; ox++) {
    const { left, ws } = taps(width, newWidth, ox);
    for (let y = 0; y < newHeight; y++) {
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < ws.length; k++) {
        const p = (y * width + left + k) * 3;
        const w = ws[k];
        r = f(r + f(mid[p] * w));
        g = f(g + f(mid[p + 1] * w));
        b = f(b + f(mid[p + 2] * w));
      }
      const q = (y * newWidth + ox) * 3;
      out[q] = roundByte(r); out[q + 1] = roundByte(g); out[q + 2] = roundByte(b);
    }
  }
  return out;
}

function roundByte(v) {
  const c = v < 0 ? 0 : v > 255 ? 255 : v;
  return Math.floor(c + 0.5); // c ≥ 0: half away from zero, as f32::round
}

/**
 * Decoded RGB at any size → the model's `[1, 3, H, W]` input in [0, 1] (imaging.rs
 * `to_tensor`). Returns a Float32Array in CHW order.
 */
export function toTensor(rgb, width, height, spec) {
  const px = resizeRgb(rgb, width, height, spec.width, spec.height);
  const plane = spec.width * spec.height;
  const x = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) x[c * plane + i] = f(px[i * 3 + c] / 255);
  }
  return x;
}

/** The manifest's normalisation, `(x − mean) / std` per channel: what the graph is fed. */
export function normalize(x, spec) {
  const plane = spec.width * spec.height;
  const out = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const c = Math.floor(k / plane) % 3;
    out[k] = f(f(x[k] - spec.mean[c]) / spec.std[c]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The upload.

/** `[0,1]` → `0..=255`, rounding to nearest, NaN → 0 (tensor.rs `quantize`). */
export function quantize(v) {
  if (!(v >= 0)) return 0; // negative or NaN
  const c = v > 1 ? 1 : v;
  return Math.floor(f(c * 255) + 0.5);
}

/** How many noise values one upload takes: one per pixel for a grey release, else one per value. */
export function noiseLength(spec) {
  const plane = spec.width * spec.height;
  return spec.release && spec.release.channels === 1 ? plane : 3 * plane;
}

/** Nearest-neighbour expansion of a `[1, C, h, w]` map to `H × W` (tensor.rs `upsample_nearest`). */
function expand(data, c, h, w, height, width) {
  if (h === 0 || w === 0 || height % h !== 0 || width !== (height / h) * w) {
    throw new Error(`cannot expand a ${h}x${w} map to ${height}x${width}: not one integer factor`);
  }
  const k = height / h;
  if (k === 1) return Float32Array.from(data);
  const out = new Float32Array(c * height * width);
  for (let ch = 0; ch < c; ch++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        out[(ch * height + y) * width + x] = data[(ch * h + Math.floor(y / k)) * w + Math.floor(x / k)];
      }
    }
  }
  return out;
}

/** Tone standardisation as a shift (noise.rs `standardize_shift`), for one CHW image. */
export function standardizeShift(x, plane, fill) {
  const luma = new Float32Array(plane);
  let sum = 0, sq = 0; // f64, as in Rust
  for (let k = 0; k < plane; k++) {
    const y = f(f(f(LUMA[0] * x[k]) + f(LUMA[1] * x[plane + k])) + f(LUMA[2] * x[2 * plane + k]));
    luma[k] = y;
    sum += y;
    sq += y * y;
  }
  const mean = sum / plane;
  const v = sq / plane - mean * mean;
  const variance = v > 0 ? v : 0;
  const scale = f(STANDARD_STD / Math.sqrt(variance + STANDARD_EPS));
  const meanF = f(mean);
  const out = new Float32Array(3 * plane);
  for (let k = 0; k < plane; k++) {
    const t = f(f(f(luma[k] - meanF) * scale) + fill);
    for (let c = 0; c < 3; c++) out[c * plane + k] = f(t - x[c * plane + k]);
  }
  return out;
}

/**
 * Adds the concept erasure's correction `−((v − μ)·B)·Cᵀ` to `shift` (erasure.rs
 * `Erasure::add_to`), where `v` is `x + fixed` (its luma plane for a grey erasure), for one CHW
 * image.
 */
export function addErasure(e, x, fixed, shift, plane) {
  const d = e.mean.length;
  const r = e.rank;
  const v = new Float32Array(d);
  if (e.channels === 1) {
    for (let k = 0; k < plane; k++) {
      let y = -0; // Rust's f32 sum starts at −0
      for (let c = 0; c < 3; c++) {
        y = f(y + f(LUMA[c] * f(x[c * plane + k] + fixed[c * plane + k])));
      }
      v[k] = y;
    }
  } else {
    for (let j = 0; j < d; j++) v[j] = f(x[j] + fixed[j]);
  }
  const z = new Float64Array(r);
  for (let i = 0; i < d; i++) {
    const c = f(v[i] - e.mean[i]);
    for (let j = 0; j < r; j++) z[j] += c * e.down[i * r + j];
  }
  const corr = new Float32Array(d);
  for (let i = 0; i < d; i++) {
    let dot = -0;
    for (let j = 0; j < r; j++) dot += z[j] * e.up[i * r + j];
    corr[i] = f(-dot);
  }
  for (let c = 0; c < 3; c++) {
    const src = e.channels === 1 ? 0 : c * plane;
    for (let k = 0; k < plane; k++) shift[c * plane + k] = f(shift[c * plane + k] + corr[src + k]);
  }
}

function clamp01(k) {
  // f32::clamp(0, 1): NaN stays NaN.
  return k < 0 ? 0 : k > 1 ? 1 : k;
}

/**
 * What the upload is before its noise: `{ base, sigma, shared }` (upload.rs `UploadBase`), from
 * the model input `x` (CHW, [0, 1]) and the graph's outputs (`[{ dims, data }]`, in the
 * manifest's order).
 */
export function uploadBase(spec, x, outputs) {
  const { height: h, width: w } = spec;
  const plane = h * w;
  if (spec.release) {
    const r = spec.release;
    const o = outputs[0];
    if (!o || o.dims.length !== 4 || o.dims[1] !== r.channels || o.dims[2] !== r.side || o.dims[3] !== r.side) {
      throw new Error(`the release map must be [1, ${r.channels}, ${r.side}, ${r.side}]`);
    }
    const lo = f(spec.fill - r.amplitude);
    const hi = f(spec.fill + r.amplitude);
    const cells = r.side * r.side;
    const small = new Float32Array(3 * cells);
    for (let ch = 0; ch < 3; ch++) {
      const p = r.channels === 1 ? 0 : ch;
      for (let k = 0; k < cells; k++) {
        const v = o.data[p * cells + k];
        small[ch * cells + k] = Number.isFinite(v) ? (v < lo ? lo : v > hi ? hi : v) : spec.fill;
      }
    }
    const base = expand(small, 3, r.side, r.side, h, w);
    return { base, sigma: new Float32Array(3 * plane).fill(r.sigma), shared: r.channels === 1 };
  }
  let sigma = new Float32Array(3 * plane);
  let shift = null;
  let keep = null;
  spec.outputs.forEach((name, i) => {
    const o = outputs[i];
    if (!o || o.dims.length !== 4) throw new Error(`missing or misshapen output ${name}`);
    if (o.dims[1] !== 3) throw new Error(`the ${name} map has ${o.dims[1]} channels, the image 3`);
    const m = expand(o.data, o.dims[1], o.dims[2], o.dims[3], h, w);
    if (name === 'sigma') sigma = m;
    else if (name === 'shift') shift = m;
    else keep = m;
  });
  if (spec.standardize || spec.erase) {
    const fixed = spec.standardize
      ? standardizeShift(x, plane, spec.fill)
      : new Float32Array(3 * plane);
    const s = Float32Array.from(fixed);
    if (spec.erase) addErasure(spec.erase, x, fixed, s, plane);
    if (shift) for (let j = 0; j < s.length; j++) s[j] = f(s[j] + shift[j]);
    shift = s;
  }
  const base = new Float32Array(3 * plane);
  for (let j = 0; j < base.length; j++) {
    let b = shift ? f(x[j] + shift[j]) : x[j];
    if (keep) {
      const k = clamp01(keep[j]);
      b = f(f(k * b) + f(f(1 - k) * spec.fill));
    }
    base[j] = b;
    const s = sigma[j];
    sigma[j] = s > 0 ? s : 0; // f32::max(s, 0): NaN → 0
  }
  return { base, sigma, shared: false };
}

/**
 * The upload, 8-bit RGB interleaved (`H × W × 3`): `q(clip(base + σ·ε))` with the given noise
 * (`noiseLength(spec)` values, CHW order, or one per pixel when shared), as upload.rs
 * `UploadBase::draw_with`.
 */
export function drawUpload(spec, ub, noise) {
  const plane = spec.width * spec.height;
  if (noise.length !== noiseLength(spec)) {
    throw new Error(`${noise.length} noise values given, the upload takes ${noiseLength(spec)}`);
  }
  const out = new Uint8Array(3 * plane);
  for (let j = 0; j < 3 * plane; j++) {
    const e = ub.shared ? noise[j % plane] : noise[j];
    const c = Math.floor(j / plane);
    out[(j % plane) * 3 + c] = quantize(f(ub.base[j] + f(ub.sigma[j] * e)));
  }
  return out;
}

/** The whole device path after the graph: model input, graph outputs and noise → upload RGB. */
export function deviceUpload(spec, x, outputs, noise) {
  return drawUpload(spec, uploadBase(spec, x, outputs), noise);
}

// ---------------------------------------------------------------------------------------------
// Noise from a CSPRNG. `randomU32(n)` returns n uniformly random 32-bit words (the page passes
// `crypto.getRandomValues`). Gaussian ε by the Box–Muller transform on 53-bit uniforms:
// `√(−2 ln u₁)·cos(2π u₂)` and `…·sin(2π u₂)`, u₁ ∈ (0, 1]; Laplace ε (unit variance) by the
// inverse CDF, `−(1/√2)·sign(u)·ln(1 − 2|u|)`, u ∈ [−½, ½). Each sample is rounded to f32.
// The draw differs from scrim-core's ChaCha20 stream (each side has its own CSPRNG); the
// distribution is the same.

function uniforms(n, randomU32) {
  const words = randomU32(2 * n);
  const u = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    u[i] = ((words[2 * i] >>> 5) * 67108864 + (words[2 * i + 1] >>> 6)) / 9007199254740992; // [0, 1)
  }
  return u;
}

/** `n` unit-variance noise values of `kind` ('gaussian' or 'laplace'). */
export function sampleNoise(kind, n, randomU32) {
  const out = new Float32Array(n);
  if (kind === 'laplace') {
    const u = uniforms(n, randomU32);
    for (let i = 0; i < n; i++) {
      const v = u[i] - 0.5;
      const sign = v < 0 ? -1 : 1;
      out[i] = f(-Math.SQRT1_2 * sign * Math.log(Math.max(1 - 2 * Math.abs(v), Number.MIN_VALUE)));
    }
    return out;
  }
  if (kind !== 'gaussian') throw new Error(`unknown noise kind ${JSON.stringify(kind)}`);
  const u = uniforms(n + (n % 2), randomU32);
  for (let i = 0; i < n; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - u[i]));
    const angle = 2 * Math.PI * u[i + 1];
    out[i] = f(radius * Math.cos(angle));
    if (i + 1 < n) out[i + 1] = f(radius * Math.sin(angle));
  }
  return out;
}

/** `crypto.getRandomValues` in chunks of its 64 KiB limit. */
export function cryptoU32(n) {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i += 16384) globalThis.crypto.getRandomValues(out.subarray(i, Math.min(n, i + 16384)));
  return out;
}

// ---------------------------------------------------------------------------------------------
// PNG: 8-bit RGB, no filter, zlib "stored" blocks. Lossless and byte-for-byte predictable
// (canvas.toBlob may colour-manage); an upload is small (32×32×3 = 3 KiB).

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Encodes interleaved 8-bit RGB as a PNG file. */
export function encodePng(rgb, width, height) {
  const row = width * 3 + 1;
  const raw = new Uint8Array(row * height);
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * row + 1);
  const blocks = Math.max(1, Math.ceil(raw.length / 65535));
  const z = new Uint8Array(2 + raw.length + 5 * blocks + 4);
  z[0] = 0x78; z[1] = 0x01;
  let o = 2;
  for (let i = 0; i < blocks; i++) {
    const part = raw.subarray(i * 65535, Math.min(raw.length, (i + 1) * 65535));
    z[o] = i === blocks - 1 ? 1 : 0;
    z[o + 1] = part.length & 0xff; z[o + 2] = part.length >>> 8;
    z[o + 3] = ~part.length & 0xff; z[o + 4] = (~part.length >>> 8) & 0xff;
    z.set(part, o + 5);
    o += 5 + part.length;
  }
  let a = 1, b = 0;
  for (const v of raw) { a = (a + v) % 65521; b = (b + a) % 65521; }
  new DataView(z.buffer).setUint32(o, ((b << 16) | a) >>> 0);
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, width); dv.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const chunks = [chunk('IHDR', ihdr), chunk('IDAT', z), chunk('IEND', new Uint8Array(0))];
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  const out = new Uint8Array(8 + chunks.reduce((s, c) => s + c.length, 0));
  out.set(sig, 0);
  let p = 8;
  for (const c of chunks) { out.set(c, p); p += c.length; }
  return out;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}
