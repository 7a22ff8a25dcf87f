"""Faults a federation must survive without losing work (Simulation Engine + in-process)."""

import dataclasses
import json
import os

import pytest
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedproxy import checkpoint
from fedproxy.errors import FedProxyError
from fedproxy.federated import ClientResult, FederatedServer
from fedproxy.flower_app import client_train, make_server_app
from tests.test_flower_app import assert_same, in_process_params, small_cfg

SIM = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "include_dashboard": False}}


def simulate(cfg, out, client_app=None, resume=False):
    from flwr.simulation import run_simulation

    from fedproxy.flower_app import client_app as default_app

    run_simulation(server_app=make_server_app(cfg, out, resume=resume), client_app=client_app or default_app,
                   num_supernodes=cfg.data.num_clients, backend_config=SIM)
    return checkpoint.load(out / "flower_result.pt")


def test_server_restart_with_resume_gives_the_uninterrupted_result(tmp_path, fault_log):
    cfg2 = small_cfg(2)
    cfg1 = cfg2.with_overrides(["fed.rounds=1"])
    simulate(cfg1, tmp_path / "run")  # the server "dies" after round 1
    resumed = simulate(cfg2, tmp_path / "run", resume=True)
    assert [h["round"] for h in resumed["history"]] == [1, 2]
    assert_same(resumed["params"], in_process_params(cfg2, tmp_path))
    fault_log.record("server killed between rounds, restarted with resume",
                     rounds_lost=2 - len(resumed["history"]))


def test_client_crashing_mid_round_does_not_stop_the_round(tmp_path, fault_log):
    crashing = ClientApp()

    @crashing.train()
    def train(msg: Message, context: Context) -> Message:
        if int(context.node_config.get("partition-id", 0)) == 1:
            raise RuntimeError("client killed mid-round")
        return client_train(msg, context)

    @crashing.query()
    def query(msg: Message, context: Context) -> Message:
        from fedproxy.flower_app import client_query

        return client_query(msg, context)

    result = simulate(small_cfg(2), tmp_path / "crash", client_app=crashing)
    assert len(result["history"]) == 2
    assert all(h["clients"] == [0] for h in result["history"])
    assert any(float(v.abs().sum()) > 0 for v in result["params"].values())
    fault_log.record("client killed mid-round", rounds_lost=2 - len(result["history"]))


MALICIOUS = {
    "nan": lambda u: {k: torch.full_like(v, float("nan")) for k, v in u.items()},
    "inf": lambda u: {k: torch.full_like(v, float("inf")) for k, v in u.items()},
    "huge-norm": lambda u: {k: torch.full_like(v, 1e6) for k, v in u.items()},
    "wrong-shape": lambda u: {k: torch.zeros(3) for k in u},
    "missing-key": lambda u: dict(list(u.items())[1:]),
    "extra-key": lambda u: {**u, "model.layers.99.evil": torch.zeros(2)},
    "lora-bad-target": None,  # built below: LoRA factors aimed at a tensor that is not trainable
}


@pytest.mark.parametrize("attack", sorted(MALICIOUS))
def test_malicious_update_is_rejected_and_round_completes(tiny_cfg, attack, fault_log):
    params = {"a": torch.zeros(4), "b": torch.zeros(2, 2)}
    cfg = dataclasses.replace(tiny_cfg.fed, aggregator="agreement", max_update_norm=100.0)
    server = FederatedServer(params, cfg, seed=0, num_clients=3)
    honest = {"a": torch.ones(4), "b": torch.ones(2, 2)}
    metrics = {"train_loss": 1.0, "tokens_per_s": 1.0, "peak_rss_mb": 1.0}
    if attack == "lora-bad-target":
        bad = ClientResult({"base_model.model.x.lora_A.default.weight": torch.ones(1, 2),
                            "base_model.model.x.lora_B.default.weight": torch.ones(2, 1)}, 5, metrics, "lora")
    else:
        bad = ClientResult(MALICIOUS[attack](honest), 5, metrics)
    rec = server.aggregate([(0, ClientResult(honest, 5, metrics)), (1, ClientResult(honest, 5, metrics)), (2, bad)])
    assert rec["clients"] == [0, 1] and rec["rejected"][0]["client"] == 2 and rec["rejected"][0]["reason"]
    assert torch.equal(server.params["a"], torch.ones(4))
    fault_log.record(f"malicious update: {attack}", rounds_lost=1 - len(server.history))


def test_corrupted_checkpoint_is_reported_and_previous_kept(tmp_path, fault_log):
    path = tmp_path / "federation.pt"
    checkpoint.save({"round": 1}, path)
    checkpoint.save({"round": 2}, path)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(FedProxyError, match="is corrupt.*previous checkpoint .*federation.pt.prev is intact"):
        checkpoint.load(path)
    assert checkpoint.load(path.with_name("federation.pt.prev")) == {"round": 1}
    fault_log.record("corrupted checkpoint (previous one kept)")


def test_corrupted_run_checkpoint_gives_one_line_cli_error(capsys, tmp_path, fault_log):
    from tests.test_cli import error_line, run_cli

    out = tmp_path / "run"
    assert run_cli(capsys, "run", "--config", "tiny", "--out", str(out), "--quiet",
                   "--set", 'methods=["fedproxy"]')[0] == 0
    (out / "results" / "fedproxy.json").unlink()  # as if killed before the method finished
    (out / "work" / "fedproxy" / "federation.pt").write_bytes(b"broken")
    code, _, err = run_cli(capsys, "run", "--config", "tiny", "--out", str(out), "--quiet", "--resume",
                           "--set", 'methods=["fedproxy"]')
    assert code == 2 and "is corrupt" in error_line(err)
    fault_log.bad_input("corrupted checkpoint given to `fedproxy run --resume`")


