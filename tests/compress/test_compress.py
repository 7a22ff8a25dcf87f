import pytest
import torch

from fedproxy.compress import ProxyMap, build_proxy, compress, load_proxy, save_proxy
from fedproxy.compress.base import split_block_key, top_k_with_anchors
from fedproxy.compress.block_influence import block_influence
from fedproxy.compress.uniform import uniform_keep
from fedproxy.config import CompressConfig
from fedproxy.errors import ConfigError, ModelError
from tests.conftest import tiny_llama


def calib(vocab=64, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, vocab, (4, 12), generator=g), torch.ones(4, 12, dtype=torch.long)) for _ in range(n)]


def test_uniform_keep_includes_ends_and_is_even():
    assert uniform_keep(30, 15)[0] == 0 and uniform_keep(30, 15)[-1] == 29
    assert len(uniform_keep(30, 15)) == 15
    assert uniform_keep(8, 4) == [0, 2, 5, 7]


def test_top_k_keeps_anchors():
    assert top_k_with_anchors([0.0, 0.9, 0.1, 0.8, 0.0, 0.0], 4, 1, 1) == [0, 1, 3, 5]


def test_block_influence_has_one_score_per_block():
    llm = tiny_llama(layers=6)
    scores = block_influence(llm, calib(), torch.device("cpu"))
    assert len(scores) == 6 and all(0.0 <= s <= 2.0 for s in scores)


@pytest.mark.parametrize("method", ["uniform", "block-influence", "loss-drop"])
def test_proxy_map_is_consistent_with_the_llm(method):
    llm = tiny_llama(layers=6)
    res = compress(llm, calib(), CompressConfig(method=method, keep_ratio=0.5, distill_steps=0),
                   torch.device("cpu"), seed=0, progress=False)
    assert len(res.pmap.keep) == 3 == res.proxy.config.num_hidden_layers
    llm_sd, proxy_sd = llm.state_dict(), res.proxy.state_dict()
    for key, value in proxy_sd.items():
        parts = split_block_key(key)
        llm_key = key if parts is None else f"{parts[0]}{res.pmap.keep[parts[1]]}.{parts[2]}"
        assert llm_key in llm_sd, f"{key} maps to missing {llm_key}"
        assert llm_sd[llm_key].shape == value.shape
        assert torch.equal(llm_sd[llm_key], value)  # undistilled proxy = exact copies
    assert sorted(b for span in res.pmap.spans for b in span) == list(range(6))


def test_distillation_lowers_its_loss_and_keeps_embeddings():
    llm = tiny_llama(layers=6)
    res = compress(llm, calib(n=2), CompressConfig(method="uniform", keep_ratio=0.5, distill_steps=30,
                                                   distill_lr=3e-3), torch.device("cpu"), seed=0, progress=False)
    assert res.info["distill_loss_last"] < res.info["distill_loss_first"]
    assert res.pmap.distilled
    assert torch.equal(res.proxy.model.embed_tokens.weight, llm.model.embed_tokens.weight)


def test_saved_proxy_loads_with_automodel(tmp_path):
    from transformers import AutoModelForCausalLM

    llm = tiny_llama(layers=4)
    proxy = build_proxy(llm, [0, 3])
    save_proxy(proxy, ProxyMap(4, [0, 3], "llama", "uniform"), tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 64, (1, 8))
    assert torch.allclose(again(ids).logits, proxy(ids).logits, atol=1e-5)
    model, pmap = load_proxy(tmp_path)
    assert pmap.keep == [0, 3] and pmap.spans == [[0, 1, 2], [3]]


def test_reused_proxy_must_come_from_this_llm():
    pmap = ProxyMap(4, [0, 3], "llama", "uniform")
    pmap.check_llm(tiny_llama(layers=4))
    with pytest.raises(ModelError, match="of 4 blocks, but this LLM is a llama of 6 blocks"):
        pmap.check_llm(tiny_llama(layers=6))


