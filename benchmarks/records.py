"""Seed records: a benchmark seed's finished methods, kept in git so a seed can span sessions and machines.

A `converge` seed takes hours on 2 CPU cores, longer than a working session, and a session's run
folders do not outlive its machine. So each seed's finished methods are kept, small, in
``benchmarks/results/records/<benchmark>/seed<N>.json.gz``: the run's config, its benchmark
description, and every finished method's result (per-example test scores and answers, the fusion
decision, the curve), each with the machine it ran on. No weights, no data.

    python benchmarks/records.py save runs/converge-qa/seed1 benchmarks/results/records/qa-converge/seed1.json.gz
    python benchmarks/records.py restore benchmarks/results/records/qa-converge/seed1.json.gz runs/converge-qa/seed1
    fedproxy run --config converge-qa --out runs/converge-qa/seed1 --set seed=1 --resume   # the methods left
    python benchmarks/records.py status benchmarks/results/records/qa-converge

A run that outlasts the session loses only the method it was on if a watcher saves each method as it
finishes (it returns after the run's process ends, with a last save):

    fedproxy run --config converge-qa --out runs/converge-qa/seed2 --set seed=2 --resume &
    python benchmarks/records.py watch runs/converge-qa/seed2 benchmarks/results/records/qa-converge/seed2.json.gz --pid $!

``continue`` does all three in one command (restore, the run with ``--resume``, the watcher), with the
arguments after ``--`` passed to ``fedproxy run``:

    python benchmarks/records.py continue benchmarks/results/records/qa-converge/seed2.json.gz \
        runs/converge-qa/seed2 -- --config converge-qa --set seed=2

``save`` adds the run's finished methods to the record (a method the run has replaces the
record's), after checking that both hold the same experiment (``fedproxy.pipeline.config_changes``)
and that methods sharing a proxy (``fedproxy`` and ``proxy-centralized``) trained the same one
(its content digest): each session compresses it again. ``restore`` writes the record's methods
into a run folder, where ``--resume`` skips them. ``benchmarks/seeds.py --records DIR`` summarizes
the records.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from fedproxy.errors import ConfigError, FedProxyError
from fedproxy.pipeline import config_changes, report_finished

FORMAT = "fedproxy-seed-record/1"


def read(path: Path) -> dict:
    """A record, checked for its format."""
    try:
        record = json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a seed record ({e}); write one with `records.py save`") from e
    if record.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {record.get('format')!r}, expected {FORMAT!r}")
    return record


def write(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same record gives the same bytes, so an unchanged seed leaves git clean
    path.write_bytes(gzip.compress(json.dumps(record, sort_keys=True).encode(), mtime=0))


# Two compressions of one proxy (same key) on processors with other vector instructions round
# differently, so their weights, and digests, differ in the last bits; their reference losses before
# training still agree closely (the tiny model with MKL and ATen held to SSE4.2: another digest,
# losses within 1e-7; tests/test_records.py). A proxy compressed otherwise moves them far more.
PROXY_LOSS_RTOL = 1e-3


def _same_proxy_behaviour(a: dict, b: dict) -> bool:
    """Whether two methods' proxies, before any training, had the same reference loss on every test
    client (to :data:`PROXY_LOSS_RTOL`): the same proxy up to floating-point rounding."""
    pa, pb = (m.get("proxy_before_fl", {}).get("per_client", {}) for m in (a, b))
    losses = [(pa[c].get("loss"), pb.get(c, {}).get("loss")) for c in pa]
    return bool(losses) and set(pa) == set(pb) and all(
        x is not None and y is not None and math.isclose(x, y, rel_tol=PROXY_LOSS_RTOL) for x, y in losses)


def proxy_mismatches(methods: dict) -> list[str]:
    """Methods that compressed a proxy under the same key (``fedproxy.proxies.proxy_key``) but got
    different proxies: they did not train the same one, so their comparison is not paired. Weights
    whose digests differ are the same proxy when the two scored alike before training
    (:func:`_same_proxy_behaviour`): compressed again on another processor."""
    seen: dict[str, tuple[str, dict]] = {}
    bad = []
    for name, m in methods.items():
        comp = m.get("compression", {})
        key, dig = comp.get("proxy_key"), comp.get("proxy_digest")
        if key is None or dig is None:
            continue
        if key in seen:
            first, other = seen[key]
            if other["compression"]["proxy_digest"] != dig and not _same_proxy_behaviour(other, m):
                bad.append(f"{first} and {name} trained different proxies (digest "
                           f"{other['compression']['proxy_digest']} vs {dig}, and their reference losses before "
                           f"training differ by more than {PROXY_LOSS_RTOL:g})")
        seen.setdefault(key, (name, m))
    return bad


def save(run: Path, path: Path, check_proxy: bool = True) -> dict:
    """Add the finished methods of the run folder ``run`` to the record at ``path`` (made if missing).
    ``check_proxy=False`` skips :func:`proxy_mismatches`, for keeping a refused run's results only."""
    report_finished(run)  # writes run/report.json from its results/*.json
    report = json.loads((run / "report.json").read_text())
    run_config = json.loads((run / "run_config.json").read_text())
    # gain_recovered is the report's, against the methods present when it was written: left out
    methods = {n: {**{k: v for k, v in m.items() if k != "gain_recovered"},
                   "environment": m.get("environment", report["environment"])}
               for n, m in report["methods"].items()}
    if path.is_file():
        record = read(path)
        changed = config_changes(record["run_config"], run_config)
        if changed:
            raise ConfigError(f"{run} holds another experiment than {path} ({'; '.join(changed)}); "
                              "save it under another name")
        methods = {**record["methods"], **methods}
    bad = proxy_mismatches(methods) if check_proxy else []
    if bad:
        raise ConfigError(f"{path}: {'; '.join(bad)}. Compression was not reproduced in this session "
                          "(another machine or torch version?); rerun those methods together")
    record = {"format": FORMAT, "seed": report["seed"], "fedproxy_version": report["fedproxy_version"],
              "config": report["config"], "run_config": run_config, "benchmark": report["benchmark"],
              "methods": {n: methods[n] for n in sorted(methods)}}
    write(record, path)
    return record


