"""The Python SDK (uniffi bindings of scrim-mobile) against a real scrim-cloud on loopback.

Run from the repository root after `scripts/bindings python` and
`cargo build --release -p scrim-cloud` (scripts/test does all of it):

    python tests/python/test_sdk.py

Environment:
  SCRIM_BINDINGS_DIR  folder with scrim_mobile.py and the library
                      (default: mobile-ffi/bindings/python)
  SCRIM_SDK_INSTALLED 1: test the installed `scrim_mobile` package instead (the wheel that
                      scripts/wheel builds, pip-installed in the running virtualenv); the Kotlin
                      check is then skipped
  SCRIM_CLOUD_BIN     the scrim-cloud binary (default: $CARGO_TARGET_DIR/release/scrim-cloud)
  CARGO               cargo, to write the fixture models (default: cargo)
  SCRIM_KOTLINC       a Kotlin (>= 1.6) compiler: also compile mobile-ffi/bindings/kotlin with
                      mobile-ffi/tests/kotlin/SdkTest.kt and run it on the JVM against the same
                      server (skipped when unset)
  SCRIM_JNA_JAR       JNA for the Kotlin run (default: /usr/share/java/jna.jar, Debian's libjna-java)

Fixture models come from `cargo run -p scrim-core --example fixture_models`: untrained, tiny,
deterministic. Needs only the standard library (test images are PNGs written by hand).
"""

