"""Is the Hugging Face hub reachable, and is a model or data set already cached?

The hub client retries for about half a minute per file when there is no
network. A suite's preflight asks once, with a short timeout, and then looks
only in the local caches, so an offline machine gets its answer in seconds.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def _offline_flag() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    if _offline_flag():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def model_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unreadable cache is an empty cache
        return False


def dataset_cached(dataset: str, config: str) -> bool:
    root = Path(os.environ.get("HF_DATASETS_CACHE", Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "datasets"))
    return (root / dataset.replace("/", "___") / config).is_dir()
