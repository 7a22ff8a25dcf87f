"""Node-side cache of the proxy's frozen tensors, so the server sends them once per node.

The frozen part of the proxy (the tied embedding: 113 MB of SmolLM2's 315 MB proxy) never
changes during a run, yet it made up a third of what every SuperNode pulled every round.
The server names it by a content digest; a node keeps it in ``<cache>/frozen/<digest>.safetensors``
after the first message that carries it and reports, when queried, which digest it holds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelError


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """Content digest of named tensors (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _path(cache: Path, key: str) -> Path:
    return Path(cache) / "frozen" / f"{key}.safetensors"


def has(cache: Path, key: str) -> bool:
    return _path(cache, key).is_file()


def store(cache: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Keep ``tensors`` under ``key`` after checking that they are what the key names."""
    if digest(tensors) != key:
        raise ModelError(f"the frozen proxy tensors do not match their digest {key}; the message was corrupted")
    path = _path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # atomic: simulated clients may share one cache
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load(cache: Path, key: str) -> dict[str, torch.Tensor]:
    path = _path(cache, key)
    if not path.is_file():
        raise ModelError(f"frozen proxy tensors {key} are not cached on this node ({path}); "
                         "the server sends them again in the next round")
    return load_file(str(path))
