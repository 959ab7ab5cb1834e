"""Times perturber ONNX files in onnxruntime on one thread (scrim bench, section 1).

Usage: python ort_perturb.py ITERATIONS MODEL.onnx [MODEL.onnx ...]
Prints one JSON object: {path: {"median_ms": m, "min_ms": m, "runs": n}}. Each model runs on a
random 1x3xHxW image (H and W from the model's declared input) after three unmeasured runs.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def time_model(path, iterations):
    opts = ort.SessionOptions()
    # One core, as on a phone, and as tract runs in the bench.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "min_ms": min(times), "runs": iterations}


def main():
    iterations = int(sys.argv[1])
    out = {p: time_model(p, iterations) for p in sys.argv[2:]}
    out["_version"] = ort.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
