import torch

from fedproxy.compress import ProxyMap
from fedproxy.fuse import select_fusion
from fedproxy.modeling import snapshot
from tests.conftest import tiny_llama

PMAP = ProxyMap(6, [0, 2, 5], "llama", "uniform")
KEY = "model.layers.2.mlp.up_proj.weight"  # where proxy block 1's delta lands


def _setup():
    llm = tiny_llama(layers=6)
    base = snapshot(llm)
    delta = {"model.layers.1.mlp.up_proj.weight": torch.ones_like(base[KEY])}
    return llm, base, delta


def _scale_seen(llm, base) -> float:
    return float((dict(llm.named_parameters())[KEY] - base[KEY]).mean())


def test_unchanged_llm_wins_when_every_delta_scores_worse():
    llm, base, delta = _setup()
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0, 2.0],
                                   score=lambda m: -_scale_seen(m, base), keep_llm=True)
    assert recipe["scale"] == 0.0
    assert [t["scale"] for t in trials] == [0.0, 1.0, 2.0]
    assert all(torch.equal(v, base[k]) for k, v in snapshot(llm).items())  # left as it was


def test_a_delta_that_ties_with_the_unchanged_llm_is_plugged_in():
    llm, base, delta = _setup()
    recipe, _ = select_fusion(llm, delta, PMAP, ["source", "share"], [1.0, 2.0], score=lambda m: 0.5, keep_llm=True)
    assert recipe["scale"] == 1.0
    assert abs(_scale_seen(llm, base) - 1.0) < 1e-6


def test_without_keep_llm_the_best_delta_is_plugged_in_even_if_it_hurts():
    llm, base, delta = _setup()
    recipe, trials = select_fusion(llm, delta, PMAP, ["source"], [1.0, 2.0], score=lambda m: -_scale_seen(m, base))
    assert recipe["scale"] == 1.0 and len(trials) == 2
    assert abs(_scale_seen(llm, base) - 1.0) < 1e-6
