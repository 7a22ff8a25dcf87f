"""The report states each promise of the method with the number that decides it."""

import pytest

from fedproxy.report import class_recall, goal_checks


def method(acc, proxy=None):
    r = {"accuracy": acc}
    if proxy is not None:
        r["proxy_after_fl"] = {"accuracy": proxy}
    return r


def test_goal_checks_say_which_promise_holds():
    methods = {"zero-shot": method(0.4), "fedproxy": method(0.55, proxy=0.6),
               "offsite-tuning": method(0.5, proxy=0.45), "centralized": method(0.6)}
    checks = {c["check"]: c for c in goal_checks(methods)}
    assert {c["method"] for c in goal_checks(methods)} == {"fedproxy"}  # OT is a baseline, not checked
    gain = checks["recovers >= 90% of the centralized gain"]
    assert gain["measured"] == "75%" and not gain["holds"]
    assert checks["fused LLM above Offsite-Tuning"]["holds"]
    ip = checks["fused LLM above the proxy alone (the IP gap)"]
    assert ip["measured"] == "-0.050" and not ip["holds"]


def test_goal_checks_skip_promises_without_numbers():
    checks = goal_checks({"fedproxy": method(0.5, proxy=0.4)})
    assert [c["check"] for c in checks] == ["fused LLM above the proxy alone (the IP gap)"]
    assert checks[0]["holds"]


def tabled(correct: list[int], proxy: list[int] | None = None) -> dict:
    """A result with per-example tables: ``correct`` 1/0 per test example of one client."""
    def ev(c):
        return {"accuracy": sum(c) / len(c), "per_client": {"a": {"predictions": c, "gold": [1] * len(c)}}}
    r = ev(correct)
    if proxy is not None:
        r["proxy_after_fl"] = ev(proxy)
    return r


def test_a_difference_within_its_confidence_interval_is_reported_as_noise_not_as_holding():
    n = 400
    fused = [1] * 241 + [0] * (n - 241)
    methods = {"zero-shot": tabled([1] * 160 + [0] * 240), "centralized": tabled([1] * 300 + [0] * 100),
               "fedproxy": tabled(fused, proxy=[1] * 240 + [0] * (n - 240)),  # one example more than its proxy
               "offsite-tuning": tabled([1] * 170 + [0] * 230, proxy=[1] * 170 + [0] * 230)}
    checks = {c["check"]: c for c in goal_checks(methods)}
    ip = checks["fused LLM above the proxy alone (the IP gap)"]
    assert ip["holds"] is None and ip["measured"].startswith("+0.003 [")
    ot = checks["fused LLM above Offsite-Tuning"]
    assert ot["holds"] is True and ot["measured"].startswith("+0.177 [+")
    gain = checks["recovers >= 90% of the centralized gain"]
    assert gain["measured"].startswith("58% [") and gain["holds"] is False


def test_class_recall_reads_the_confusion_rows():
    confusion = [[3, 1, 0], [0, 0, 0], [2, 2, 0]]  # gold x predicted; class 2 is never predicted
    assert class_recall(confusion) == [0.75, None, 0.0]


def _row(acc, **extra):
    return {"accuracy": acc, "loss": 1.0, "wall_seconds": 1.0, "confusion": [[2, 1], [0, 3]],
            "per_client": {"a": {"accuracy": acc}, "b": {"accuracy": acc}}, **extra}


def _report(methods):
    return {"seed": 0, "total_seconds": 2.0, "config": {"model": {"source": "tiny"}}, "environment": {"device": "cpu"},
            "benchmark": {"name": "b", "labels": ["x", "y"], "clients": [{"name": "a"}, {"name": "b"}]},
            "methods": methods}


def test_a_resumed_run_reports_what_its_reused_methods_cost(tmp_path):
    from fedproxy.report import write_report

    fresh = write_report(_report({"zero-shot": _row(0.4), "centralized": _row(0.6)}), tmp_path).read_text()
    assert "total 2 s." in fresh  # the methods' 1 + 1 s fit in this invocation's 2 s
    resumed = _report({"zero-shot": _row(0.4, wall_seconds=600.0), "centralized": _row(0.6, wall_seconds=900.0)})
    text = write_report(resumed, tmp_path).read_text()
    assert "2 s in this invocation; the methods' own wall times add up to 1500 s" in text


