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


def test_centralized_stops_after_patience_stretches_without_improvement_and_keeps_the_best(tiny_ctx, monkeypatch):
    """Validation 0.2 before training, then 0.5, 0.6, 0.6, 0.4, 0.9: with patience 2 the run stops
    after stretch 4 (two stretches without beating 0.6) and keeps stretch 2's weights."""
    import dataclasses

    from fedproxy.federated import ClientResult, trainable_names

    scores = iter([0.5, 0.6, 0.6, 0.4, 0.9])
    monkeypatch.setattr(tiny_ctx, "val_accuracy", lambda model: next(scores))
    monkeypatch.setattr(tiny_ctx, "llm_eval", lambda split: {"score": 0.2})  # the unchanged LLM, shared
    stretches = []

    def one_step(model, start, *args, **kwargs):  # every stretch adds 1 to every weight
        stretches.append(1)
        return ClientResult({n: torch.ones_like(v) for n, v in start.items()}, 1, {"tokens_per_s": 1.0,
                                                                                  "peak_rss_mb": 1.0})

    monkeypatch.setattr(pooled, "local_train", one_step)
    tiny_ctx.cfg = dataclasses.replace(tiny_ctx.cfg, fed=dataclasses.replace(tiny_ctx.cfg.fed, rounds=5, patience=2))
    names = trainable_names(tiny_ctx.llm, tiny_ctx.cfg.fed)
    start = snapshot(tiny_ctx.llm, names)
    seen = {}
    monkeypatch.setattr(pooled, "load_params", lambda model, params: seen.update(params))
    out = pooled.pooled_finetune(tiny_ctx, names)
    assert len(stretches) == 4 and [c["val_accuracy"] for c in out["val_curve"]] == [0.5, 0.6, 0.6, 0.4]
    assert all(torch.allclose(seen[n], start[n] + 2) for n in names)  # stretch 2's weights (not 3's, +3)
