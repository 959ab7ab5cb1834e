"""Times perturber ONNX files in onnxruntime on one thread (scrim bench, section 1).

Usage: python ort_perturb.py MODEL.onnx [MODEL.onnx ...]
Loads every model (one session each, three unmeasured runs on a random 1x3xHxW image, H and W
from the model's declared input), prints {"_version": v} and then serves timing requests, one
per line on stdin: "INDEX ITERATIONS" times model INDEX (0-based, in argument order) for
ITERATIONS runs and prints {"median_ms": m, "min_ms": m, "runs": n}. The bench interleaves
these requests with tract's own timings of the same files, so both runtimes see the same
machine. Ends at end of input.
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def load(path):
    opts = ort.SessionOptions()
    # One core, as on a phone, and as tract runs in the bench.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for _ in range(3):
        sess.run(None, feed)
    return sess, feed


def time_model(sess, feed, iterations):
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "min_ms": min(times), "runs": iterations}


def main():
    models = [load(p) for p in sys.argv[1:]]
    print(json.dumps({"_version": ort.__version__}), flush=True)
    for line in sys.stdin:
        index, iterations = (int(v) for v in line.split())
        sess, feed = models[index]
        print(json.dumps(time_model(sess, feed, max(iterations, 1))), flush=True)


if __name__ == "__main__":
    main()