def restore(path: Path, run: Path) -> list[str]:
    """Write the record's methods into the run folder ``run`` (those it lacks), so that
    ``fedproxy run --resume`` there runs only the methods left; returns the names written."""
    record = read(path)
    run.mkdir(parents=True, exist_ok=True)
    config = run / "run_config.json"
    if config.is_file():
        changed = config_changes(json.loads(config.read_text()), record["run_config"])
        if changed:
            raise ConfigError(f"{run} holds another experiment than {path} ({'; '.join(changed)})")
    else:
        config.write_text(json.dumps(record["run_config"], indent=2))
    (run / "results").mkdir(exist_ok=True)
    written = []
    for name, m in record["methods"].items():
        target = run / "results" / f"{name}.json"
        if not target.is_file():
            target.write_text(json.dumps(m, indent=2))
            written.append(name)
    return written


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs; a zombie (ended, not yet reaped) has ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:  # Linux: the state letter follows the command name in parentheses
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _finished(run: Path) -> tuple:
    return tuple(sorted((f.name, f.stat().st_mtime_ns) for f in (run / "results").glob("*.json")))


class Watched(NamedTuple):
    """What :func:`watch` did: saves into the record, and saves the record refused (kept beside it)."""
    saves: int
    refused: int


def watch(run: Path, path: Path, pid: int | None = None, every: float = 60.0,
          log: Callable[[str], None] = print) -> Watched:
    """:func:`save` the run folder ``run`` into ``path`` whenever a method finishes (its results
    change), until process ``pid`` has ended (then a last look); without ``pid``, until interrupted.
    A save that fails (a result still being written) is tried again at the next look. A save the
    record refuses (:func:`save`: another experiment, another proxy) goes to :func:`refused_path`
    instead, so the run's finished methods outlive its machine either way."""
    last, saves, refused = None, 0, 0
    while True:
        alive = pid is None or _alive(pid)  # read before looking, so the last look follows the end
        state = _finished(run) if (run / "results").is_dir() else ()
        if state and state != last:
            try:
                record = save(run, path)
            except ConfigError as e:  # refused (another experiment, another proxy): waiting will not help
                side, last, refused = refused_path(path), state, refused + 1
                try:  # this run's methods on their own, so nothing it finished is lost
                    save(run, side, check_proxy=False)
                    where = f"this run's methods are saved in {side} instead"
                except (FedProxyError, ValueError, OSError) as e2:
                    where = f"nor could they be saved in {side} ({e2}): they are only in {run / 'results'}"
                log(f"{time.strftime('%H:%M:%S')} {path}: REFUSED: {e}; {where}")
            except (FedProxyError, ValueError, OSError) as e:  # e.g. a result still being written
                log(f"{path}: not saved yet ({e}); trying again in {every:g} s")
            else:
                last, saves = state, saves + 1
                log(f"{time.strftime('%H:%M:%S')} {path}: seed {record['seed']}, methods "
                    f"{', '.join(record['methods'])}")
        if not alive:
            return Watched(saves, refused)
        time.sleep(every)


def refused_path(path: Path) -> Path:
    """Where :func:`watch` keeps a run's methods that the record at ``path`` refused."""
    return path.with_name(path.name.removesuffix(".json.gz") + ".refused.json.gz")


