"""benchmarks/ablation.py: a variant that is a seed record's own experiment is read from the record, not run again."""

import json

from fedproxy.cli import main
from tests.conftest import benchmark_script


def test_a_variant_that_is_the_records_experiment_comes_from_the_record(tmp_path, capsys):
    records, ablation = benchmark_script("records"), benchmark_script("ablation")
    run, recs = tmp_path / "run", tmp_path / "records"
    assert main(["run", "--config", "tiny", "--out", str(run), "--quiet",
                 "--set", 'methods=["zero-shot","fedproxy","centralized"]']) == 0
    records.save(run, recs / "seed0.json.gz")
    recorded = json.loads((run / "results" / "fedproxy.json").read_text())

    out = tmp_path / "ablation"
    assert ablation.main(["--suite", "stopping", "--config", "tiny", "--seeds", "0", "--out", str(out),
                          "--records", str(recs)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "stopping.json").read_text())
    first, second = (out / "stopping" / "seed0" / d for d in ("patience-on-the-fused-llm-at-x1",
                                                             "patience-on-the-proxy"))
    # the record's FedProxy is the first row; nothing of it ran again (no work folder), the other variant ran
    assert summary["rows"]["patience on the fused LLM at x1"]["0"]["fused_accuracy"] == recorded["score"]
    assert not (first / "work").exists() and (second / "work").is_dir()
    assert json.loads((second / "run_config.json").read_text())["fed.stop_on"] == "proxy"
    # the record's zero-shot and centralized give each row its share of the centralized gain
    assert set(summary["gain_recovered"]) == {"patience on the fused LLM at x1", "patience on the proxy"}
    assert "of the centralized gain" in table
    # --only the other variant: the record's row is still read back into the table
    assert ablation.main(["--suite", "stopping", "--config", "tiny", "--seeds", "0", "--out", str(out),
                          "--records", str(recs), "--resume", "--only", "patience on the proxy"]) == 0
    assert set(json.loads((out / "stopping.json").read_text())["rows"]) == set(summary["rows"])


def test_a_record_of_another_experiment_is_not_used(tmp_path):
    records, ablation = benchmark_script("records"), benchmark_script("ablation")
    run = tmp_path / "run"
    assert main(["run", "--config", "tiny", "--out", str(run), "--quiet", "--set", "fed.rounds=1",
                 "--set", 'methods=["fedproxy"]']) == 0
    record = records.save(run, tmp_path / "seed0.json.gz")
    assert ablation._is_record(record, ["fed.rounds=1"], 0, "tiny")
    assert not ablation._is_record(record, [], 0, "tiny")  # the preset's rounds: another experiment
    assert not ablation._is_record(record, ["fed.rounds=1"], 1, "tiny")  # another seed
    assert not ablation._is_record(record, ["fed.rounds=1", 'methods=["proxy-centralized"]'], 0, "tiny")


def test_a_variant_run_into_its_own_record_comes_from_that_record(tmp_path):
    """A variant too long for one session runs into a seed record of its own; with both folders in --records
    neither variant runs again, and the share of the centralized gain comes from the record that has them."""
    records, ablation = benchmark_script("records"), benchmark_script("ablation")
    main_recs, variant_recs = tmp_path / "records", tmp_path / "records-proxy"
    for run, recs, extra in ((tmp_path / "run", main_recs, ['methods=["zero-shot","fedproxy","centralized"]']),
                             (tmp_path / "variant", variant_recs, ['methods=["fedproxy"]', "fed.stop_on=proxy"])):
        assert main(["run", "--config", "tiny", "--out", str(run), "--quiet",
                     *[x for o in extra for x in ("--set", o)]]) == 0
        records.save(run, recs / "seed0.json.gz")
    variant_score = json.loads((tmp_path / "variant" / "results" / "fedproxy.json").read_text())["score"]

    out = tmp_path / "ablation"
    assert ablation.main(["--suite", "stopping", "--config", "tiny", "--seeds", "0", "--out", str(out),
                          "--records", str(main_recs), str(variant_recs)]) == 0
    summary = json.loads((out / "stopping.json").read_text())
    assert summary["rows"]["patience on the proxy"]["0"]["fused_accuracy"] == variant_score
    assert not any((out / "stopping" / "seed0" / d / "work").exists()
                   for d in ("patience-on-the-fused-llm-at-x1", "patience-on-the-proxy"))
    assert set(summary["gain_recovered"]) == {"patience on the fused LLM at x1", "patience on the proxy"}
