"""benchmarks/reselect.py redoes a finished run's plug-in decision from the proxies it saved."""

import json

from fedproxy.cli import main
from tests.conftest import benchmark_script


def test_reselect_under_the_same_rule_ships_what_the_run_shipped(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--config", "tiny", "--out", str(run), "--quiet", "--set", 'methods=["fedproxy"]']) == 0
    assert benchmark_script("reselect").main([str(run), "--methods", "fedproxy"]) == 0
    out = json.loads((run / "reselect.json").read_text())["fedproxy"]
    recorded = json.loads((run / "results" / "fedproxy.json").read_text())["fusion"]
    assert out["recorded"]["scale"] == recorded["scale"] and not out["changed"]
    assert out["now"]["shipped"] == recorded["decision"]["shipped"]
