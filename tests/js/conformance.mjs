// The page's device path (cloud-server/try-page/device.mjs) on cases written by
// tests/tests/try_page/: decoded photo pixels, scrim-core's graph outputs and noise in; the
// model input, the upload and its PNG out, for the Rust test to compare bit for bit.
//
//   node tests/js/conformance.mjs CASES_DIR [ORT_DIST]
//
// With ORT_DIST (onnxruntime-web's dist/ folder), each case's graph (model.onnx) also runs in
// onnxruntime-web on the page's normalised input, and its outputs go to js-ort-K.bin (f32 LE)
// with their shapes in js-ort.json: the Rust test compares them with tract's.
//
// CASES_DIR holds one folder per case: meta.json ({ manifest, width, height, outputs: [{ dims }] }),
// rgb.bin (8-bit RGB), out-K.bin (f32 LE), noise.bin (f32 LE). Writes js-x.bin (f32 LE),
// js-base.bin and js-sigma.bin (the upload before its noise, f32 LE), js-upload.bin (8-bit RGB)
// and js-upload.png into each. Also quantises the f32 values of CASES_DIR/quantize-in.bin into
// quantize-out.bin.
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as device from '../../cloud-server/try-page/device.mjs';

const f32 = (path) => {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};

const dir = process.argv[2];
const ortDist = process.argv[3];
let ort = null;
if (ortDist) {
  ort = await import(pathToFileURL(join(ortDist, 'ort.wasm.bundle.min.mjs')).href);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmBinary = readFileSync(join(ortDist, 'ort-wasm-simd-threaded.wasm'));
}
const probes = f32(join(dir, 'quantize-in.bin'));
writeFileSync(join(dir, 'quantize-out.bin'), Uint8Array.from(probes, (v) => device.quantize(v)));

for (const name of readdirSync(dir).sort()) {
  const c = join(dir, name);
  if (!statSync(c).isDirectory()) continue; // the quantisation probes

  const meta = JSON.parse(readFileSync(join(c, 'meta.json'), 'utf8'));
  const spec = device.perturberSpec(meta.manifest);
  const rgb = new Uint8Array(readFileSync(join(c, 'rgb.bin')));
  const x = device.toTensor(rgb, meta.width, meta.height, spec);
  const outputs = meta.outputs.map((o, k) => ({ dims: o.dims, data: f32(join(c, `out-${k}.bin`)) }));
  const base = device.uploadBase(spec, x, outputs);
  const upload = device.drawUpload(spec, base, f32(join(c, 'noise.bin')));
  writeFileSync(join(c, 'js-x.bin'), new Uint8Array(x.buffer));
  writeFileSync(join(c, 'js-base.bin'), new Uint8Array(base.base.buffer));
  writeFileSync(join(c, 'js-sigma.bin'), new Uint8Array(base.sigma.buffer));
  writeFileSync(join(c, 'js-upload.bin'), upload);
  writeFileSync(join(c, 'js-upload.png'), device.encodePng(upload, spec.width, spec.height));
  if (ort) {
    // What the page does: the graph on the normalised input, outputs in the graph's order.
    const session = await ort.InferenceSession.create(new Uint8Array(readFileSync(join(c, 'model.onnx'))));
    const feed = { [session.inputNames[0]]: new ort.Tensor('float32', device.normalize(x, spec), [1, 3, spec.height, spec.width]) };
    const results = await session.run(feed);
    const dims = session.outputNames.map((name, k) => {
      writeFileSync(join(c, `js-ort-${k}.bin`), new Uint8Array(results[name].data.buffer));
      return results[name].dims;
    });
    writeFileSync(join(c, 'js-ort.json'), JSON.stringify(dims));
  }
  console.log(`${name}: ${meta.width}x${meta.height} -> ${spec.width}x${spec.height}`);
}

// The page's own noise (crypto.getRandomValues): unit variance, zero mean. 200k samples: the
// standard error of the mean is 0.0022, of the standard deviation 0.0016 (Gaussian) to 0.0035
// (Laplace); the tolerances are about five of them.
for (const kind of ['gaussian', 'laplace']) {
  const e = device.sampleNoise(kind, 200_001, device.cryptoU32);
  let s = 0, q = 0, tail = 0;
  for (const v of e) { s += v; q += v * v; if (Math.abs(v) > 3) tail++; }
  const mean = s / e.length;
  const sd = Math.sqrt(q / e.length - mean * mean);
  console.log(`${kind}: mean ${mean.toFixed(4)}, sd ${sd.toFixed(4)}, P(|e|>3) ${(tail / e.length).toFixed(4)}`);
  if (Math.abs(mean) > 0.011 || Math.abs(sd - 1) > 0.02) {
    console.error(`${kind} noise is not unit variance around zero`);
    process.exit(1);
  }
  // Laplace has heavier tails: P(|e| > 3) is about 1.4% against 0.27% for a Gaussian.
  const want = kind === 'gaussian' ? [0.0017, 0.0038] : [0.011, 0.018];
  if (tail / e.length < want[0] || tail / e.length > want[1]) {
    console.error(`${kind} noise has the wrong tails`);
    process.exit(1);
  }
}
