import torch

from fedproxy import baselines, pooled  # noqa: F401  (baselines register their recipes)
from fedproxy.compress import select_blocks, split_block_key
from fedproxy.methods import METHODS, run_recipe
from fedproxy.modeling import snapshot


def test_centralized_kept_trains_exactly_the_kept_blocks(tiny_ctx, monkeypatch):
    trained = {}
    real = pooled.local_train

    def spy(model, global_params, *args, **kwargs):
        trained.update(global_params)
        return real(model, global_params, *args, **kwargs)

    monkeypatch.setattr(pooled, "local_train", spy)
    cfg = tiny_ctx.cfg
    keep = select_blocks(tiny_ctx.llm, tiny_ctx.server_text_batches(cfg.compress.distill_batch), cfg.compress,
                         tiny_ctx.device).keep
    before = snapshot(tiny_ctx.llm)
    out = run_recipe(tiny_ctx, METHODS.get("centralized-kept"))
    assert out["kept_blocks"] == keep and len(keep) < len(tiny_ctx.llm.model.layers)
    trained_blocks = {p[1] for n in trained if (p := split_block_key(n))}
    assert trained_blocks == set(keep)
    assert "model.norm.weight" in trained and not any("embed_tokens" in n for n in trained)
    assert out["trainable_params"] == sum(v.numel() for v in trained.values())
    after = snapshot(tiny_ctx.llm)  # the shared LLM is restored for the next method
    assert all(torch.equal(before[n], after[n]) for n in before)
