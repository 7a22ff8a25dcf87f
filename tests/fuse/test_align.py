import pytest
import torch

from fedproxy.compress import ProxyMap, build_proxy
from fedproxy.fuse.align import align_delta, input_grams
from tests.conftest import tiny_llama


def test_aligned_delta_reproduces_the_proxy_output_change_on_the_llm_inputs():
    torch.manual_seed(0)
    xp = torch.randn(500, 6, dtype=torch.float64)
    mix = torch.randn(6, 6, dtype=torch.float64)
    xl = xp @ mix.T  # the LLM sees a linear transform of what the proxy saw
    dw = torch.randn(4, 6, dtype=torch.float64)
    a = align_delta({"w": dw, "norm": torch.ones(6)}, {"w": (xp.T @ xl, xl.T @ xl)}, ridge=1e-9)
    assert torch.allclose(xl @ a["w"].T, xp @ dw.T, atol=1e-5)  # same output change on the LLM's inputs
    assert not torch.allclose(a["w"], dw)
    assert torch.equal(a["norm"], torch.ones(6))  # no statistics: passed through


def test_identical_inputs_leave_the_delta_unchanged_and_grams_come_from_matching_layers():
    llm = tiny_llama(layers=4)
    proxy = build_proxy(llm, [0, 2])
    pmap = ProxyMap(4, [0, 2], "llama", "fixed")
    ids = torch.randint(0, 64, (16, 32))  # enough tokens for full-rank input statistics
    grams = input_grams(proxy, llm, pmap, [(ids, torch.ones_like(ids))])
    assert {k.split(".")[2] for k in grams} == {"0", "1"} and len(grams) == 2 * 7  # 7 linears per block
    q, k = grams["model.layers.0.self_attn.q_proj.weight"], grams["model.layers.0.self_attn.k_proj.weight"]
    assert q[0] is k[0]  # layers reading the same input share one pair
    # Block 0 is the first block of both models: same inputs, so the aligned delta is the delta.
    key = "model.layers.0.mlp.down_proj.weight"
    d = {key: torch.randn(32, 64)}
    assert torch.allclose(align_delta(d, grams, 1e-6)[key], d[key], rtol=1e-3, atol=1e-3)
    # Proxy block 1 sits on LLM block 2, after a block the proxy dropped: different inputs.
    key = "model.layers.1.mlp.down_proj.weight"
    d = {key: torch.randn(32, 64)}
    assert not torch.allclose(align_delta(d, grams, 1e-6)[key], d[key], rtol=1e-2, atol=1e-2)


def test_statistics_of_another_proxy_are_refused():
    grams = {"w": (torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))}
    with pytest.raises(ValueError, match="must come from the same proxy"):
        align_delta({"w": torch.ones(2, 5)}, grams, 0.01)


def test_run_with_fuse_align_tries_both_deltas_on_validation(tiny_cfg, tmp_path):
    import json

    from fedproxy.pipeline import run

    cfg = tiny_cfg.with_overrides(['methods=["fedproxy"]', "fuse.align=true", "fuse.scales=[1.0, 2.0]"])
    run(cfg, tmp_path, progress=False)
    fusion = json.loads((tmp_path / "results" / "fedproxy.json").read_text())["fusion"]
    # and the unchanged LLM once (fuse.keep_llm): scale 0 is the same model aligned or not
    assert sorted((t["aligned"], t["scale"]) for t in fusion["trials"]) == [(False, 0.0), (False, 1.0), (False, 2.0),
                                                                            (True, 1.0), (True, 2.0)]
    # the best validation score among the candidates the do-no-harm rule accepted, else the LLM as it is
    accepted = [t for t in fusion["trials"] if t.get("verdict") == "accepted"]
    chosen = next(t for t in fusion["trials"] if (t["aligned"], t["scale"]) == (fusion["aligned"], fusion["scale"]))
    assert chosen["val_accuracy"] == max(t["val_accuracy"] for t in accepted) if accepted else chosen["scale"] == 0
    recipe = json.loads((tmp_path / "work" / "fedproxy" / "fused_llm" / "fusion_recipe.json").read_text())
    assert recipe["aligned"] == fusion["aligned"]