import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINDINGS = Path(os.environ.get("SCRIM_BINDINGS_DIR", ROOT / "mobile-ffi" / "bindings" / "python"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CLOUD_BIN = Path(os.environ.get("SCRIM_CLOUD_BIN", TARGET / "release" / "scrim-cloud"))
CARGO = os.environ.get("CARGO", "cargo")

SIZE = 16  # the server's recognizer and the matching perturber
OTHER_SIZE = 8  # a perturber that does not match the server
LABELS = ["cat", "dog", "bird"]
TOKEN = "sdk-test-token"
STARTUP_TIMEOUT_S = 60
KOTLINC = os.environ.get("SCRIM_KOTLINC")
JNA_JAR = Path(os.environ.get("SCRIM_JNA_JAR", "/usr/share/java/jna.jar"))

INSTALLED = os.environ.get("SCRIM_SDK_INSTALLED") == "1"
if not INSTALLED:
    sys.path.insert(0, str(BINDINGS))
import scrim_mobile as sdk  # noqa: E402  (the path is only known at run time)


# ----------------------------------------------------------------------------- helpers


def png(width, height, seed=0):
    """An RGB PNG with a smooth pattern, written with zlib (no imaging library needed)."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type: none
        for x in range(width):
            row += bytes(((x * 255 // max(1, width - 1) + seed) % 256, (y * 255 // max(1, height - 1)) % 256, (x * y + seed * 7) % 256))
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def write_fixtures(folder, size):
    # A prebuilt example binary (scripts/test passes the one `cargo test` built) avoids a second
    # cargo invocation with another feature set.
    prebuilt = os.environ.get("SCRIM_FIXTURE_MODELS_BIN")
    command = [prebuilt] if prebuilt else [CARGO, "run", "--release", "--quiet", "-p", "scrim-core", "--example", "fixture_models", "--"]
    subprocess.run(
        [*command, str(folder), str(size), *LABELS],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return folder


def load(folder, name):
    return (folder / f"{name}.onnx").read_bytes(), (folder / f"{name}.json").read_text()


class Server:
    """`scrim-cloud serve` on 127.0.0.1:0; the URL comes from its one `listening on` line."""

    def __init__(self, model_dir, tokens_file):
        if not CLOUD_BIN.exists():
            raise SystemExit(f"scrim-cloud not found at {CLOUD_BIN}: cargo build --release -p scrim-cloud, or set SCRIM_CLOUD_BIN")
        self.stderr = tempfile.TemporaryFile()
        cmd = [str(CLOUD_BIN), "serve", "--model", str(model_dir / "recognizer.onnx"), "--listen", "127.0.0.1:0", "--tokens-file", str(tokens_file)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise SystemExit(f"scrim-cloud printed no `listening on` line in {STARTUP_TIMEOUT_S} s:\n{self.log()}")
            match = re.fullmatch(r"listening on (http://\S+)", line.strip())
            if match:
                self.url = match.group(1)
                return

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(url, token=TOKEN, **overrides):
    settings = dict(base_url=url, api_token=token, max_retries=1, initial_backoff_ms=20, max_backoff_ms=100)
    settings.update(overrides)
    return sdk.ScrimClient(sdk.ClientConfig(**settings))


class Skip(Exception):
    """A test that cannot run here (missing tool); reported, not failed."""


def expect_error(kind, fn):
    try:
        fn()
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__qualname__}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- tests


def test_the_package_under_test_is_the_one_asked_for(ctx):
    where = Path(sdk.__file__).resolve()
    if INSTALLED:
        assert Path(sys.prefix).resolve() in where.parents, f"{where} is not installed in {sys.prefix}"
        assert BINDINGS.resolve() not in where.parents, where
    else:
        assert where.parent == BINDINGS.resolve(), where


def test_errors_are_typed_exceptions(ctx):
    assert issubclass(sdk.ScrimError, Exception)
    for kind in ("InvalidImage", "ImageTooLarge", "InvalidModel", "InvalidConfig", "Network", "Unauthorized", "Server", "InvalidResponse", "Internal"):
        assert issubclass(getattr(sdk.ScrimError, kind), sdk.ScrimError), kind


def test_model_card_accessors(ctx):
    onnx, manifest = load(ctx["models"], "perturber")
    p = sdk.Perturber(onnx, manifest)
    assert (p.run_name(), p.run_id()) == (None, None), "the fixtures name no run"
    card = json.loads(manifest)
    card.update(run_name="faces-demo", run_id="0123456789abcdef")
    p = sdk.Perturber(onnx, json.dumps(card))
    assert (p.run_name(), p.run_id()) == ("faces-demo", "0123456789abcdef")
    card["run_id"] = "not hex!"
    expect_error(sdk.ScrimError.InvalidModel, lambda: sdk.Perturber(onnx, json.dumps(card)))


def test_perturb_gives_a_png_at_the_model_size(ctx):
    p = sdk.Perturber(*load(ctx["models"], "perturber"))
    assert (p.input_width(), p.input_height()) == (SIZE, SIZE)
    assert not p.is_seeded_for_tests()
    for w, h in [(40, 30), (7, 9), (SIZE, SIZE)]:
        img = p.perturb(png(w, h))
        assert (img.width(), img.height()) == (SIZE, SIZE)
        assert png_size(img.png()) == (SIZE, SIZE)


def test_noise_is_fresh_unless_seeded_for_tests(ctx):
    onnx, manifest = load(ctx["models"], "perturber")
    photo = png(24, 24)
    p = sdk.Perturber(onnx, manifest)
    assert p.perturb(photo).png() != p.perturb(photo).png(), "OS-seeded noise must differ per image"
    a = sdk.Perturber.seeded_for_tests(onnx, manifest, 42)
    b = sdk.Perturber.seeded_for_tests(onnx, manifest, 42)
    assert a.is_seeded_for_tests()
    assert a.perturb(photo).png() == b.perturb(photo).png()


def test_bad_inputs_raise_typed_errors(ctx):
    onnx, manifest = load(ctx["models"], "perturber")
    e = expect_error(sdk.ScrimError.InvalidImage, lambda: sdk.Perturber(onnx, manifest).perturb(b"not an image"))
    assert e.detail
    expect_error(sdk.ScrimError.InvalidModel, lambda: sdk.Perturber(b"junk", manifest))
    expect_error(sdk.ScrimError.InvalidModel, lambda: sdk.Perturber(*load(ctx["models"], "recognizer")))
    expect_error(sdk.ScrimError.InvalidConfig, lambda: client("not a url"))


def test_config_never_prints_the_token(ctx):
    config = sdk.ClientConfig(base_url=ctx["url"], api_token="very-secret-token")
    for text in (str(config), repr(config)):
        assert "very-secret-token" not in text, text
        assert ctx["url"] in text


def test_classify_returns_the_fixture_labels(ctx):
    p = sdk.Perturber(*load(ctx["models"], "perturber"))
    result = client(ctx["url"]).classify(p.perturb(png(32, 20)))
    assert sorted(label.label for label in result.labels) == sorted(LABELS), result
    scores = [label.score for label in result.labels]
    assert abs(sum(scores) - 1.0) < 1e-3, scores
    assert scores == sorted(scores, reverse=True), "best first"
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.model


def test_classify_image_perturbs_and_uploads_in_one_call(ctx):
    p = sdk.Perturber(*load(ctx["models"], "perturber"))
    c = client(ctx["url"])
    result = c.classify_image(p, png(50, 40, seed=3))
    assert sorted(label.label for label in result.labels) == sorted(LABELS)
    # The client is shared between threads.
    errors = []

    def work():
        try:
            c.classify_image(p, png(20, 20, seed=5))
        except Exception as e:  # noqa: BLE001  (collected and reported below)
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_wrong_size_upload_is_a_server_error(ctx):
    small = sdk.Perturber(*load(ctx["other_models"], "perturber"))
    img = small.perturb(png(20, 20))
    assert (img.width(), img.height()) == (OTHER_SIZE, OTHER_SIZE)
    e = expect_error(sdk.ScrimError.Server, lambda: client(ctx["url"]).classify(img))
    assert (e.status, e.code) == (400, "wrong_size"), (e.status, e.code, e.detail)


def test_wrong_token_is_unauthorized(ctx):
    img = sdk.Perturber(*load(ctx["models"], "perturber")).perturb(png(16, 16))
    expect_error(sdk.ScrimError.Unauthorized, lambda: client(ctx["url"], token="wrong").classify(img))
    expect_error(sdk.ScrimError.Unauthorized, lambda: client(ctx["url"], token=None).classify(img))


def test_unreachable_server_is_a_network_error(ctx):
    img = sdk.Perturber(*load(ctx["models"], "perturber")).perturb(png(16, 16))
    url = f"http://127.0.0.1:{free_port()}"
    expect_error(sdk.ScrimError.Network, lambda: client(url, connect_timeout_ms=2000).classify(img))


def test_kotlin_bindings(ctx):
    if INSTALLED:
        raise Skip("testing the installed Python package (the Kotlin check runs with the bindings folder)")
    if not KOTLINC:
        raise Skip("SCRIM_KOTLINC is not set")
    if not JNA_JAR.exists():
        raise Skip(f"no JNA jar at {JNA_JAR} (apt-get install libjna-java, or set SCRIM_JNA_JAR)")
    sources = [*sorted((BINDINGS.parent / "kotlin").rglob("*.kt")), ROOT / "mobile-ffi" / "tests" / "kotlin" / "SdkTest.kt"]
    assert len(sources) >= 2, "no generated Kotlin: scripts/bindings kotlin"
    jar = ctx["tmp"] / "sdk-test.jar"
    compiled = subprocess.run([KOTLINC, *map(str, sources), "-cp", str(JNA_JAR), "-include-runtime", "-nowarn", "-d", str(jar)], capture_output=True, text=True)
    assert compiled.returncode == 0, f"kotlinc failed:\n{compiled.stdout}{compiled.stderr}"
    cmd = ["java", "-Djava.awt.headless=true", f"-Djna.library.path={BINDINGS}", "-cp", f"{jar}{os.pathsep}{JNA_JAR}", "dev.scrim.mobile.test.SdkTestKt"]
    run = subprocess.run([*cmd, str(ctx["models"]), str(ctx["other_models"]), ctx["url"], TOKEN], capture_output=True, text=True, timeout=300)
    print(run.stdout, end="")
    assert run.returncode == 0, f"Kotlin test failed:\n{run.stderr[-4000:]}"


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    passed = failed = skipped = 0
    with tempfile.TemporaryDirectory(prefix="scrim-sdk-") as tmp:
        tmp = Path(tmp)
        ctx = {"tmp": tmp, "models": write_fixtures(tmp / "models", SIZE), "other_models": write_fixtures(tmp / "other", OTHER_SIZE)}
        tokens = tmp / "tokens.txt"
        tokens.write_text(f"# API tokens for the SDK test\n{TOKEN}\n")
        server = Server(ctx["models"], tokens)
        ctx["url"] = server.url
        try:
            for test in TESTS:
                try:
                    test(ctx)
                    passed += 1
                    print(f"ok   {test.__name__}")
                except Skip as why:
                    skipped += 1
                    print(f"skip {test.__name__}: {why}")
                except Exception:  # noqa: BLE001  (every failure is reported, then counted)
                    failed += 1
                    print(f"FAIL {test.__name__}\n{traceback.format_exc()}")
        finally:
            server.stop()
        if failed:
            print(f"scrim-cloud log (tail):\n{server.log()}")
    print(f"sdk: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
