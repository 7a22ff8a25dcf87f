import dataclasses
import logging

import torch

from fedproxy.compress import build_proxy
from fedproxy.federated import ClientResult, FederatedServer, run_federation, trainable_names
from fedproxy.federated.lora import lora_to_dense
from fedproxy.modeling import snapshot


def _server(tiny_ctx, **fed):
    cfg = dataclasses.replace(tiny_ctx.cfg.fed, **fed)
    params = {"a": torch.zeros(3), "b": torch.zeros(2)}
    return FederatedServer(params, cfg, seed=0, num_clients=3)


def test_bad_updates_are_dropped_and_round_completes(tiny_ctx, caplog):
    server = _server(tiny_ctx, aggregator="fedavg")
    good = ClientResult({"a": torch.ones(3), "b": torch.ones(2)}, 10, {"train_loss": 1.0, "tokens_per_s": 1.0,
                                                                       "peak_rss_mb": 1.0})
    nan = ClientResult({"a": torch.full((3,), float("nan")), "b": torch.ones(2)}, 10, good.metrics)
    shape = ClientResult({"a": torch.ones(4), "b": torch.ones(2)}, 10, good.metrics)
    logger = logging.getLogger("fedproxy.server")
    logger.addHandler(caplog.handler)  # the CLI may have stopped "fedproxy" logs propagating to root
    try:
        with caplog.at_level(logging.WARNING, logger="fedproxy.server"):
            rec = server.aggregate([(0, good), (1, nan), (2, shape)])
    finally:
        logger.removeHandler(caplog.handler)
    assert rec["clients"] == [0]
    assert [r["client"] for r in rec["rejected"]] == [1, 2]
    assert "NaN or Inf" in caplog.text and "shape" in caplog.text
    assert torch.equal(server.params["a"], torch.ones(3))


def test_sampling_respects_fraction_and_minimum(tiny_ctx):
    server = _server(tiny_ctx, fraction=0.34, min_clients=1)
    assert len(server.sample(0)) == 2
    assert server.sample(5) == server.sample(5)


