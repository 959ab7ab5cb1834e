// The try-a-photo page: the browser is the device. It decodes the photo, runs the perturber's
// ONNX graph with onnxruntime-web, applies the device path of device.mjs (the same arithmetic
// as scrim-core), and posts only the upload to /v1/classify. The photo never leaves the page.
//
// State for tests: document.body.dataset.state is 'loading', 'ready', 'working', 'done' or
// 'error'; #status says the same in words.

import * as ort from './ort/ort.wasm.bundle.min.mjs';
import * as device from './device.mjs';

const $ = (id) => document.getElementById(id);
const SCALE = 4; // each upload pixel drawn as SCALE × SCALE screen pixels

function setState(state, message) {
  document.body.dataset.state = state;
  $('status').textContent = message;
}

let spec = null;
let session = null;

async function load() {
  setState('loading', 'Loading the perturber…');
  // The bundle carries its JavaScript glue; only the WebAssembly binary is fetched, from here.
  ort.env.wasm.wasmPaths = { wasm: new URL('ort/ort-wasm-simd-threaded.wasm', document.baseURI).href };
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer: the page needs no cross-origin isolation
  ort.env.wasm.proxy = false;
  const [manifest, onnx] = await Promise.all([
    fetchOk('model/perturber.json').then((r) => r.json()),
    fetchOk('model/perturber.onnx').then((r) => r.arrayBuffer()),
  ]);
  spec = device.perturberSpec(manifest);
  session = await ort.InferenceSession.create(new Uint8Array(onnx), { executionProviders: ['wasm'] });
  $('model').textContent = describe(manifest, spec);
  $('photo').disabled = false;
  setState('ready', 'Pick a photo.');
}

function describe(manifest, s) {
  const kind = s.release
    ? `bounded release: a ${s.release.side}×${s.release.side} ${s.release.channels === 1 ? 'grey ' : ''}render plus noise σ ${s.release.sigma.toFixed(3)}, at most ${s.release.bits.toFixed(1)} bits per upload`
    : `per-pixel noise (${s.outputs.join(', ')}${s.standardize ? ', tone standardisation' : ''}${s.erase ? `, a rank-${s.erase.rank} erasure of ${s.erase.label}` : ''}), ${s.noise} ε`;
  const run = manifest.run_name ? `, run ${manifest.run_name}` : '';
  return `${manifest.name}${run}: ${s.width}×${s.height} uploads, ${kind}.`;
}

async function fetchOk(url, init) {
  const r = await fetch(url, init);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r;
}

async function decode(file) {
  // EXIF orientation applied, no colour management and no premultiplication, like scrim-core's
  // decoder (JPEG decoders may still differ by a level here and there).
  const bitmap = await createImageBitmap(file, {
    imageOrientation: 'from-image',
    premultiplyAlpha: 'none',
    colorSpaceConversion: 'none',
  });
  const { width, height } = bitmap;
  if (width * height > device.MAX_PIXELS) {
    bitmap.close();
    throw new Error(`the photo is ${width}x${height}, more than ${device.MAX_PIXELS} pixels`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; // alpha dropped, as into_rgb8
  }
  return { rgb, width, height };
}

async function perturb(file) {
  const photo = await decode(file);
  const x = device.toTensor(photo.rgb, photo.width, photo.height, spec);
  const feed = { [session.inputNames[0]]: new ort.Tensor('float32', device.normalize(x, spec), [1, 3, spec.height, spec.width]) };
  const results = await session.run(feed);
  const outputs = session.outputNames.map((name) => ({ dims: results[name].dims, data: results[name].data }));
  const base = device.uploadBase(spec, x, outputs);
  const noise = device.sampleNoise(spec.noise, device.noiseLength(spec), device.cryptoU32);
  const upload = device.drawUpload(spec, base, noise);
  return { x, base, upload };
}

async function classify(png) {
  const headers = { 'Content-Type': 'image/png' };
  const token = $('token').value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch('/v1/classify', { method: 'POST', headers, body: png, credentials: 'omit', cache: 'no-store' });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 || r.status === 403) throw new Error('the server wants an API token: enter it above and pick the photo again');
  if (!r.ok) throw new Error(`the server answered ${r.status}: ${body.error?.message ?? 'no detail'}`);
  return body;
}

async function onPhoto() {
  const file = $('photo').files[0];
  if (!file) return;
  setState('working', 'Perturbing on this device…');
  $('labels').replaceChildren();
  try {
    const { x, base, upload } = await perturb(file);
    show('view-photo', chw(x, spec));
    show('view-map', spec.release ? chw(base.base, spec) : sigmaImage(base.sigma, spec));
    show('view-upload', upload);
    $('map-caption').textContent = spec.release
      ? 'the render: the only thing of the photo the upload carries'
      : 'σ, the noise level per pixel (dark: little noise, light: a lot)';
    setState('working', 'Sending the upload (only the upload) to the server…');
    const png = device.encodePng(upload, spec.width, spec.height);
    const answer = await classify(png);
    for (const { label, score } of answer.labels ?? []) {
      const li = document.createElement('li');
      li.textContent = `${label} ${score.toFixed(3)}`;
      $('labels').append(li);
    }
    setState('done', `Classified by ${answer.model}: the server saw a ${spec.width}×${spec.height} upload of ${png.length} bytes.`);
  } catch (e) {
    setState('error', `Error: ${e.message}`);
  }
}

/** A CHW image in [0, 1] → interleaved 8-bit RGB. */
function chw(t, s) {
  const plane = s.width * s.height;
  const out = new Uint8Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = device.quantize(t[c * plane + i]);
  return out;
}

/** σ averaged over the channels, on a black-to-white scale up to the map's maximum. */
function sigmaImage(sigma, s) {
  const plane = s.width * s.height;
  let max = 0;
  for (const v of sigma) max = Math.max(max, v);
  const out = new Uint8Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    const m = (sigma[i] + sigma[plane + i] + sigma[2 * plane + i]) / 3;
    const v = max > 0 ? Math.round((255 * m) / max) : 0;
    out[i * 3] = v; out[i * 3 + 1] = v; out[i * 3 + 2] = v;
  }
  $('sigma-max').textContent = `max σ ${max.toFixed(3)}`;
  return out;
}

function show(id, rgb) {
  const canvas = $(id);
  canvas.width = spec.width;
  canvas.height = spec.height;
  canvas.style.width = `${spec.width * SCALE}px`;
  canvas.style.height = `${spec.height * SCALE}px`;
  const img = new ImageData(spec.width, spec.height);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    img.data[i] = rgb[j]; img.data[i + 1] = rgb[j + 1]; img.data[i + 2] = rgb[j + 2]; img.data[i + 3] = 255;
  }
  canvas.getContext('2d').putImageData(img, 0, 0);
}

$('photo').addEventListener('change', onPhoto);
$('controls').addEventListener('submit', (e) => e.preventDefault()); // Enter in the token field
load().catch((e) => setState('error', `Error: cannot load the perturber: ${e.message}`));