def test_finished_method_leaves_no_resume_checkpoints(capsys, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    assert run_cli(capsys, "run", "--config", "tiny", "--out", str(out), "--quiet",
                   "--set", 'methods=["fedproxy"]')[0] == 0
    work = out / "work" / "fedproxy"
    assert not list(work.rglob("*.pt*"))  # distillation and federation checkpoints are gone
    assert (work / "proxy_tuned" / "config.json").is_file() and (work / "fused_llm" / "config.json").is_file()


def test_resume_with_a_different_config_is_refused(capsys, tmp_path, fault_log):
    from tests.test_cli import error_line, run_cli

    out = tmp_path / "run"
    base = ["run", "--config", "tiny", "--out", str(out), "--quiet", "--set", 'methods=["zero-shot"]']
    assert run_cli(capsys, *base)[0] == 0
    code, _, err = run_cli(capsys, *base, "--resume", "--set", "fed.rounds=5")
    assert code == 2 and "fed.rounds: 2 -> 5" in error_line(err) and "new --out" in error_line(err)
    fault_log.bad_input("`fedproxy run --resume` with a changed config")
    # adding a method is what --resume is for: allowed, and the finished one is reused
    code, _, _ = run_cli(capsys, *base[:-1], 'methods=["zero-shot","fedproxy"]', "--resume")
    assert code == 0 and (out / "results" / "fedproxy.json").is_file()


def test_resume_accepts_a_key_a_newer_version_added_at_its_default(capsys, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    base = ["run", "--config", "tiny", "--out", str(out), "--quiet", "--set", 'methods=["zero-shot"]']
    assert run_cli(capsys, *base)[0] == 0
    recorded = json.loads((out / "run_config.json").read_text())
    del recorded["fed.curve_test"]  # as written by a version without that key
    (out / "run_config.json").write_text(json.dumps(recorded))
    assert run_cli(capsys, *base, "--resume")[0] == 0
    (out / "run_config.json").write_text(json.dumps(recorded))
    code, _, err = run_cli(capsys, *base, "--resume", "--set", "fed.curve_test=7")  # not the default: refused
    assert code == 2 and "fed.curve_test: None -> 7" in err


def test_a_resumed_method_counts_its_earlier_invocations_up_to_their_last_checkpoint(tmp_path):
    from fedproxy.checkpoint import earlier_seconds

    work, clock = tmp_path / "work" / "fedproxy", tmp_path / "work" / "fedproxy.clock.json"
    assert earlier_seconds(work, clock, resume=True) == 0.0  # first invocation
    started = json.loads(clock.read_text())["started"]
    work.mkdir(parents=True)
    (work / "federation.pt").write_bytes(b"x")
    os.utime(work / "federation.pt", (started + 100, started + 100))  # its last checkpoint, 100 s in
    assert earlier_seconds(work, clock, resume=True) == pytest.approx(100.0)  # killed, resumed
    second = json.loads(clock.read_text())["started"]
    os.utime(work / "federation.pt", (second - 5, second - 5))  # the second wrote nothing before dying
    assert earlier_seconds(work, clock, resume=True) == pytest.approx(100.0)
    assert earlier_seconds(work, clock, resume=False) == 0.0  # a fresh run starts the count again


def test_centralized_killed_between_stretches_resumes_to_the_uninterrupted_result(tiny_cfg, tmp_path, monkeypatch,
                                                                                 fault_log):
    """Early-stopped pooled fine-tuning checkpoints every stretch; killed in one, it resumes after the last."""
    from fedproxy import pooled
    from fedproxy.context import build_context
    from fedproxy.federated import trainable_names

    cfg = tiny_cfg.with_overrides(["fed.rounds=3", "fed.patience=3"])
    ctx = build_context(cfg, tmp_path / "a", progress=False)
    names = trainable_names(ctx.llm, cfg.fed)
    whole = pooled.pooled_finetune(ctx, names, ctx.method_dir("centralized"))

    real, calls = pooled.local_train, []

    def killed_in_stretch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pooled, "local_train", killed_in_stretch_2)
    ctx = build_context(cfg, tmp_path / "b", progress=False)
    with pytest.raises(KeyboardInterrupt):
        pooled.pooled_finetune(ctx, names, ctx.method_dir("centralized"))
    assert checkpoint.load(tmp_path / "b" / "work" / "centralized" / "stretches.pt")["next"] == 1

    calls.clear()
    monkeypatch.setattr(pooled, "local_train", lambda *a, **k: calls.append(1) or real(*a, **k))
    ctx = build_context(cfg, tmp_path / "b", resume=True, progress=False)
    resumed = pooled.pooled_finetune(ctx, names, ctx.method_dir("centralized"))
    assert len(calls) == 2  # stretches 2 and 3 only
    assert resumed["val_curve"] == whole["val_curve"] and resumed["steps"] == whole["steps"]
    assert ([c["predictions"] for c in resumed["per_client"].values()]
            == [c["predictions"] for c in whole["per_client"].values()])
    assert resumed["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    fault_log.record("centralized killed between early-stopping stretches, resumed",
                     rounds_lost=len(whole["val_curve"]) - len(resumed["val_curve"]))
