"""The server an operator would write instead of scrim-cloud (scrim bench, section 3).

Usage: python peer_server.py RECOGNIZER.onnx [PORT]
One onnxruntime session (one thread), an aiohttp server on 127.0.0.1, no batching:
POST /v1/classify with a PNG/JPEG body answers {"label", "scores"} like scrim-cloud.
Prints {"port": P} once listening (PORT 0, the default, picks a free one).
"""

import asyncio
import io
import json
import sys

import numpy as np
import onnxruntime as ort
from aiohttp import web
from PIL import Image

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
meta = json.load(open(sys.argv[1].removesuffix(".onnx") + ".json"))
labels, side = meta["labels"], meta["input"]["height"]
mean = np.array(meta["normalization"]["mean"], np.float32).reshape(3, 1, 1)
std = np.array(meta["normalization"]["std"], np.float32).reshape(3, 1, 1)
name = session.get_inputs()[0].name


async def classify(request):
    image = Image.open(io.BytesIO(await request.read())).convert("RGB")
    if image.size != (side, side):
        return web.json_response({"error": {"code": "wrong_size"}}, status=400)
    x = (np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
    logits = session.run(None, {name: x[None]})[0][0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return web.json_response({"label": labels[int(p.argmax())], "scores": p.tolist()})


async def main(port):
    app = web.Application(client_max_size=4 << 20)
    app.router.add_post("/v1/classify", classify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
