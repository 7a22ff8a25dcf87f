"""Bad input gives one clear line and exit code 2; the tiny pipeline runs end to end."""

import json

import pytest

from fedproxy.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("fedproxy: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def assert_clear_error(fault_log, what: str, code: int, err: str, fragment: str) -> None:
    fault_log.bad_input(what)  # named first: if the assertion fails, the case counts as failed
    assert code == 2 and fragment in error_line(err)


def test_missing_model_path(capsys, tmp_path, fault_log):
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", f"model.source={tmp_path}/nope",
                           "--out", str(tmp_path / "o"), "--quiet")
    assert_clear_error(fault_log, "missing model path", code, err, "is not a built-in")


def test_directory_without_config_json(capsys, tmp_path, fault_log):
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", f"model.source={tmp_path}",
                           "--out", str(tmp_path / "o"), "--quiet")
    assert_clear_error(fault_log, "model directory without config.json", code, err, "has no config.json")


def test_unknown_benchmark(capsys, tmp_path, fault_log):
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", "data.benchmark=imagenet",
                           "--out", str(tmp_path), "--quiet")
    assert_clear_error(fault_log, "unknown benchmark name", code, err, "unknown benchmark 'imagenet'")


def test_unknown_method(capsys, tmp_path, fault_log):
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", 'methods=["magic"]', "--out", str(tmp_path))
    assert_clear_error(fault_log, "unknown method name", code, err, "unknown method 'magic'")


def test_malformed_config(capsys, tmp_path, fault_log):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [unclosed")
    code, _, err = run_cli(capsys, "run", "--config", str(bad), "--out", str(tmp_path))
    assert_clear_error(fault_log, "malformed config file", code, err, "malformed")


def test_gguf_of_unsupported_architecture(capsys, tmp_path, fault_log):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "bert.gguf"
    writer = GGUFWriter(str(path), "bert")
    writer.add_tensor("dummy", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", f"model.source={path}", "--out",
                           str(tmp_path / "o"), "--quiet")
    assert_clear_error(fault_log, "GGUF of an unsupported architecture", code, err, "architecture 'bert'")


def test_corrupt_gguf(capsys, tmp_path, fault_log):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf at all")
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--set", f"model.source={path}", "--out",
                           str(tmp_path / "o"), "--quiet")
    assert_clear_error(fault_log, "corrupt GGUF file", code, err, "not a readable GGUF")


def test_config_keys_listing(capsys):
    code, out, _ = run_cli(capsys, "config", "--keys")
    assert code == 0 and "fed.aggregator" in out and "compress.keep_ratio" in out


@pytest.mark.parametrize("resume", [False, True])
def test_tiny_run_writes_report_with_every_method(capsys, tmp_path, resume):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "run", "--config", "tiny", "--out", str(out), "--quiet")
    assert code == 0 and "report written" in stdout
    if resume:  # a second invocation with --resume reuses every finished method
        first = json.loads((out / "report.json").read_text())
        code, _, err = run_cli(capsys, "run", "--config", "tiny", "--out", str(out), "--quiet", "--resume")
        assert code == 0 and "already done" in err
        again = json.loads((out / "report.json").read_text())
        assert {k: v["accuracy"] for k, v in again["methods"].items()} == {
            k: v["accuracy"] for k, v in first["methods"].items()}
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 0
    methods = report["methods"]
    assert set(methods) == {"zero-shot", "fedproxy", "naive-plugin", "offsite-tuning", "fedavg-lora", "centralized",
                            "proxy-centralized", "centralized-kept"}
    for r in methods.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and set(r["per_client"]) == {"d0", "d1", "d2"}
    fed = methods["fedproxy"]["federation"]
    assert fed["rounds"] == 2 and fed["bytes_up_per_client_per_round"] > 0
    pooled = methods["proxy-centralized"]["federation"]  # one pass over the pooled data, same examples seen
    assert pooled["rounds"] == 1 and pooled["round_clients"] == [[0]]
    assert (out / "report.md").read_text().count("|") > 20 and (out / "report.png").stat().st_size > 1000
    checked = {(c["method"], c["check"]) for c in report["checks"]}  # every proxy method, every promise
    assert {m for m, _ in checked} == {"fedproxy", "naive-plugin", "proxy-centralized"} and len(checked) == 9
    assert (out / "work" / "fedproxy" / "proxy" / "proxy_map.json").is_file()
    assert (out / "work" / "fedproxy" / "proxy_tuned" / "config.json").is_file()
    assert (out / "work" / "fedproxy" / "fused_llm" / "fusion_recipe.json").is_file()


def test_compress_then_fuse_commands(capsys, tmp_path):
    out = tmp_path / "c"
    code, stdout, _ = run_cli(capsys, "compress", "--config", "tiny", "--out", str(out), "--quiet")
    assert code == 0 and "fidelity report" in stdout
    report = json.loads((out / "fidelity.json").read_text())
    assert set(report["rows"]) == {"llm", "uniform_raw", "block-influence_raw", "block-influence_distilled"}
    assert report["rows"]["block-influence_distilled"]["params"] < report["llm_params"]
    proxy = out / "proxy"
    assert (proxy / "proxy_map.json").is_file()
    # An LLM the proxy was not made from is refused by fuse with one line.
    other = tmp_path / "other"
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_llama

    tiny_llama(layers=6, vocab=AutoModelForCausalLM.from_pretrained(proxy).config.vocab_size).save_pretrained(other)
    code, _, err = run_cli(capsys, "fuse", "--llm", str(other), "--proxy", str(proxy), "--tuned", str(proxy),
                           "--out", str(tmp_path / "f"))
    assert code == 2 and "made for an LLM of 4 blocks but this LLM has 6" in error_line(err)
