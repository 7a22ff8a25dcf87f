import pytest
import torch

from fedproxy.compress import ProxyMap, build_proxy
from fedproxy.errors import ModelError
from fedproxy.fuse import fuse_into, fuse_state, map_delta
from fedproxy.modeling import snapshot
from tests.conftest import tiny_llama

PMAP = ProxyMap(6, [0, 2, 5], "llama", "uniform")


def test_zero_delta_leaves_logits_unchanged():
    llm = tiny_llama(layers=6)
    ids = torch.randint(0, 64, (2, 10))
    before = llm(ids).logits
    proxy = build_proxy(llm, PMAP.keep)
    zero = {k: torch.zeros_like(v) for k, v in snapshot(proxy).items()}
    fuse_into(llm, zero, PMAP, "interpolate", 1.7)
    assert torch.equal(llm(ids).logits, before)


def test_known_delta_changes_exactly_the_mapped_tensors():
    llm = tiny_llama(layers=6)
    before = snapshot(llm)
    d_block = torch.randn_like(before["model.layers.2.mlp.up_proj.weight"])
    d_norm = torch.randn_like(before["model.norm.weight"])
    # proxy block 1 stands for LLM block 2
    delta = {"model.layers.1.mlp.up_proj.weight": d_block, "model.norm.weight": d_norm}
    fuse_into(llm, delta, PMAP, "source", 1.0)
    after = snapshot(llm)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.2.mlp.up_proj.weight", "model.norm.weight"}
    assert torch.allclose(after["model.layers.2.mlp.up_proj.weight"] - before["model.layers.2.mlp.up_proj.weight"],
                          d_block, atol=1e-6)
    assert torch.allclose(after["model.norm.weight"] - before["model.norm.weight"], d_norm, atol=1e-6)


def test_share_and_interpolate_cover_dropped_blocks():
    delta = {"model.layers.0.w": torch.tensor(1.0), "model.layers.1.w": torch.tensor(3.0),
             "model.layers.2.w": torch.tensor(5.0)}
    share = map_delta(delta, PMAP, "share")
    assert {k: v.item() for k, v in share.items()} == {
        "model.layers.0.w": 1.0, "model.layers.1.w": 1.0, "model.layers.2.w": 3.0, "model.layers.3.w": 3.0,
        "model.layers.4.w": 3.0, "model.layers.5.w": 5.0}
    inter = map_delta(delta, PMAP, "interpolate", scale=2.0)
    assert inter["model.layers.1.w"].item() == pytest.approx(2.0 * 2.0)  # halfway between 1 and 3
    assert inter["model.layers.3.w"].item() == pytest.approx(2.0 * (3.0 + (5.0 - 3.0) / 3))
    assert inter["model.layers.5.w"].item() == pytest.approx(10.0)


def test_map_for_another_llm_is_refused():
    llm = tiny_llama(layers=4)
    with pytest.raises(ModelError, match="made for an LLM of 6 blocks but this LLM has 4"):
        fuse_state(snapshot(llm), {"model.norm.weight": torch.zeros(32)}, PMAP)


def test_shape_mismatch_is_refused():
    llm = tiny_llama(layers=6)
    with pytest.raises(ModelError, match="has shape"):
        fuse_state(snapshot(llm), {"model.layers.0.mlp.up_proj.weight": torch.zeros(3, 3)}, PMAP)


def test_proxy_block_outside_map_is_refused():
    llm = tiny_llama(layers=6)
    with pytest.raises(ModelError, match="lists only 3 blocks"):
        fuse_state(snapshot(llm), {"model.layers.7.mlp.up_proj.weight": torch.zeros(64, 32)}, PMAP)