def test_report_tables_have_a_delimiter_cell_per_header_cell(tmp_path):
    from fedproxy.report import write_report

    report = _report({"zero-shot": _row(0.4), "centralized": _row(0.6)})
    lines = write_report(report, tmp_path).read_text().splitlines()
    delims = [i for i, line in enumerate(lines) if line.startswith("|---")]
    assert len(delims) == 2  # the methods table and the recall table
    for i in delims:
        assert lines[i].count("|") == lines[i - 1].count("|"), lines[i - 1]
    assert "| zero-shot | 0.67 | 1.00 |" in lines


def test_report_says_which_plug_in_was_not_applied(tmp_path):
    from fedproxy.report import write_report

    report = _report({"fedproxy": _row(0.4, fusion={"scale": 0.0}), "offsite-tuning": _row(0.5, fusion={"scale": 2.0})})
    text = write_report(report, tmp_path).read_text()
    assert "- fedproxy: no delta beat the unchanged LLM" in text
    assert "offsite-tuning: no delta" not in text


def test_report_gives_each_plug_in_decision_and_flagged_round(tmp_path):
    from fedproxy.report import write_report

    decision = {"shipped": "unchanged LLM", "why": "x1 was not shown better: +0.005 on 200 validation examples",
                "rejected": [{"variant": "source", "scale": 1.0, "aligned": False,
                              "reason": "rejected: not shown better than the unchanged LLM"}]}
    checks = [{"flagged": False}, {"flagged": True, "collapse": ["predicts 'negative' for 190 of 200 examples"],
                                   "change": -0.2, "drop_p": 0.001, "rolled_back": True}]
    report = _report({"fedproxy": _row(0.4, fusion={"scale": 0.0, "decision": decision},
                                       federation={"round_checks": checks})})
    text = write_report(report, tmp_path).read_text()
    assert "- fedproxy: **unchanged LLM** shipped. x1 was not shown better: +0.005 on 200 validation examples." in text
    assert "  - rejected x1 source: not shown better than the unchanged LLM" in text
    assert "- fedproxy, round 2: the global proxy predicts 'negative' for 190 of 200 examples — rolled back" in text


