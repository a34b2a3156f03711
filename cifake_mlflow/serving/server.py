"""Run ``mlflow models serve`` for a registered detector, and talk to it over HTTP.

The server is MLflow's own (FastAPI under uvicorn); this module only builds its command line,
waits until it answers ``/ping``, and posts JSON requests to ``/invocations``. The serve script
(``serve/serve.py``), ``cifake serve``, ``cifake predict --url``, the tests and the benchmark all
go through here, so they start and call the server the same way.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from cifake_mlflow.tracking.schema import COLUMN

DEFAULT_MODEL = "cifake-detector"
DEFAULT_ALIAS = "champion"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
#: Seconds to wait for a fresh server to answer /ping (TensorFlow import plus model load).
START_TIMEOUT = 180.0


class ServingError(RuntimeError):
    """The server could not be started or answered with an error; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def model_uri(name: str = DEFAULT_MODEL, alias: str = DEFAULT_ALIAS) -> str:
    """``models:/<name>@<alias>``, the registry URI that ``mlflow models serve`` resolves."""
    return f"models:/{name}@{alias}"


def serve_command(
    uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = 1
) -> list[str]:
    """The ``mlflow models serve`` command line, run with this interpreter's MLflow."""
    return [
        *(sys.executable, "-m", "mlflow", "models", "serve"),
        *("-m", uri, "--env-manager", "local"),
        *("-h", host, "-p", str(port), "-w", str(workers)),
    ]


def serve_env() -> dict[str, str]:
    """The server's environment.

    MLflow starts ``uvicorn`` by name, so this interpreter's bin/ leads PATH; ``models:/`` URIs
    resolve in the store this process uses (``cifake serve`` sets the project's), so the server
    never falls back to another default of its own.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    return env


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Server:
    """A ``mlflow models serve`` subprocess; a context manager that stops it on exit."""

    def __init__(
        self,
        uri: str,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        workers: int = 1,
        log: Path | None = None,
    ) -> None:
        self.uri, self.host, self.workers = uri, host, workers
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = START_TIMEOUT) -> Server:
        """Start the server, wait until it answers ``/ping``; leave nothing running on failure."""
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                serve_command(self.uri, self.host, self.port, self.workers),
                env=serve_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:  # the child holds its own copy of the log file
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            wait_ready(self.url, timeout, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its uvicorn workers (the whole process group)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll ``url/ping`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServingError(
                f"mlflow models serve exited with status {process.returncode} before it was "
                "ready; run the same command by hand to see why (is the model URI right?)"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise ServingError(f"no answer from {url}/ping within {timeout:.0f} s")


def encode(data: bytes) -> str:
    """Image file bytes as the base64 text the ``image`` column takes."""
    return base64.b64encode(data).decode("ascii")


def post(url: str, payload: dict[str, Any], timeout: float = 120.0) -> Any:
    """POST JSON to ``url/invocations``; the parsed answer, or :class:`ServingError` on 4xx/5xx."""
    request = urllib.request.Request(
        f"{url.rstrip('/')}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise ServingError(error_message(exc.read()), status=exc.code) from None
    except urllib.error.URLError as exc:
        raise ServingError(
            f"cannot reach {url}: {exc.reason}; is the server running (cifake serve)?"
        ) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise ServingError(
            f"{url} did not answer ({type(exc).__name__}: {exc or 'no reply'}) within "
            f"{timeout:.0f} s; the server may have stopped or be overloaded"
        ) from None


#: How MLflow's scoring server prefixes a model's error (models served by this package keep
#: their message short, but another server version or model may not).
_MLFLOW_PREFIX = re.compile(r"^Failed to predict data .*?\nError: ", re.DOTALL)


def error_message(body: bytes) -> str:
    """The useful part of an MLflow error answer, without any echo of the request."""
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500]
    return _MLFLOW_PREFIX.sub("", message)[:2000]


def score(
    url: str, files: Sequence[bytes], threshold: float | None = None, timeout: float = 120.0
) -> pd.DataFrame:
    """Score image files over HTTP: one row (prob_fake, label, threshold) per file."""
    payload: dict[str, Any] = {
        "dataframe_split": {"columns": [COLUMN], "data": [[encode(f)] for f in files]}
    }
    if threshold is not None:
        payload["params"] = {"threshold": threshold}
    return pd.DataFrame(post(url, payload, timeout)["predictions"])
