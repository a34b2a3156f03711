"""Serving: a real ``mlflow models serve`` subprocess on a free loopback port, serving a real
registered champion from a sqlite registry, scored with real CIFAKE test JPEGs where the shared
data is present (generated JPEGs otherwise)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import hostile
import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import (
    SHARED_DATA,
    jpeg_bytes,
    small_champion_store,
    synthetic_image,
)
from PIL import Image

from cifake_mlflow.cli import main
from cifake_mlflow.data.decode import MAX_PIXELS, SUPPORTED_FORMATS, decode_image
from cifake_mlflow.serving import server as serving
from cifake_mlflow.serving.payload import MAX_REQUEST_PIXELS
from cifake_mlflow.serving.server import Server, ServingError, encode, post
from cifake_mlflow.tracking.schema import MAX_BATCH, frame

MODEL = "cifake-detector"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sqlite registry whose champion is a briefly trained detector; the work folder."""
    yield from small_champion_store(tmp_path_factory, "serving", seed=5, epochs=2, model=MODEL)


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Server]:
    """The champion served by ``mlflow models serve`` on a free port."""
    with Server(serving.model_uri(MODEL), log=store / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def local(store: Path) -> mlflow.pyfunc.PyFuncModel:
    """The same champion loaded in this process."""
    return mlflow.pyfunc.load_model(serving.model_uri(MODEL))


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """16 CIFAKE test JPEGs (8 REAL, 8 FAKE) from the real archive, else generated ones."""
    archive = SHARED_DATA / "cifake-test.tar.gz"
    if not archive.is_file():
        rng = np.random.default_rng(0)
        return [jpeg_bytes(synthetic_image(i % 2, rng)) for i in range(16)]
    found: dict[str, list[bytes]] = {"REAL": [], "FAKE": []}
    with tarfile.open(archive) as tar:
        for member in tar:
            cls = Path(member.name).parent.name
            if member.isfile() and cls in found and len(found[cls]) < 8:
                found[cls].append(tar.extractfile(member).read())
            if all(len(v) == 8 for v in found.values()):
                break
    return found["REAL"] + found["FAKE"]


def in_process(local: mlflow.pyfunc.PyFuncModel, files: list[bytes]) -> np.ndarray:
    return local.predict(frame(files))["prob_fake"].to_numpy()


def served(server: Server, payload: dict) -> pd.DataFrame:
    return pd.DataFrame(post(server.url, payload)["predictions"])


def test_every_request_format_matches_in_process(
    server: Server, local: mlflow.pyfunc.PyFuncModel, jpegs: list[bytes]
) -> None:
    expected = in_process(local, jpegs)
    assert np.ptp(expected) > 1e-4, "precondition: the scores must differ between images"
    b64 = [encode(f) for f in jpegs]
    pixels = np.stack([decode_image(f)[0] for f in jpegs]).tolist()
    payloads = {
        "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": [[b] for b in b64]}},
        "dataframe_records": {"dataframe_records": [{"image": b} for b in b64]},
        "instances": {"instances": [{"image": b} for b in b64]},
        "inputs": {"inputs": {"image": b64}},
        "instances pixels": {"instances": pixels},
        "inputs pixels": {"inputs": pixels},
        "inputs named pixels": {"inputs": {"image": pixels}},
        "records pixels": {"dataframe_records": [{"image": p} for p in pixels]},
    }
    for name, payload in payloads.items():
        answer = served(server, payload)
        assert list(answer.columns) == ["prob_fake", "label", "threshold"], name
        np.testing.assert_allclose(answer["prob_fake"], expected, atol=1e-5, err_msg=name)
        assert list(answer["label"]) == [("FAKE" if p >= 0.5 else "REAL") for p in expected]
        assert set(answer["threshold"]) == {0.5}