def test_every_selecting_method_records_its_decision_and_never_ships_below_the_llm_on_validation(tiny_cfg, tmp_path):
    import json

    from fedproxy.pipeline import run

    cfg = tiny_cfg.with_overrides(['methods=["zero-shot","fedproxy","offsite-tuning","proxy-centralized"]'])
    run(cfg, tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    zs = report["methods"]["zero-shot"]
    for name in ("fedproxy", "offsite-tuning", "proxy-centralized"):
        r = report["methods"][name]
        decision = r["fusion"]["decision"]
        llm_val = next(t for t in r["fusion"]["trials"] if t["scale"] == 0)["val_accuracy"]
        chosen = next(t for t in r["fusion"]["trials"] if t["scale"] == r["fusion"]["scale"])
        if decision["shipped"] == "unchanged LLM":
            assert r["fusion"]["scale"] == 0 and r["accuracy"] == zs["accuracy"]
            assert r["per_client"]["d0"]["predictions"] == zs["per_client"]["d0"]["predictions"]
        else:
            assert chosen["verdict"] == "accepted" and chosen["val_accuracy"] > llm_val
        assert decision["val_examples"] == report["benchmark"]["server_val"]
        assert len(r["federation"]["round_checks"]) == r["federation"]["rounds"]


def test_a_generation_benchmark_runs_end_to_end_with_its_metric(tmp_path):
    import json

    from fedproxy.config import load_config
    from fedproxy.pipeline import run

    cfg = load_config("tiny-qa").with_overrides(['methods=["zero-shot","fedproxy","centralized"]', "fed.curve=true"])
    text = run(cfg, tmp_path, progress=False).read_text()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["benchmark"]["metric"] == "f1" and "| method | f1 | loss |" in text
    fed = report["methods"]["fedproxy"]
    client = fed["per_client"]["d0"]
    assert len(client["scores"]) == len(client["outputs"]) == client["n"]
    assert fed["fusion"]["decision"]["shipped"] in ("plug-in", "unchanged LLM")
    assert "fused_test_score" in fed["federation"]["round_checks"][0]
    assert (tmp_path / "report_curve.png").is_file()


def test_a_report_of_the_methods_finished_so_far(tiny_cfg, tmp_path, capsys):
    import json

    from fedproxy.pipeline import run
    from tests.test_cli import run_cli

    run(tiny_cfg.with_overrides(['methods=["zero-shot","fedproxy"]']), tmp_path, progress=False)
    first = json.loads((tmp_path / "report.json").read_text())
    (tmp_path / "results" / "fedproxy.json").unlink()  # as if the run were still inside fedproxy
    (tmp_path / "report.json").unlink()
    code, out, _ = run_cli(capsys, "report", "--out", str(tmp_path))
    assert code == 0 and "report written" in out
    partial = json.loads((tmp_path / "report.json").read_text())
    assert partial["unfinished"] == ["fedproxy"] and list(partial["methods"]) == ["zero-shot"]
    assert partial["methods"]["zero-shot"]["accuracy"] == first["methods"]["zero-shot"]["accuracy"]
    assert "**Partial report**: not finished yet: fedproxy." in (tmp_path / "report.md").read_text()
    code, _, err = run_cli(capsys, "report", "--out", str(tmp_path / "nothing"))
    assert code == 2 and "no run_config.json" in err


def _curved(seed, fused_test, per_client_correct, best):
    """A one-client report whose fedproxy recorded ``fused_test`` after each round (the other series are
    derived from it) and whose methods' per-example test tables are ``per_client_correct``."""
    checks = [{"fused_test_score": f, "fused_val_score": f - 0.1, "val_score": f + 0.1, "proxy_test_score": f + 0.05}
              for f in fused_test]
    methods = {name: {"accuracy": sum(c) / len(c), "per_client": {"a": {"predictions": c, "gold": [1] * len(c)}}}
               for name, c in per_client_correct.items()}
    methods["fedproxy"]["federation"] = {"round_checks": checks, "best_round": best}
    return {"seed": seed, "config": {"fed": {"curve_test": 2}}, "benchmark": {"clients": [{"name": "a"}]},
            "methods": methods}


def test_learning_curves_average_each_round_over_the_seeds_that_reached_it_and_score_references_on_the_subset(
        tmp_path):
    from fedproxy.report import learning_curves, plot_curves

    reports = [_curved(0, [0.4, 0.6, 0.5], {"zero-shot": [1, 0, 0, 0], "fedproxy": [1, 1, 0, 0]}, best=2),
               _curved(1, [0.2, 0.4], {"zero-shot": [0, 0, 1, 1], "fedproxy": [1, 0, 1, 1]}, best=2)]
    curves = learning_curves(reports)
    fed = curves["methods"]["fedproxy"]
    assert fed["fused_test"]["mean"] == pytest.approx([0.3, 0.5, 0.5]) and fed["fused_test"]["n"] == [2, 2, 1]
    assert fed["proxy_val"]["per_seed"][1] == pytest.approx([0.3, 0.5]) and fed["best_round"] == [2, 2]
    # the first 2 test examples only: zero-shot 1/2 and 0/2, not its full-test 1/4 and 2/4
    assert curves["references"]["zero-shot"] == {"mean": 0.25, "per_seed": [0.5, 0.0]}
    assert curves["references"]["fedproxy"]["per_seed"] == [1.0, 0.5]
    assert list(curves["methods"]) == ["fedproxy"] and curves["seeds"] == [0, 1]
    assert plot_curves(curves, tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 0
    flat = learning_curves([{**reports[0], "methods": {"zero-shot": reports[0]["methods"]["zero-shot"]}}])
    assert flat["methods"] == {} and not plot_curves(flat, tmp_path / "none.png")