def continue_seed(path: Path, run: Path, run_args: list[str], every: float = 60.0,
                  log: Callable[[str], None] = print) -> int:
    """Continue a seed: :func:`restore` the record ``path`` (if it exists) into ``run``, run
    ``fedproxy run --out run --resume`` with ``run_args`` in a child process, and :func:`watch` it, so
    each method is saved into the record as it finishes. Returns the run's exit status."""
    if path.is_file():
        written = restore(path, run)
        log(f"{run}: restored {', '.join(written) or 'nothing (the run has them all)'}")
    cmd = [sys.executable, "-c", "import sys; from fedproxy.cli import main; sys.exit(main())",
           "run", "--out", str(run), "--resume", *run_args]
    proc = subprocess.Popen(cmd)
    try:
        watched = watch(run, path, proc.pid, every, log)
    except KeyboardInterrupt:  # the run, in the same process group, was interrupted too: keep what it finished
        proc.wait()
        watch(run, path, proc.pid, every, log)
        return 130
    rc = proc.wait()
    if watched.refused:
        log(f"{path} refused this run's methods (above); they are in {refused_path(path)}")
        return rc or 1
    return rc


def as_report(record: dict) -> dict:
    """The record as a ``report.json`` of its seed (what ``benchmarks/seeds.py`` summarizes); its
    ``environment`` is the FedProxy method's machine, and each method keeps its own."""
    methods = record["methods"]
    env = methods.get("fedproxy", next(iter(methods.values()), {})).get("environment", {})
    return {"fedproxy_version": record["fedproxy_version"], "seed": record["seed"], "config": record["config"],
            "benchmark": record["benchmark"], "environment": env, "methods": methods}


def status(folder: Path) -> str:
    """Which methods each seed record in ``folder`` holds, and where each ran."""
    lines = []
    for path in sorted(Path(folder).glob("seed*.json.gz")):
        record = read(path)
        lines.append(f"{path.name}: seed {record['seed']}")
        for name, m in record["methods"].items():
            env = m.get("environment", {})
            on = env.get("processor") or env.get("device")  # records before processor was recorded: the device
            lines.append(f"  {name}: {m.get('wall_seconds', 0) / 60:.0f} min on {on} "
                         f"({env.get('threads')} threads, torch {env.get('torch')})")
    return "\n".join(lines) or f"no seed records in {folder}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="add a run folder's finished methods to a seed record")
    s.add_argument("run", type=Path)
    s.add_argument("record", type=Path)
    r = sub.add_parser("restore", help="write a seed record's methods into a run folder, for --resume")
    r.add_argument("record", type=Path)
    r.add_argument("run", type=Path)
    st = sub.add_parser("status", help="the methods each seed record in a folder holds")
    st.add_argument("folder", type=Path)
    w = sub.add_parser("watch", help="save a run folder into a seed record each time a method finishes")
    w.add_argument("run", type=Path)
    w.add_argument("record", type=Path)
    w.add_argument("--pid", type=int, help="the run's process: stop after it ends (default: run until interrupted)")
    w.add_argument("--every", type=float, default=60.0, help="seconds between looks (default 60)")
    c = sub.add_parser("continue", help="restore a seed record, run the methods left (fedproxy run --resume) and "
                                        "save each into the record as it finishes")
    c.add_argument("record", type=Path)
    c.add_argument("run", type=Path)
    c.add_argument("run_args", nargs=argparse.REMAINDER,
                   help="after --: fedproxy run's arguments (--config, --set ...; --out and --resume are set)")
    c.add_argument("--every", type=float, default=60.0, help="seconds between looks (default 60)")
    args = p.parse_args(argv)
    if args.cmd == "continue":
        run_args = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
        if clash := sorted({"--out", "--resume"} & set(run_args)):
            raise ConfigError(f"records.py continue sets {' and '.join(clash)} itself (the run folder is "
                              f"{args.run}); leave them out of fedproxy run's arguments")
        return continue_seed(args.record, args.run, run_args, args.every, lambda m: print(m, flush=True))
    if args.cmd == "save":
        record = save(args.run, args.record)
        print(f"{args.record}: seed {record['seed']}, methods {', '.join(record['methods'])}")
    elif args.cmd == "restore":
        written = restore(args.record, args.run)
        print(f"{args.run}: restored {', '.join(written) or 'nothing (the run has them all)'}")
    elif args.cmd == "watch":
        if args.pid is not None and not _alive(args.pid):
            raise ConfigError(f"--pid {args.pid}: no such process running; give the run's process id "
                              "(`$!` after starting it with &)")
        if watch(args.run, args.record, args.pid, args.every, lambda m: print(m, flush=True)).refused:
            return 1
    else:
        print(status(args.folder))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FedProxyError as e:  # a clear message, not a traceback
        sys.exit(f"error: {e}")