def image_file(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def odd_images() -> dict[str, bytes]:
    """One file per format and mode a user may send, from one photo-like source."""
    rng = np.random.default_rng(7)
    photo = Image.fromarray(
        np.kron(rng.integers(0, 255, (30, 40, 3)), np.ones((100, 100, 1))).astype(np.uint8)
    )  # 4000x3000, a phone photo's size
    small = photo.resize((64, 48))
    rgba = small.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: must be turned upright before scoring
    return {
        "png": image_file(small, "PNG"),
        "rgba png": image_file(rgba, "PNG"),
        "grayscale": image_file(small.convert("L"), "JPEG"),
        "cmyk jpeg": image_file(small.convert("CMYK"), "JPEG"),
        "palette gif": image_file(small.convert("P"), "GIF"),
        "webp": image_file(small, "WEBP"),
        "bmp": image_file(small, "BMP"),
        "16-bit png": image_file(
            Image.fromarray(np.asarray(small.convert("L")).astype(np.uint16) * 257), "PNG"
        ),
        "exif rotated": image_file(small, "JPEG", exif=exif),
        "photo 4000x3000": image_file(photo, "JPEG", quality=90),
    }


def test_odd_formats_sizes_and_modes_are_scored(
    server: Server, local: mlflow.pyfunc.PyFuncModel
) -> None:
    files = odd_images()
    answer = serving.score(server.url, list(files.values()))
    expected = in_process(local, list(files.values()))
    np.testing.assert_allclose(answer["prob_fake"], expected, atol=1e-5)
    # The served answer is the model's answer on the one shared preprocessing function.
    pixels = np.stack([decode_image(f)[0] for f in files.values()])
    np.testing.assert_allclose(in_process(local, list(pixels)), expected, atol=1e-5)


def test_threshold_travels_per_request(server: Server, jpegs: list[bytes]) -> None:
    strict = serving.score(server.url, jpegs[:4], threshold=0.0)
    assert set(strict["label"]) == {"FAKE"} and set(strict["threshold"]) == {0.0}
    with pytest.raises(ServingError, match=r"threshold=1.5 is outside \[0, 1\]") as bad:
        serving.score(server.url, jpegs[:1], threshold=1.5)
    assert bad.value.status == 400


def split(*items: object) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[i] for i in items]}}


