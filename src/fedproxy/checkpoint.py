"""Atomic checkpoints that never overwrite the last good one with a broken file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import FedProxyError


def save(obj: Any, path: Path) -> None:
    """Write to a temp file, then rename over the old one, keeping it as ``.prev``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)


def save_json(obj: Any, path: Path) -> None:
    """``obj`` as JSON at ``path``, complete or absent (a temp file renamed over it), never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def json_once(path: Path, compute: Callable[[], Any], reuse: bool = True) -> Any:
    """The JSON kept at ``path`` when ``reuse`` and it is there; otherwise ``compute()``, kept there."""
    if reuse and path.is_file():
        return json.loads(path.read_text())
    obj = compute()
    save_json(obj, path)
    return obj


def load(path: Path) -> Any | None:
    """The checkpoint at ``path`` (or None). A corrupt file is reported, never silently used."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the file is unusable
        prev = path.with_name(path.name + ".prev")
        hint = f"; the previous checkpoint {prev} is intact" if prev.exists() else ""
        raise FedProxyError(
            f"checkpoint {path} is corrupt ({type(err).__name__}){hint}; move it away to resume from the "
            "previous one or start without --resume"
        ) from None


def clear(folder: Path) -> int:
    """Delete the resume checkpoints under ``folder`` once what they protect is saved.

    They are large (a distillation or federation checkpoint holds the proxy and its
    optimizer state, kept twice with ``.prev``), so a finished method does not leave them.
    Returns the bytes freed.
    """
    freed = 0
    for pattern in ("*.pt", "*.pt.prev", "*.pt.tmp"):
        for f in Path(folder).rglob(pattern):
            freed += f.stat().st_size
            f.unlink()
    return freed


def earlier_seconds(work: Path, clock: Path, resume: bool) -> float:
    """Seconds that earlier invocations of a resumed method spent on the work it resumes from.

    Each invocation is counted from its start (kept in ``clock``) to the last file it wrote under
    ``work`` (its last checkpoint): what came after that is redone by the next invocation, so it
    is not counted twice. Starts this invocation's entry; without ``resume`` (or without an
    earlier entry, from a version before this clock) nothing is counted.
    """
    spent = 0.0
    if resume and clock.is_file():
        entry = json.loads(clock.read_text())
        written = [f.stat().st_mtime for f in Path(work).rglob("*") if f.is_file()]
        spent = entry["spent"] + max(0.0, max(written, default=0.0) - entry["started"])
    clock.parent.mkdir(parents=True, exist_ok=True)
    clock.write_text(json.dumps({"spent": spent, "started": time.time()}))
    return spent