def test_unsupported_architecture_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(ModelError, match="model type 'gpt2' is not supported"):
        compress(gpt2, calib(32), CompressConfig(), torch.device("cpu"), seed=0, progress=False)


def test_impossible_sizes_are_refused():
    llm = tiny_llama(layers=4)
    with pytest.raises(ModelError, match="exceeds the LLM's 4 blocks"):
        compress(llm, calib(), CompressConfig(num_layers=5), torch.device("cpu"), seed=0, progress=False)
    with pytest.raises(ModelError, match="strictly increasing"):
        ProxyMap(4, [2, 1], "llama", "x")


def test_gemma3_proxy_keeps_per_layer_attention_types():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2
                           + ["full_attention"], max_position_embeddings=64)
    llm = Gemma3ForCausalLM(cfg).eval()
    proxy = build_proxy(llm, [0, 2, 5])
    assert proxy.config.layer_types == ["sliding_attention", "full_attention", "full_attention"]
    assert proxy(torch.randint(0, 64, (1, 8))).logits.shape == (1, 8, 64)


def test_final_state_distillation_never_computes_the_lm_head():
    llm = tiny_llama(layers=6)
    calls = []
    llm.lm_head.register_forward_hook(lambda *a: calls.append(1))
    cfg = CompressConfig(method="uniform", keep_ratio=0.5, distill_steps=30, distill_lr=3e-3,
                         distill_target="final-hidden")
    res = compress(llm, calib(n=2), cfg, torch.device("cpu"), seed=0, progress=False)
    assert calls == [] and res.info["distill_loss_last"] < res.info["distill_loss_first"]
    # equal final states give equal logits through the shared head: the logit gap shrinks too
    ids, mask = calib(n=1)[0]
    base = build_proxy(llm, res.pmap.keep)
    with torch.no_grad():
        target = llm(input_ids=ids, attention_mask=mask).logits
        before = (base(input_ids=ids, attention_mask=mask).logits - target).pow(2).mean()
        after = (res.proxy(input_ids=ids, attention_mask=mask).logits - target).pow(2).mean()
    assert after < before


def test_sampled_position_distillation_computes_the_lm_head_only_where_sampled():
    llm = tiny_llama(layers=6)
    rows = []
    llm.lm_head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].reshape(-1, inp[0].shape[-1]).shape[0]))
    ids, mask = calib(n=1)[0]
    valid = int(mask.sum())
    cfg = CompressConfig(method="uniform", keep_ratio=0.5, distill_steps=20, distill_lr=3e-3, kl_positions=0.25)
    res = compress(llm, [(ids, mask)], cfg, torch.device("cpu"), seed=0, progress=False)
    # teacher and student heads (shared module) on a quarter of the valid positions, every step
    assert rows and set(rows) == {round(0.25 * valid)} and round(0.25 * valid) < valid
    assert res.info["distill_loss_last"] < res.info["distill_loss_first"]
    with pytest.raises(ConfigError, match="kl_positions"):
        CompressConfig(kl_positions=0.0)


def test_the_distilled_offsite_tuning_emulator_keeps_its_adapter_exact():
    from fedproxy.compress.distill import distill

    llm = tiny_llama(layers=8)
    keep = [0, 1, 3, 5, 6, 7]
    proxy = build_proxy(llm, keep)
    before = {k: v.clone() for k, v in proxy.state_dict().items()}
    distill(proxy, llm, ProxyMap(8, keep, "llama", "fixed"), calib(n=2),
            CompressConfig(distill_steps=5, distill_lr=3e-3), torch.device("cpu"), 0, progress=False,
            frozen_blocks=[0, 1, 4, 5])
    after = proxy.state_dict()
    changed = {split_block_key(k)[1] for k in after if split_block_key(k) and not torch.equal(after[k], before[k])}
    assert changed == {2, 3}  # only the emulator's middle blocks trained
    assert torch.equal(after["model.norm.weight"], before["model.norm.weight"])
