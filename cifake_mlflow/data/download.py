"""Fetch CIFAKE from Kaggle for users who are online and have Kaggle credentials.

Offline (or without the ``kaggle`` package or credentials) it fails within seconds with a
message that says what to do instead, rather than hanging on a network call.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

KAGGLE_DATASET = "birdy654/cifake-real-and-ai-generated-synthetic-images"
KAGGLE_HOST = "www.kaggle.com"
MANUAL = (
    f"Download it by hand from https://www.kaggle.com/datasets/{KAGGLE_DATASET} "
    "(the .zip works as it is), then pass its path with --data / -P data=PATH."
)


class DownloadError(RuntimeError):
    """The download cannot happen here; the message says why and what to do instead."""


def reachable(host: str = KAGGLE_HOST, port: int = 443, timeout: float = 5.0) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def has_credentials() -> bool:
    """Kaggle reads KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN, or files in ~/.kaggle."""
    home = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    env = ("KAGGLE_USERNAME" in os.environ and "KAGGLE_KEY" in os.environ) or (
        "KAGGLE_API_TOKEN" in os.environ
    )
    return env or (home / "kaggle.json").is_file() or (home / "access_token").is_file()


def download(dest: str | Path, timeout: float = 5.0) -> Path:
    """Download the Kaggle archive of CIFAKE into ``dest``; returns the folder."""
    dest = Path(dest)
    if not reachable(timeout=timeout):
        raise DownloadError(f"cannot reach {KAGGLE_HOST} (offline?). {MANUAL}")
    if not has_credentials():
        raise DownloadError(
            "no Kaggle credentials: create an API token at https://www.kaggle.com/settings and "
            f"save it as ~/.kaggle/kaggle.json (or set KAGGLE_USERNAME and KAGGLE_KEY). {MANUAL}"
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DownloadError(
            f"the kaggle package is not installed: pip install 'cifake-mlflow[kaggle]'. {MANUAL}"
        ) from None
    api = KaggleApi()
    api.authenticate()
    dest.mkdir(parents=True, exist_ok=True)
    api.dataset_download_files(KAGGLE_DATASET, path=str(dest), quiet=False, unzip=False)
    return dest
