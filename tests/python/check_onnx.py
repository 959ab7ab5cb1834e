#!/usr/bin/env python3
"""Checks every ONNX file in a folder with onnx.checker and compares onnxruntime's outputs with
the outputs tract produced (stored beside each model as NAME.json).

Usage: check_onnx.py DIR [--tol 1e-4]
Exit status 0 when every model passes; prints one line per model and a closing tally.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def check(model_path: pathlib.Path, tol: float) -> str | None:
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    fixture_path = model_path.with_suffix(".json")
    if not fixture_path.exists():
        return None  # checker only
    fx = json.loads(fixture_path.read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    x = np.asarray(fx["input"], dtype=np.float32).reshape(fx["input_shape"])
    outs = sess.run([o["name"] for o in fx["outputs"]], {sess.get_inputs()[0].name: x})
    for want, got in zip(fx["outputs"], outs):
        w = np.asarray(want["data"], dtype=np.float32).reshape(want["shape"])
        if got.shape != w.shape:
            return f"output {want['name']}: shape {got.shape} != {w.shape}"
        err = float(np.max(np.abs(got - w)))
        if err > tol:
            return f"output {want['name']}: max |onnxruntime - tract| = {err:.3g} > {tol}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    models = sorted(pathlib.Path(args.dir).glob("*.onnx"))
    if not models:
        print(f"no .onnx files in {args.dir}", file=sys.stderr)
        return 2
    failed = 0
    for m in models:
        try:
            problem = check(m, args.tol)
        except Exception as e:  # checker and runtime raise many types
            problem = f"{type(e).__name__}: {e}"
        print(f"{'FAIL' if problem else 'ok  '} {m.name}" + (f": {problem}" if problem else ""))
        failed += bool(problem)
    print(f"onnx: {len(models) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
