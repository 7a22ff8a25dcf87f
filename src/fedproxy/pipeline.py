"""`fedproxy run`: every selected method on one benchmark, with per-method checkpoints."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path

import torch

from . import __version__, baselines, checkpoint  # noqa: F401  (baselines register their methods)
from .config import RunConfig
from .context import build_context
from .data import load_benchmark
from .errors import ConfigError
from .eval import headline
from .methods import METHODS, run_recipe
from .report import write_report

log = logging.getLogger("fedproxy")


def run(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True, cache=None) -> Path:
    """Run ``cfg.methods`` in order; each finished method is saved and skipped on ``resume``."""
    for m in cfg.methods:
        METHODS.get(m)  # fail before any expensive work on an unknown name
    out.mkdir(parents=True, exist_ok=True)
    _record_config(cfg, out / "run_config.json", resume)
    t0 = time.perf_counter()
    ctx = build_context(cfg, out, resume=resume, progress=progress, cache=cache)
    if not resume:  # what this run's methods share is made afresh (proxies.make_proxy, RunContext.llm_eval)
        for shared in ("compressed", "llm_eval"):
            shutil.rmtree(out / "work" / shared, ignore_errors=True)
    results_dir = out / "results"
    results_dir.mkdir(exist_ok=True)
    results = {}
    for name in cfg.methods:
        path = results_dir / f"{name}.json"
        if resume and path.is_file():
            results[name] = json.loads(path.read_text())
            log.info("%s: already done, reusing %s", name, path)
            continue
        log.info("%s: running", name)
        torch.manual_seed(cfg.seed)
        work = ctx.work_path(name)
        clock = work.with_name(f"{name}.clock.json")
        earlier = checkpoint.earlier_seconds(work, clock, resume)
        results[name] = run_recipe(ctx, METHODS.get(name))
        # each method's machine: a benchmark seed's methods may run in different sessions and places
        results[name]["environment"] = environment(str(ctx.device), ctx.bf16)
        if earlier:  # a resumed method's cost includes what its earlier invocations kept
            results[name].update(wall_seconds=results[name]["wall_seconds"] + earlier, earlier_seconds=earlier)
        path.write_text(json.dumps(results[name], indent=2))
        clock.unlink(missing_ok=True)
        checkpoint.clear(work)  # the result is safe; its resume checkpoints are not needed
        log.info("%s: %s %.3f", name, ctx.bench.metric, headline(results[name]))
    return write_report(_report(cfg, {**ctx.bench.describe(), "truncated": truncation(ctx)}, str(ctx.device),
                                ctx.bf16, time.perf_counter() - t0, results), out)


def truncation(ctx) -> dict:
    """Examples whose input is cut to ``data.max_length``, per split (warned about when any)."""
    enc, bench = ctx.encoder, ctx.bench
    counts = {"train": sum(enc.truncated(t) for t in bench.train), "test": sum(enc.truncated(t) for t in bench.test),
              "server_val": enc.truncated(bench.server_val)}
    if any(counts.values()):
        log.warning("inputs longer than data.max_length=%d tokens were cut: %s examples (train, test, "
                    "server_val); raise data.max_length to keep them whole", ctx.cfg.data.max_length,
                    ", ".join(map(str, counts.values())))
    return counts


def _report(cfg: RunConfig, benchmark: dict, device: str, bf16: bool, seconds: float, results: dict) -> dict:
    return {
        "fedproxy_version": __version__,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "benchmark": benchmark,
        "environment": environment(device, bf16),
        "total_seconds": seconds,
        "methods": results,
    }


def environment(device: str, bf16: bool) -> dict:
    return {"torch": torch.__version__, "device": device, "processor": processor(device),
            "threads": torch.get_num_threads(), "bf16_autocast": bf16, "python": platform.python_version(),
            "machine": platform.machine()}


def processor(device: str) -> str:
    """What ran the method, for comparing wall times across sessions: the GPU's name, or the CPU's model
    and the vector instructions torch uses on it (a CPU without AVX-512 trains about half as fast)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:  # not Linux
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def report_finished(out: Path, cache=None) -> Path:
    """The report of the methods ``out`` has finished so far (``fedproxy report``), without running anything.

    ``total_seconds`` is then the sum of the finished methods' wall times, and ``unfinished``
    lists the configured methods that have no result yet.
    """
    config_path = out / "run_config.json"
    if not config_path.is_file():
        raise ConfigError(f"{out} holds no run (no run_config.json); give the --out of a `fedproxy run`")
    cfg = RunConfig.from_flat(json.loads(config_path.read_text()))
    results = {m: json.loads(p.read_text()) for m in cfg.methods if (p := out / "results" / f"{m}.json").is_file()}
    if not results:
        raise ConfigError(f"{out} has no finished method yet (results/*.json); wait for the first one")
    bench = load_benchmark(cfg.data, cfg.seed, cache, server_text=False)
    devices = sorted({r["environment"]["device"] for r in results.values() if "environment" in r})
    report = _report(cfg, bench.describe(), "/".join(devices) or "see the run's log", cfg.bf16,
                     sum(r.get("wall_seconds", 0.0) for r in results.values()), results)
    report["unfinished"] = [m for m in cfg.methods if m not in results]
    return write_report(report, out)


# Settings a resumed run may change: which methods run, and where/how fast they run. Any other
# change would mix results of two different experiments in one report.
_RESUMABLE = ("methods", "device", "threads")


def config_changes(before: dict, now: dict) -> list[str]:
    """The settings in which two flat configs (``RunConfig.to_flat``) differ, other than those a resumed
    run may change (``_RESUMABLE``), as ``key: before -> now``; empty when their results may be mixed.
    A key that ``before``'s version did not have yet, at its default, changes nothing."""
    defaults = RunConfig().to_flat()
    return [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
            if k not in _RESUMABLE and before.get(k) != now.get(k)
            and not (k not in before and now.get(k) == defaults.get(k))]


def _record_config(cfg: RunConfig, path: Path, resume: bool) -> None:
    now = cfg.to_flat()
    if resume and path.is_file():
        changed = config_changes(json.loads(path.read_text()), now)
        if changed:
            raise ConfigError(
                f"--resume in {path.parent} with a different config ({'; '.join(changed)}); "
                "rerun with the same config and --set flags, or use a new --out without --resume"
            )
    path.write_text(json.dumps(now, indent=2))
