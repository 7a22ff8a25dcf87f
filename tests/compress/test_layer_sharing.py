"""Layer sharing (compress.share_layers): the proxy's blocks run at the LLM's depth, weights shared."""

import copy
import json

import torch

from fedproxy.compress import ProxyMap, build_proxy, compress, load_proxy, save_proxy
from fedproxy.config import CompressConfig
from fedproxy.modeling import LAYER_SCHEDULE, apply_layer_schedule, blocks, snapshot
from tests.compress.test_compress import calib
from tests.conftest import tiny_llama


def test_a_scheduled_proxy_computes_what_a_full_depth_model_with_each_block_copied_into_place_computes():
    llm = tiny_llama(layers=6)
    pmap = ProxyMap(6, [0, 2, 5], "llama", "fixed")
    assert pmap.schedule == [0, 0, 1, 1, 1, 2]  # a kept block stands for the dropped ones after it
    proxy = apply_layer_schedule(build_proxy(llm, pmap.keep), pmap.schedule)
    unrolled = copy.deepcopy(llm)  # six independent blocks, each a copy of the proxy block at its depth
    for depth, j in enumerate(pmap.schedule):
        blocks(unrolled)[depth].load_state_dict(blocks(proxy)[j].state_dict())
    ids = torch.randint(0, 64, (2, 9))
    out = proxy(input_ids=ids, output_hidden_states=True)
    assert torch.allclose(out.logits, unrolled(input_ids=ids).logits, atol=1e-6)
    assert len(out.hidden_states) == 7  # the embeddings and one state per depth, as the LLM's
    # Tensors are the three blocks' own: what clients receive, aggregate and the plug-in maps is unchanged.
    assert set(snapshot(proxy)) == set(snapshot(build_proxy(llm, pmap.keep)))
    out.logits.sum().backward()
    unrolled(input_ids=ids).logits.sum().backward()
    shared = blocks(proxy)[1].mlp.up_proj.weight.grad
    copies = sum(blocks(unrolled)[d].mlp.up_proj.weight.grad for d in (2, 3, 4))
    assert torch.allclose(shared, copies, atol=1e-5)  # a shared block learns from every depth it runs at


def test_a_scheduled_proxy_survives_a_checkpoint_and_a_rebuild_from_its_config(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    llm = tiny_llama(layers=6)
    res = compress(llm, calib(), CompressConfig(keep_ratio=0.5, distill_steps=2, share_layers=True),
                   torch.device("cpu"), seed=0, progress=False)
    assert getattr(res.proxy.config, LAYER_SCHEDULE) == res.pmap.schedule and res.proxy.config.num_hidden_layers == 3
    save_proxy(res.proxy, res.pmap, tmp_path / "proxy")
    loaded, _ = load_proxy(tmp_path / "proxy")
    ids = torch.randint(0, 64, (2, 9))
    assert torch.allclose(loaded(input_ids=ids).logits, res.proxy(input_ids=ids).logits, atol=1e-6)
    # A Flower client rebuilds the proxy from its config alone, then loads the tensors it was sent.
    rebuilt = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.loads(json.dumps(
        res.proxy.config.to_dict()))))
    rebuilt.load_state_dict(res.proxy.state_dict())
    apply_layer_schedule(rebuilt)
    assert torch.allclose(rebuilt(input_ids=ids).logits, res.proxy(input_ids=ids).logits, atol=1e-6)
    # Generation runs without a KV cache (a shared block would fill one slot twice) and matches
    # greedy decoding by full forwards.
    gen = loaded.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                          pad_token_id=0)
    seq = ids
    for _ in range(3):
        seq = torch.cat([seq, loaded(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(gen, seq)


def test_an_unscheduled_proxy_is_left_as_it_is():
    llm = tiny_llama(layers=6)
    proxy = build_proxy(llm, [0, 3, 5])
    assert apply_layer_schedule(proxy) is proxy and type(blocks(proxy)) is torch.nn.ModuleList
    assert getattr(proxy.config, LAYER_SCHEDULE, None) is None


def test_a_flower_client_trains_a_scheduled_proxy_as_the_in_process_path_does(tiny_ctx):
    from fedproxy.federated import local_train, trainable_names
    from fedproxy.federated.server import client_seed
    from fedproxy.flower_app import local_update, tokenizer_payload
    from tests.test_flower_app import node_context

    cfg = tiny_ctx.cfg.with_overrides(["fed.local_steps=2"])
    pmap = ProxyMap(len(blocks(tiny_ctx.llm)), [0, 2], tiny_ctx.llm.config.model_type, "fixed")
    proxy = apply_layer_schedule(build_proxy(tiny_ctx.llm, pmap.keep), pmap.schedule)
    names = trainable_names(proxy, cfg.fed)
    params = snapshot(proxy)
    frozen = {k: v for k, v in params.items() if k not in names}
    conf = {"run-config": json.dumps(cfg.to_flat()), "round": 1, "tokenizer": tokenizer_payload(tiny_ctx.tokenizer),
            "proxy-config": json.dumps(proxy.config.to_dict())}
    _, remote, pid = local_update(conf, {n: params[n] for n in names}, frozen, node_context())
    local = local_train(copy.deepcopy(proxy), {n: params[n] for n in names}, tiny_ctx.bench.train[pid],
                        tiny_ctx.encoder, cfg.fed.for_round(1), tiny_ctx.device, client_seed(cfg.seed, 1, pid))
    for n in names:
        assert torch.allclose(remote.update[n], local.update[n], atol=1e-5), n
    unscheduled = local_train(build_proxy(tiny_ctx.llm, pmap.keep), {n: params[n] for n in names},
                              tiny_ctx.bench.train[pid], tiny_ctx.encoder, cfg.fed.for_round(1), tiny_ctx.device,
                              client_seed(cfg.seed, 1, pid))
    assert any(not torch.allclose(remote.update[n], unscheduled.update[n], atol=1e-5) for n in names)


def test_layer_sharing_refuses_a_decoder_with_per_layer_attention_types_clearly(fault_log):
    import pytest
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from fedproxy.errors import ModelError

    fault_log.bad_input("compress.share_layers on a decoder whose forward reads per-layer attention types")
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ModelError, match="per-layer attention types.*share_layers=false"):
        apply_layer_schedule(build_proxy(qwen, [0, 2]), [0, 0, 1, 1])