def bad_requests(good: str) -> dict[str, tuple[dict, str]]:
    """name -> (payload, what the 400 message must say)."""
    jpeg = base64.b64decode(good)
    bomb = image_file(Image.new("1", (8000, 6000)), "PNG")  # 48 M pixels in a few kB
    return {
        "invalid base64": (split(good, "not base64 at all!"), "item 1: invalid base64"),
        "not an image": (split(encode(b"hello, world" * 10)), "item 0: not an image"),
        "truncated": (split(good, good, encode(jpeg[: len(jpeg) // 2])), "item 2: unreadable"),
        "bomb": (split(encode(bomb)), "item 0: too many pixels: 8000x6000 exceeds the limit"),
        "empty batch": ({"dataframe_split": {"columns": ["image"], "data": []}}, "empty batch"),
        "wrong column": ({"dataframe_records": [{"img": good}]}, "missing inputs ['image']"),
        "wrong shape": ({"inputs": [[[0, 0, 0]] * 32]}, "item 0: pixel array has shape (32, 3)"),
        "out of range": ({"inputs": [[[[0, 0, 300]] * 32] * 32]}, "pixel values must be in"),
        "wrong type": (split(good, 17), "item 1: expected a base64 image file"),
        "too many": (split(*[good] * (MAX_BATCH + 1)), f"exceeds the limit of {MAX_BATCH}"),
    }  # fmt: skip


def test_bad_input_is_a_400_that_names_the_problem(server: Server, jpegs: list[bytes]) -> None:
    good = encode(jpegs[0])
    for name, (payload, message) in bad_requests(good).items():
        with pytest.raises(ServingError) as error:
            post(server.url, payload)
        assert error.value.status == 400, (name, str(error.value))
        assert message in str(error.value), (name, str(error.value))
    assert len(served(server, split(good))) == 1, "the server must keep serving"


@pytest.fixture(scope="module")
def folder(store: Path, jpegs: list[bytes]) -> Path:
    """A folder of image files (nested), plus one broken file."""
    root = store / "to-score"
    (root / "nested").mkdir(parents=True)
    for i, data in enumerate(jpegs[:6]):
        (root / ("nested" if i % 2 else "") / f"img{i}.jpg").write_bytes(data)
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image, not picked up")
    return root


@pytest.mark.parametrize("through", ["url", "in-process"])
def test_predict_command_writes_one_row_per_image(
    through: str, server: Server, local: mlflow.pyfunc.PyFuncModel, folder: Path, store: Path
) -> None:
    out = store / f"scores-{through}.csv"
    where = ["--url", server.url] if through == "url" else ["--model-uri", server.uri]
    result = CliRunner().invoke(
        main, ["predict", str(folder), *where, "--batch-size", "4", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out, keep_default_na=False).set_index("path")
    images = sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))
    assert sorted(rows.index) == sorted(str(p) for p in images)
    broken = rows.loc[str(folder / "broken.png")]
    assert broken["prob_fake"] == "" and "not an image" in broken["error"]
    good = [p for p in images if p.suffix == ".jpg"]
    expected = in_process(local, [p.read_bytes() for p in good])
    got = rows.loc[[str(p) for p in good]]
    np.testing.assert_allclose(got["prob_fake"].astype(float), expected, atol=1e-5)
    assert list(got["label"]) == [("FAKE" if p >= 0.5 else "REAL") for p in expected]
    assert set(got["error"]) == {""}


def test_predict_writes_json_lines_and_explains_a_dead_url(
    folder: Path, store: Path, local: mlflow.pyfunc.PyFuncModel
) -> None:
    dead = f"http://127.0.0.1:{serving.free_port()}"
    result = CliRunner().invoke(main, ["predict", str(folder), "--url", dead])
    assert result.exit_code == 1 and "cannot reach" in result.output
    out = store / "scores.jsonl"
    result = CliRunner().invoke(
        main, ["predict", str(folder / "img0.jpg"), "--model-uri", serving.model_uri(MODEL),
               "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = pd.read_json(out, lines=True).iloc[0]
    expected = in_process(local, [(folder / "img0.jpg").read_bytes()])[0]
    assert row["path"].endswith("img0.jpg") and not row["error"]
    assert row["prob_fake"] == pytest.approx(expected, abs=1e-5)
    assert row["label"] == ("FAKE" if expected >= 0.5 else "REAL")


def test_server_that_cannot_start_says_so(store: Path) -> None:
    with pytest.raises(ServingError, match="exited with status"):
        Server("models:/no-such-model@champion").start(timeout=120)


def test_serve_command_is_mlflow_models_serve() -> None:
    command = serving.serve_command("models:/m@a", port=5123, workers=2)
    assert command[1:5] == ["-m", "mlflow", "models", "serve"]
    assert command[5:7] == ["-m", "models:/m@a"] and "--env-manager" in command
    assert command[command.index("-p") + 1] == "5123"
    assert command[command.index("-w") + 1] == "2"
    assert os.path.dirname(command[0]) in serving.serve_env()["PATH"].split(os.pathsep)[0]


def test_readme_curl_request_scores_a_file(
    server: Server, local: mlflow.pyfunc.PyFuncModel, folder: Path
) -> None:
    """serve/score.sh sends the README's curl request; its answer is the model's."""
    image = folder / "img0.jpg"
    script = Path(__file__).resolve().parents[1] / "serve" / "score.sh"
    done = subprocess.run(
        ["bash", str(script), str(image), server.url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["predictions"]
    expected = in_process(local, [image.read_bytes()])[0]
    assert row["prob_fake"] == pytest.approx(expected, abs=1e-5)
    assert row["label"] == ("FAKE" if expected >= 0.5 else "REAL") and row["threshold"] == 0.5


def test_cifake_serve_runs_mlflow_models_serve_on_the_alias(
    monkeypatch: pytest.MonkeyPatch, store: Path
) -> None:
    """`cifake serve` (and serve/serve.py) replace themselves with the documented command."""
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execvpe", lambda f, args, env: calls.append((f, args, env)))
    options = ["--model-name", "m", "--alias", "challenger", "--port", "5123", "--workers", "2"]
    result = CliRunner().invoke(main, ["serve", *options])
    assert result.exit_code == 0, result.output
    ((_, args, env),) = calls
    assert args == serving.serve_command("models:/m@challenger", "127.0.0.1", 5123, 2)
    assert env["MLFLOW_TRACKING_URI"] == os.environ["MLFLOW_TRACKING_URI"]  # the store in use
    result = CliRunner().invoke(main, ["serve", "--model-uri", "runs:/abc/model"])
    assert calls[-1][1][calls[-1][1].index("-m", 5) + 1] == "runs:/abc/model"


def test_logged_signature_describes_input_outputs_and_threshold(store: Path) -> None:
    info = mlflow.models.get_model_info(serving.model_uri(MODEL))
    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["prob_fake", "label", "threshold"]
    (param,) = info.signature.params.params
    assert (param.name, param.dtype.name) == ("threshold", "double")
    assert 0.0 <= param.default <= 1.0


# -- hostile input: short answers, no traceback or path, and the server keeps serving ----------
def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST exactly these bytes and headers (urllib would add a Content-Type of its own)."""
    where = urlsplit(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def post_json(url: str, payload: dict) -> tuple[int, bytes]:
    return raw_post(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})


LEAKS = re.compile(r"Traceback|stack_trace|site-packages|\.py\b|(^|[\s'\"(])/(tmp|root|home|usr)/")


def assert_short_clean_answer(
    status: int, body: bytes, expected: int, *needles: str, case: str = ""
) -> None:
    """The reply: the expected status, under 1 kB, no traceback or file-system path."""
    text = body.decode(errors="replace")
    assert status == expected, (case, status, text[:500])
    assert len(body) < 1000, f"{case}: {len(body)}-byte reply: {text[:300]}"
    assert not LEAKS.search(text), (case, text)
    for needle in needles:
        assert needle in text, (case, needle, text)


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file, what the 400 must say): decoder bugs, foreign formats, a pixel bomb."""
    supported = f"send {SUPPORTED_FORMATS}"
    return {
        "tiff, StripOffsets typed ASCII": (
            hostile.tiff_with_text_strip_offsets(), "unreadable or truncated image: TypeError"),
        "IM, malformed size line": (hostile.im_with_bad_size_line(), "format IM is not supported"),
        "DDS, no pixel-format flags": (
            hostile.dds_without_pixel_format_flags(), "format DDS is not supported"),
        "EPS": (hostile.eps(), "format EPS/PostScript is not supported"),
        "ICO": (hostile.pillow_file("ICO"), "format ICO is not supported"),
        "PPM": (hostile.pillow_file("PPM"), supported),
        "TGA": (hostile.pillow_file("TGA"), supported),
        "QOI": (hostile.pillow_file("QOI"), "format QOI is not supported"),
        "16-bit PNG 6300x6300": (hostile.png16(6300, 6300), "too many pixels: 6300x6300"),
    }  # fmt: skip


def test_hostile_files_get_a_short_400_in_every_input_form(
    server: Server, jpegs: list[bytes]
) -> None:
    good = encode(jpegs[0])
    before = served(server, split(good))["prob_fake"][0]
    for name, (data, message) in hostile_files().items():
        bad = encode(data)
        for form, payload in {
            "dataframe_split": split(good, bad),
            "dataframe_records": {"dataframe_records": [{"image": good}, {"image": bad}]},
            "instances": {"instances": [{"image": good}, {"image": bad}]},
            "inputs": {"inputs": {"image": [good, bad]}},
        }.items():
            status, body = post_json(server.url, payload)
            assert_short_clean_answer(status, body, 400, "item 1: ", message, case=f"{name}/{form}")
        assert served(server, split(good))["prob_fake"][0] == before, name


def test_error_replies_do_not_echo_a_large_request(server: Server, jpegs: list[bytes]) -> None:
    images = [encode(f) for f in jpegs] * 40  # 640 images, about 0.8 MB of base64
    bad = "not base64!"
    for payload in (
        {"inputs": {"image": [*images, bad]}},
        {"instances": [{"image": i} for i in [*images, bad]]},
        split(*images, bad),
    ):
        status, body = post_json(server.url, payload)
        assert_short_clean_answer(status, body, 400, f"item {len(images)}: invalid base64")


def test_request_pixel_budget_refuses_before_decoding(server: Server) -> None:
    side = int(MAX_PIXELS**0.5)
    fits = MAX_REQUEST_PIXELS // (side * side)
    big = encode(hostile.png16(side, side))
    start = time.perf_counter()
    status, body = post_json(server.url, split(*[big] * (fits + 1)))
    assert_short_clean_answer(status, body, 400, f"item {fits}: ", "past its limit")
    assert time.perf_counter() - start < 60
    status, body = post_json(server.url, split(*[big] * fits))  # the largest request that passes
    assert status == 200, body[:300]


def test_empty_instances_is_the_empty_batch_message(server: Server) -> None:
    for payload in ({"instances": []}, {"inputs": []}):
        status, body = post_json(server.url, payload)
        assert_short_clean_answer(status, body, 400, "empty batch")


def test_columns_besides_image_are_dropped_by_mlflow(server: Server, jpegs: list[bytes]) -> None:
    """MLflow's schema enforcement removes undeclared columns before the model sees the request
    (it logs "Found extra inputs ... will be ignored"), so the model cannot refuse them; the
    serving docs say so. This test tells when that changes."""
    good = encode(jpegs[0])
    alone = served(server, split(good))
    extra = {"dataframe_split": {"columns": ["image", "caption"], "data": [[good, "a cat"]]}}
    assert served(server, extra).equals(alone)


def test_upstream_mlflow_answers_to_no_content_type_deep_json_and_broken_json(
    server: Server, jpegs: list[bytes]
) -> None:
    """Known behaviour of MLflow 3.17.2's scoring server, documented in docs/serving.md.

    A request without Content-Type fails in MLflow's content-type parsing (AttributeError) and
    JSON nested 100,000 deep in its JSON decoding (RecursionError), both before the model is
    called: a plain 500, no traceback in the reply, and the server keeps serving. A body that
    is not JSON is answered 400 with the body repeated. When this test fails, an MLflow upgrade
    changed that: update the docs and this test.
    """
    good = encode(jpegs[0])
    body = json.dumps(split(good)).encode()
    status, reply = raw_post(server.url, body, {})
    assert_short_clean_answer(status, reply, 500)
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, reply = raw_post(server.url, deep, {"Content-Type": "application/json"})
    assert_short_clean_answer(status, reply, 500)
    # A body that is not JSON: MLflow's 400 repeats the whole body after "Input:".
    broken = b'{"inputs": ' + b"x" * 100_000
    status, reply = raw_post(server.url, broken, {"Content-Type": "application/json"})
    assert status == 400 and len(reply) > 100_000 and b"Input:" in reply
    assert len(served(server, split(good))) == 1, "the server must keep serving"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
        total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS")))
    return total / 1024


SOAK_REQUESTS = 2400
SOAK_SECONDS = 60.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_soak_of_mixed_requests_keeps_every_good_answer_and_flat_memory(
    server: Server, jpegs: list[bytes]
) -> None:
    """A few thousand requests at concurrency 4, one good in twelve, bounded to a minute."""
    good = [split(encode(f)) for f in jpegs]
    expected = [served(server, g)["prob_fake"][0] for g in good]
    bad = [p for p, _ in bad_requests(encode(jpegs[0])).values() if len(str(p)) < 100_000]
    bad += [split(encode(data)) for data, _ in hostile_files().values() if len(data) < 100_000]
    mix = [("good", i) if n % 12 == 0 else ("bad", i) for n, i in enumerate(range(SOAK_REQUESTS))]

    def send(kind: str, n: int) -> tuple[str, int, int, bytes]:
        payload = good[n % len(good)] if kind == "good" else bad[n % len(bad)]
        return (kind, n, *post_json(server.url, payload))

    def run(requests: list[tuple[str, int]], deadline: float) -> list[tuple[str, int, int, bytes]]:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(send, k, n) for k, n in requests]
            done = []
            for future in futures:
                if time.monotonic() > deadline:
                    future.cancel()
                    continue
                done.append(future.result())
            return done

    run(mix[:240], time.monotonic() + SOAK_SECONDS)  # warm-up: allocator pools settle
    before = tree_rss_mb(server.process.pid)
    answers = run(mix, time.monotonic() + SOAK_SECONDS)
    growth = tree_rss_mb(server.process.pid) - before
    assert len(answers) >= 1000, f"only {len(answers)} requests answered in {SOAK_SECONDS} s"
    for kind, n, status, body in answers:
        if kind == "good":
            assert status == 200, body[:300]
            score = json.loads(body)["predictions"][0]["prob_fake"]
            assert score == pytest.approx(expected[n % len(good)], abs=1e-6)
        else:
            assert status == 400, body[:300]
    assert growth < 100, f"server memory grew {growth:.0f} MB over {len(answers)} requests"
