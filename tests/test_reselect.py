"""benchmarks/reselect.py redoes a finished run's plug-in decision from the proxies it saved."""

import importlib.util
import json
from pathlib import Path

from fedproxy.cli import main


def _reselect_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reselect.py"
    spec = importlib.util.spec_from_file_location("reselect_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reselect_under_the_same_rule_ships_what_the_run_shipped(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--config", "tiny", "--out", str(run), "--quiet", "--set", 'methods=["fedproxy"]']) == 0
    assert _reselect_module().main([str(run), "--methods", "fedproxy"]) == 0
    out = json.loads((run / "reselect.json").read_text())["fedproxy"]
    recorded = json.loads((run / "results" / "fedproxy.json").read_text())["fusion"]
    assert out["recorded"]["scale"] == recorded["scale"] and not out["changed"]
    assert out["now"]["shipped"] == recorded["decision"]["shipped"]
