"""The paper's H-TIES aggregator and PCR term against hand-computed values (fedproxy.aggregate.hties)."""

import dataclasses
import math

import pytest
import torch

from fedproxy.aggregate import AGGREGATORS, AggOptions
from fedproxy.aggregate.hties import (client_analysis, conflict_score, conflicts, elect_and_merge, h_ties_merge,
                                      keep_top, pcr_penalty)


def test_analysis_of_two_agreeing_clients_and_one_orthogonal():
    flat = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    a = client_analysis(flat)
    assert a["similarity"].tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    # h_i = 1 - sum_{j != i} max(S_ij, 0) / (K - 1): 1 - 1/2, 1 - 1/2, 1 - 0
    assert a["heterogeneity"].tolist() == [0.5, 0.5, 1.0]
    assert a["h_norm"].tolist() == [0.0, 0.0, 1.0]
    assert a["keep"].tolist() == pytest.approx([1.0, 1.0, 0.8])  # r_i = 1 - 0.2 h_norm
    e = math.e
    assert a["weights"].tolist() == pytest.approx([e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)])


def test_conflict_is_one_minus_the_sign_agreement():
    flat = torch.tensor([[1.0, 1.0, -1.0, 0.0], [1.0, -1.0, -1.0, 0.0], [1.0, 0.0, -1.0, 2.0]])
    assert conflict_score(flat).tolist() == pytest.approx([0.0, 1.0, 0.0, 2 / 3])


def test_trim_keeps_the_largest_magnitudes():
    assert keep_top(torch.tensor([0.1, -3.0, 2.0, 0.5, -1.0]), 0.4).tolist() == [0.0, -3.0, 2.0, 0.0, 0.0]
    assert keep_top(torch.tensor([1.0, 2.0]), 1.0).tolist() == [1.0, 2.0]


def test_weighted_sign_election_needs_dominance_rho():
    w = torch.tensor([0.6, 0.4])
    assert elect_and_merge(torch.tensor([[1.0], [-1.0]]), w).tolist() == [1.0]  # 0.6 / 0.4 = 1.5 >= 1.1
    assert elect_and_merge(torch.tensor([[1.0], [-1.0]]), torch.tensor([0.52, 0.48])).tolist() == [0.0]  # 1.08
    # positive mass 0.25*2 + 0.25*1 = 0.75 against 0.5: the weighted mean of the positive side, 0.75 / 0.5
    x = torch.tensor([[2.0], [1.0], [-1.0]])
    assert elect_and_merge(x, torch.tensor([0.25, 0.25, 0.5])).tolist() == [1.5]
    assert elect_and_merge(torch.tensor([[-2.0], [-4.0]]), torch.tensor([0.5, 0.5])).tolist() == [-3.0]


def test_merge_of_whole_updates_and_the_registered_aggregator():
    deltas = [{"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([[0.0]])},
              {"a": torch.tensor([2.0, 0.0]), "b": torch.tensor([[0.0]])},
              {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([[3.0]])}]
    merged, info = h_ties_merge(deltas)
    assert merged["a"].tolist() == [1.5, 0.0] and merged["b"].tolist() == [[3.0]]
    assert conflicts(deltas)["a"].tolist() == pytest.approx([1 / 3, 1.0])
    state: dict = {}
    out = AGGREGATORS.get("h-ties")(deltas, [1, 1, 1], AggOptions(), state)
    assert torch.equal(out["a"], merged["a"]) and len(state["keep_ratios"]) == 3


def test_pcr_penalty_is_the_conflict_weighted_square_distance():
    p = {"w": torch.tensor([1.0, 2.0, 3.0])}
    anchor = {"w": torch.tensor([0.0, 0.0, 1.0])}
    conflict = {"w": torch.tensor([1.0, 0.5, 0.0])}
    assert float(pcr_penalty(p, anchor, conflict)) == pytest.approx(1.0 * 1 + 0.5 * 4 + 0.0 * 4)


def test_pcr_pulls_conflicted_coordinates_towards_the_global_model(tiny_ctx):
    from fedproxy.compress import build_proxy
    from fedproxy.federated import local_train, trainable_names
    from fedproxy.modeling import snapshot

    proxy = build_proxy(tiny_ctx.llm, [0, 3])
    cfg = dataclasses.replace(tiny_ctx.cfg.fed, aggregator="h-ties", pcr_lambda=50.0, local_steps=6)
    start = snapshot(proxy, trainable_names(proxy, cfg))
    ones = {k: torch.ones_like(v) for k, v in start.items()}
    free = local_train(proxy, start, tiny_ctx.bench.train[0], tiny_ctx.encoder, dataclasses.replace(cfg, pcr_lambda=0.0),
                       tiny_ctx.device, 0).update
    held = local_train(proxy, start, tiny_ctx.bench.train[0], tiny_ctx.encoder, cfg, tiny_ctx.device, 0,
                       conflict=ones).update
    norm = lambda d: sum(float(v.pow(2).sum()) for v in d.values())  # noqa: E731
    assert norm(held) < norm(free)


def test_a_federation_with_pcr_sends_the_conflict_from_round_two(tiny_ctx):
    from fedproxy.compress import build_proxy
    from fedproxy.federated import run_federation, trainable_names
    from fedproxy.modeling import snapshot

    cfg = dataclasses.replace(tiny_ctx.cfg.fed, aggregator="h-ties", pcr_lambda=1e-5, rounds=2)
    proxy = build_proxy(tiny_ctx.llm, [0, 3])
    server = run_federation(proxy, snapshot(proxy, trainable_names(proxy, cfg)), tiny_ctx.bench.train,
                            tiny_ctx.encoder, cfg, tiny_ctx.device, 0, progress=False)
    conflict = server.conflict()
    assert conflict is not None and set(conflict) == set(server.params)
    assert all(((v >= 0) & (v <= 1)).all() for v in conflict.values())
    assert len(server.history[-1]["client_weights"]) == len(tiny_ctx.bench.train)


def test_pcr_needs_each_update_so_not_secagg():
    from fedproxy.config import FedConfig
    from fedproxy.errors import ConfigError

    with pytest.raises(ConfigError, match="SecAgg\\+ hides"):
        FedConfig(pcr_lambda=1e-5, secagg=True, aggregator="fedavg")
    assert FedConfig(pcr_lambda=1e-5, aggregator="ties").pcr_lambda == 1e-5  # any aggregator


def test_pcr_with_lora_clients_penalises_the_adapter_delta(tiny_ctx):
    from fedproxy.compress import build_proxy
    from fedproxy.federated import trainable_names
    from fedproxy.federated.client import _lora_model, _pcr_term
    from fedproxy.modeling import snapshot

    proxy = build_proxy(tiny_ctx.llm, [0, 3])
    cfg = dataclasses.replace(tiny_ctx.cfg.fed, aggregator="h-ties", pcr_lambda=1.0, lora_r=4)
    names = trainable_names(proxy, cfg)
    start = snapshot(proxy, names)
    peft_model, params = _lora_model(proxy, cfg, names)
    term = _pcr_term(peft_model, params, start, {k: torch.ones_like(v) for k, v in start.items()}, cfg)
    assert float(term()) == 0.0  # LoRA B starts at zero: no change yet
    for n, p in params.items():
        if "lora_B" in n:
            torch.nn.init.ones_(p)
    value = term()
    assert float(value) > 0 and value.requires_grad