def test_lora_factors_become_dense_products():
    a, b = torch.randn(2, 5), torch.randn(4, 2)
    ref = {"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 5), "model.norm.weight": torch.zeros(5)}
    dense = lora_to_dense({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": a,
                           "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight": b}, ref)
    assert torch.allclose(dense["model.layers.0.self_attn.q_proj.weight"], 2.0 * b @ a)
    assert torch.equal(dense["model.norm.weight"], torch.zeros(5))


def _federate(ctx, ckpt_dir, rounds, resume=False, **fed):
    cfg = dataclasses.replace(ctx.cfg.fed, rounds=rounds, **fed)
    proxy = build_proxy(ctx.llm, [0, 3])
    names = trainable_names(proxy, cfg)
    return run_federation(proxy, snapshot(proxy, names), ctx.bench.train, ctx.encoder, cfg, ctx.device, 0,
                          ckpt_dir=ckpt_dir, resume=resume, progress=False)


def test_resume_matches_uninterrupted_run(tiny_ctx, tmp_path):
    full = _federate(tiny_ctx, tmp_path / "a", rounds=3)
    _federate(tiny_ctx, tmp_path / "b", rounds=2)  # "killed" after round 2
    resumed = _federate(tiny_ctx, tmp_path / "b", rounds=3, resume=True)
    assert resumed.round == 3 and len(resumed.history) == 3
    for k in full.params:
        assert torch.allclose(full.params[k], resumed.params[k], atol=1e-6)


def test_training_moves_parameters_and_lowers_loss(tiny_ctx, tmp_path):
    server = _federate(tiny_ctx, None, rounds=3, local_steps=8, lr=3e-3)
    assert server.history[-1]["train_loss"] < server.history[0]["train_loss"]
    assert sum(float(v.abs().sum()) for v in server.total_delta().values()) > 0


def test_lora_clients_send_fewer_bytes(tiny_ctx):
    full = _federate(tiny_ctx, None, rounds=1)
    lora = _federate(tiny_ctx, None, rounds=1, lora_r=2)
    up = lambda s: next(iter(s.history[0]["client_metrics"].values()))["bytes_up"]  # noqa: E731
    assert up(lora) < up(full)
    assert sum(float(v.abs().sum()) for v in lora.total_delta().values()) > 0


def test_float16_wire_halves_the_bytes_and_barely_moves_the_result(tiny_ctx):
    exact = _federate(tiny_ctx, None, rounds=2, wire_dtype="float32")
    half = _federate(tiny_ctx, None, rounds=2, wire_dtype="float16")
    rec32, rec16 = exact.history[-1], half.history[-1]
    assert rec16["bytes_down_per_client"] < 0.6 * rec32["bytes_down_per_client"]
    up = lambda rec: next(iter(rec["client_metrics"].values()))["bytes_up"]  # noqa: E731
    assert up(rec16) < 0.6 * up(rec32)
    moved = sum(float(v.abs().sum()) for v in exact.total_delta().values())
    differ = sum(float((exact.params[k] - half.params[k]).abs().sum()) for k in exact.params)
    assert 0 < differ < 0.01 * moved  # a real rounding, small against what training moved


def test_dp_run_reports_epsilon(tiny_ctx):
    server = _federate(tiny_ctx, None, rounds=2, aggregator="fedavg", dp_clip=0.5, dp_noise=1.0)
    priv = server.privacy()
    assert priv["epsilon"] > 0 and priv["rounds"] == 2 and priv["accountant"] == "opacus.RDPAccountant"


def test_client_lr_follows_the_round_schedule(tiny_ctx, monkeypatch):
    import fedproxy.federated.server as server_mod

    cfg = dataclasses.replace(tiny_ctx.cfg.fed, lr=1e-3, lr_decay=0.5)
    assert [cfg.for_round(r).lr for r in range(3)] == [1e-3, 5e-4, 2.5e-4]
    assert dataclasses.replace(cfg, lr_decay=1.0).for_round(5).lr == 1e-3
    seen = []
    real = server_mod.local_train

    def spy(model, params, examples, encoder, fed_cfg, *args, **kw):
        seen.append(fed_cfg.lr)
        return real(model, params, examples, encoder, fed_cfg, *args, **kw)

    monkeypatch.setattr(server_mod, "local_train", spy)
    _federate(tiny_ctx, None, rounds=2, lr=1e-3, lr_decay=0.5, local_steps=1)
    clients = len(tiny_ctx.bench.train)
    assert seen == [1e-3] * clients + [5e-4] * clients


def test_each_client_gets_back_its_own_optimizer_state(tiny_ctx, monkeypatch):
    import fedproxy.federated.server as server_mod

    seen = []
    real = server_mod.local_train

    def spy(model, params, examples, *args, opt_state=None, **kw):
        seen.append((id(examples), id(opt_state), bool(opt_state)))
        return real(model, params, examples, *args, opt_state=opt_state, **kw)

    monkeypatch.setattr(server_mod, "local_train", spy)
    _federate(tiny_ctx, None, rounds=2, local_steps=1, keep_optimizer_state=True)
    clients = len(tiny_ctx.bench.train)
    first, second = seen[:clients], seen[clients:]
    assert len({s for _, s, _ in first}) == clients and not any(full for *_, full in first)
    assert [(e, s) for e, s, _ in second] == [(e, s) for e, s, _ in first] and all(full for *_, full in second)
    seen.clear()
    _federate(tiny_ctx, None, rounds=1, local_steps=1)
    assert all(s == id(None) for _, s, _ in seen)  # off by default: every round starts a fresh optimizer


# ---- round checks: the global proxy must not silently collapse (fed.rollback) ----------------
GOLD = [0] * 40 + [1] * 40 + [2] * 40


def _monitor(params, full=True):
    """Validation tables of a global model: healthy while a[0] < 2, one class for everything after."""
    if float(params["a"][0]) < 2:
        pred = GOLD[:100] + [0] * 20  # 100 of 120 right, every class recalled
    else:
        pred = [0] * 120
    return {"val": {"accuracy": sum(p == g for p, g in zip(pred, GOLD)) / 120, "predictions": pred, "gold": GOLD}}


def _round(server, step: float):
    res = ClientResult({"a": torch.full((3,), step), "b": torch.zeros(2)}, 10,
                       {"train_loss": 1.0, "tokens_per_s": 1.0, "peak_rss_mb": 1.0})
    return server.aggregate([(0, res)])


def _checked_server(tiny_ctx, **fed):
    cfg = dataclasses.replace(tiny_ctx.cfg.fed, aggregator="fedavg", **fed)
    return FederatedServer({"a": torch.zeros(3), "b": torch.zeros(2)}, cfg, seed=0, num_clients=1, monitor=_monitor)


def test_a_round_that_collapses_the_proxy_is_flagged(tiny_ctx):
    server = _checked_server(tiny_ctx, rollback=False)
    assert not _round(server, 1.0)["check"]["flagged"]
    rec = _round(server, 1.5)  # a = 2.5: one class for everything
    assert rec["check"]["flagged"] and not rec["check"]["rolled_back"]
    assert any("for 120 of 120" in r for r in rec["check"]["collapse"])
    assert rec["check"]["change"] < 0 and rec["check"]["drop_p"] < 0.05
    assert float(server.params["a"][0]) == 2.5  # kept: only flagged


def test_with_rollback_a_collapsing_round_is_discarded(tiny_ctx):
    server = _checked_server(tiny_ctx, rollback=True)
    _round(server, 1.0)
    rec = _round(server, 1.5)
    assert rec["check"]["flagged"] and rec["check"]["rolled_back"]
    assert float(server.params["a"][0]) == 1.0  # the next round starts from the model before it
    assert server.round == 2 and len(server.history) == 2
    assert not _round(server, 0.5)["check"]["flagged"]
    assert float(server.params["a"][0]) == 1.5


def test_patience_stops_and_keeps_the_best_round(tiny_ctx):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])

    def monitor(params, full=True):
        return {**_monitor({"a": torch.zeros(3)}), "score": next(scores)}

    cfg = dataclasses.replace(tiny_ctx.cfg.fed, aggregator="fedavg", rounds=10, patience=2)
    server = FederatedServer({"a": torch.zeros(3), "b": torch.zeros(2)}, cfg, seed=0, num_clients=1,
                             monitor=monitor)
    steps = 0
    while not server.done():
        _round(server, 1.0)
        steps += 1
    # round 0 is scored first (0.5); rounds 1-3 score 0.7, 0.6, 0.65: the best is round 1
    assert steps == 3 and server.converged()
    assert float(server.result()["a"][0]) == 1.0 and float(server.params["a"][0]) == 3.0
    assert float(server.total_delta()["a"][0]) == 1.0
