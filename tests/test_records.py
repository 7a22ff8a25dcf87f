"""benchmarks/records.py: a seed's methods run in two sessions, kept in one record, summarized by seeds.py."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from fedproxy.cli import main
from fedproxy.errors import ConfigError
from tests.conftest import benchmark_script


def _run(out, methods, *extra):
    assert main(["run", "--config", "tiny", "--out", str(out), "--quiet", "--resume",
                 "--set", f"methods={json.dumps(methods)}", *extra]) == 0


def test_a_seed_split_over_two_sessions_resumes_from_its_record_and_is_summarized(tmp_path, capsys):
    records, seeds = benchmark_script("records"), benchmark_script("seeds")
    rec = tmp_path / "records" / "seed0.json.gz"
    _run(tmp_path / "first", ["zero-shot", "fedproxy"])
    records.save(tmp_path / "first", rec)
    first = json.loads((tmp_path / "first" / "results" / "fedproxy.json").read_text())

    # a later session on a new machine: nothing of the first run folder is left but the record
    second = tmp_path / "second"
    assert records.restore(rec, second) == ["fedproxy", "zero-shot"]
    _run(second, ["zero-shot", "fedproxy", "proxy-centralized"])
    # the restored methods were not run again, and the proxy compressed anew is the same one
    assert json.loads((second / "results" / "fedproxy.json").read_text()) == json.loads(json.dumps(first))
    record = records.save(second, rec)
    assert sorted(record["methods"]) == ["fedproxy", "proxy-centralized", "zero-shot"]
    comp = {n: record["methods"][n]["compression"] for n in ("fedproxy", "proxy-centralized")}
    assert comp["fedproxy"]["proxy_digest"] == comp["proxy-centralized"]["proxy_digest"]
    assert "shared_from" not in comp["proxy-centralized"]  # compressed again in the second session
    assert all(m["environment"]["device"] == "cpu" for m in record["methods"].values())
    # the CPU each method ran on and the vector instructions torch used there, for comparing wall times
    capability = f"({torch.backends.cpu.get_cpu_capability()})"
    assert all(m["environment"]["processor"].endswith(capability) for m in record["methods"].values())
    assert capability in records.status(rec.parent)

    capsys.readouterr()
    assert seeds.main(["--seeds", "0", "--records", str(rec.parent), "--out", str(tmp_path / "s")]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert set(summary["methods"]) == {"zero-shot", "fedproxy", "proxy-centralized"}
    assert summary["methods"]["fedproxy"]["score"]["per_seed"][0] == pytest.approx(first["score"])
    assert "proxy-centralized - fedproxy" in summary["paired"]
    assert summary["machines"]["0"]["processor"].endswith(capability)


def test_a_record_refuses_another_experiment_and_a_seed_missing_a_method_is_named(tmp_path, capsys):
    records, seeds = benchmark_script("records"), benchmark_script("seeds")
    rec = tmp_path / "records"
    _run(tmp_path / "a", ["zero-shot", "fedproxy"])
    records.save(tmp_path / "a", rec / "seed0.json.gz")
    _run(tmp_path / "b", ["zero-shot"], "--set", "fed.rounds=3")
    with pytest.raises(ConfigError, match="fed.rounds: 2 -> 3"):
        records.save(tmp_path / "b", rec / "seed0.json.gz")
    with pytest.raises(ConfigError, match="another experiment"):
        records.restore(rec / "seed0.json.gz", tmp_path / "b")
    _run(tmp_path / "c", ["zero-shot"], "--set", "seed=1")
    records.save(tmp_path / "c", rec / "seed1.json.gz")
    capsys.readouterr()
    assert seeds.main(["--seeds", "0", "1", "--records", str(rec), "--out", str(tmp_path / "s")]) == 1
    assert "seed 1: fedproxy" in capsys.readouterr().out
    assert "seed1.json.gz: seed 1\n  zero-shot:" in records.status(rec)


def test_methods_that_share_a_proxy_key_must_have_trained_the_same_proxy():
    records = benchmark_script("records")
    same = {"proxy_key": "k", "proxy_digest": "d1"}
    methods = {"fedproxy": {"compression": same}, "proxy-centralized": {"compression": same},
               "offsite-tuning": {"compression": {"proxy_key": "e", "proxy_digest": "d9"}}}
    assert records.proxy_mismatches(methods) == []
    methods["proxy-centralized"] = {"compression": {**same, "proxy_digest": "d2"}}
    assert records.proxy_mismatches(methods) == ["fedproxy and proxy-centralized trained different proxies "
                                                 "(digest d1 vs d2, and their reference losses before training "
                                                 "differ by more than 0.001)"]


def _before(**losses):
    return {"proxy_before_fl": {"per_client": {c: {"score": 0.1, "loss": v} for c, v in losses.items()}}}


def test_a_proxy_compressed_again_on_another_processor_is_the_same_proxy_when_it_scores_alike():
    records = benchmark_script("records")
    comp = {"proxy_key": "k", "proxy_digest": "d1"}
    first = {"compression": comp, **_before(a=8.3881, b=2.5)}

    def other(**losses):  # the same key compressed again: last-bit differences change the digest
        return records.proxy_mismatches({"fedproxy": first, "proxy-centralized": {
            "compression": {**comp, "proxy_digest": "d2"}, **_before(**losses)}})

    assert other(a=8.3881 * (1 + 2e-5), b=2.5 * (1 - 1e-5)) == []  # rounding: the same proxy
    assert other(a=8.3881 * 1.01, b=2.5) != []  # one client's loss 1% off: another proxy
    assert other(a=8.3881) != []  # a client missing
    assert records.proxy_mismatches({"fedproxy": first, "proxy-centralized": {  # no losses to compare
        "compression": {**comp, "proxy_digest": "d2"}}}) != []


def test_a_proxy_compressed_with_other_vector_instructions_passes_the_check(tmp_path):
    """The premise of the tolerance: the same compression with MKL and ATen held to SSE4.2 (as on an
    older processor) rounds differently, and may give another digest, yet its losses match."""
    records = benchmark_script("records")
    results = {}
    for name, env in {"native": {}, "sse": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}}.items():
        subprocess.run([sys.executable, "-c", "from fedproxy.cli import main; raise SystemExit(main())", "run",
                        "--config", "tiny", "--out", str(tmp_path / name), "--quiet",
                        "--set", 'methods=["proxy-centralized"]'], env={**os.environ, **env}, check=True)
        results[name] = json.loads((tmp_path / name / "results" / "proxy-centralized.json").read_text())
    assert records.proxy_mismatches({"fedproxy": results["native"], "proxy-centralized": results["sse"]}) == []


def test_watch_keeps_a_refused_run_beside_the_record(tmp_path):
    records = benchmark_script("records")
    rec = tmp_path / "records" / "seed0.json.gz"
    _run(tmp_path / "a", ["zero-shot", "fedproxy"])
    records.save(tmp_path / "a", rec)
    held = records.read(rec)
    # the run's own fedproxy trained another proxy than the record's, as another machine might
    run = tmp_path / "b"
    records.restore(rec, run)
    (run / "results" / "zero-shot.json").unlink()
    result = json.loads((tmp_path / "a" / "results" / "fedproxy.json").read_text())
    result["compression"]["proxy_digest"] = "another"
    for c in result["proxy_before_fl"]["per_client"].values():
        c["loss"] *= 1.05
    (run / "results" / "fedproxy.json").write_text(json.dumps(result))
    _run(run, ["zero-shot", "fedproxy", "proxy-centralized"])  # fedproxy kept as it is; the other two run, compressing anew
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    logs = []
    assert records.watch(run, rec, pid=ended.pid, every=0.1, log=logs.append) == (0, 1)  # no save, one refusal
    assert "REFUSED" in logs[-1] and "trained different proxies" in logs[-1]
    assert records.read(rec) == held  # the record is as it was
    kept = records.read(records.refused_path(rec))  # and nothing the run finished is lost
    assert sorted(kept["methods"]) == ["fedproxy", "proxy-centralized", "zero-shot"]
    assert kept["methods"]["fedproxy"]["compression"]["proxy_digest"] == "another"


def test_watch_saves_each_method_of_a_running_run_and_stops_when_it_ends(tmp_path):
    records = benchmark_script("records")
    out, rec = tmp_path / "run", tmp_path / "records" / "seed0.json.gz"
    proc = subprocess.Popen([sys.executable, "-c", "from fedproxy.cli import main; raise SystemExit(main())",
                             "run", "--config", "tiny", "--out", str(out), "--quiet",
                             "--set", 'methods=["zero-shot","fedproxy"]'])
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped as it ends, as a shell does
    logs = []
    saves, refused = records.watch(out, rec, pid=proc.pid, every=0.2, log=logs.append)
    assert proc.wait(timeout=30) == 0
    assert sorted(records.read(rec)["methods"]) == ["fedproxy", "zero-shot"]
    assert 1 <= saves == sum("methods" in m for m in logs) and refused == 0
    assert records.watch(out, rec, pid=proc.pid, every=0.2, log=logs.append) == (1, 0)  # ended: one last look


def test_watch_refuses_a_pid_that_is_not_running(tmp_path):
    records = benchmark_script("records")
    pid = subprocess.Popen([sys.executable, "-c", "pass"]).pid  # never reaped: a zombie once it ends
    deadline = time.time() + 10
    while records._alive(pid) and time.time() < deadline:  # a zombie counts as ended
        time.sleep(0.05)
    assert not records._alive(pid)
    with pytest.raises(ConfigError, match=f"--pid {pid}: no such process"):
        records.main(["watch", str(tmp_path), str(tmp_path / "r.json.gz"), "--pid", str(pid)])


def test_continue_restores_runs_the_methods_left_and_saves_them(tmp_path, capsys):
    records = benchmark_script("records")
    rec = tmp_path / "records" / "seed0.json.gz"
    _run(tmp_path / "first", ["zero-shot"])
    records.save(tmp_path / "first", rec)
    zero_shot = records.read(rec)["methods"]["zero-shot"]

    second = tmp_path / "second"  # a new machine: only the record is left
    args = ["--config", "tiny", "--quiet", "--set", 'methods=["zero-shot","fedproxy"]']
    assert records.main(["continue", "--every", "0.2", str(rec), str(second), "--", *args]) == 0
    out = capsys.readouterr().out
    assert f"{second}: restored zero-shot" in out
    record = records.read(rec)
    assert sorted(record["methods"]) == ["fedproxy", "zero-shot"]
    assert record["methods"]["zero-shot"] == zero_shot  # restored, not run again
    assert records.main(["continue", str(rec), str(second), "--", *args]) == 0  # nothing left: a no-op
    assert "restored nothing" in capsys.readouterr().out

    with pytest.raises(ConfigError, match="sets --out itself"):
        records.main(["continue", str(rec), str(second), "--", "--config", "tiny", "--out", "elsewhere"])
    # a run of another experiment fails as fedproxy run --resume does, and the record keeps what it held
    assert records.main(["continue", "--every", "0.2", str(rec), str(second), "--", "--config", "tiny",
                         "--quiet", "--set", "fed.rounds=3"]) != 0
    assert records.read(rec)["methods"] == record["methods"]


def test_continue_exits_non_zero_when_the_record_refuses_the_run_and_keeps_it_beside(tmp_path):
    records = benchmark_script("records")
    rec = tmp_path / "records" / "seed0.json.gz"
    _run(tmp_path / "a", ["zero-shot", "fedproxy"])
    records.save(tmp_path / "a", rec)
    held = records.read(rec)  # the record's fedproxy trained another proxy than this machine will compress
    held["methods"]["fedproxy"]["compression"]["proxy_digest"] = "another"
    for c in held["methods"]["fedproxy"]["proxy_before_fl"]["per_client"].values():
        c["loss"] *= 1.05
    records.write(held, rec)
    args = ["--config", "tiny", "--quiet", "--set", 'methods=["zero-shot","fedproxy","proxy-centralized"]']
    assert records.main(["continue", "--every", "0.2", str(rec), str(tmp_path / "b"), "--", *args]) == 1
    assert records.read(rec) == held
    assert "proxy-centralized" in records.read(records.refused_path(rec))["methods"]
