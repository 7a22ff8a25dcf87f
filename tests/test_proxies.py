"""What a run's methods share: the proxy (fedproxy.proxies.make_proxy), compressed once and reused by key,
its score before training, and the unchanged LLM's scores (RunContext.llm_eval)."""

import dataclasses

import pytest
import torch

from fedproxy.config import CompressConfig
from fedproxy.errors import ConfigError
from fedproxy.modeling import snapshot
from fedproxy.proxies import make_proxy, proxy_key, proxy_test_eval


def test_methods_that_compress_alike_share_one_proxy(tiny_ctx, tmp_path):
    comp = tiny_ctx.cfg.compress
    first, pmap, info = make_proxy(tiny_ctx, comp, tmp_path / "a")
    assert "shared_from" not in info
    again, pmap2, info2 = make_proxy(tiny_ctx, dataclasses.replace(comp), tmp_path / "b")
    assert "shared_from" in info2 and pmap2.keep == pmap.keep
    a, b = snapshot(first), snapshot(again)
    assert all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
    _, _, other = make_proxy(tiny_ctx, dataclasses.replace(comp, distill_steps=comp.distill_steps + 1), tmp_path / "c")
    assert "shared_from" not in other  # a different compression is made afresh


def test_methods_that_share_a_proxy_score_it_once(tiny_ctx, tmp_path, monkeypatch):
    comp = tiny_ctx.cfg.compress
    proxy, _, _ = make_proxy(tiny_ctx, comp, tmp_path / "a")
    calls = []
    evaluate = tiny_ctx.evaluate
    monkeypatch.setattr(tiny_ctx, "evaluate", lambda model, *a, **k: calls.append(1) or evaluate(model, *a, **k))
    first = proxy_test_eval(tiny_ctx, proxy, comp)
    again, _, _ = make_proxy(tiny_ctx, dataclasses.replace(comp), tmp_path / "b")  # a later method, same proxy
    assert proxy_test_eval(tiny_ctx, again, comp) == first and len(calls) == 1
    assert first["per_client"] and "accuracy" in first
    other = dataclasses.replace(comp, distill_steps=comp.distill_steps + 1)
    proxy_test_eval(tiny_ctx, make_proxy(tiny_ctx, other, tmp_path / "c")[0], other)
    assert len(calls) == 2  # another compression is another proxy: scored afresh


def test_a_resumed_run_reuses_the_unchanged_llms_scores_and_a_changed_one_does_not(tiny_cfg, tmp_path):
    from fedproxy.context import build_context

    first = build_context(tiny_cfg, tmp_path, progress=False, resume=True).llm_eval("val")

    def no_eval(*a, **k):
        raise AssertionError("the LLM was scored again")

    again = build_context(tiny_cfg, tmp_path, progress=False, resume=True)
    again.val_eval = no_eval
    assert again.llm_eval("val") == first
    fresh = build_context(tiny_cfg, tmp_path, progress=False)  # not resumed: scored afresh
    calls = []
    val_eval = fresh.val_eval
    fresh.val_eval = lambda model, *a, **k: calls.append(1) or val_eval(model, *a, **k)
    assert fresh.llm_eval("val") == first and calls == [1]
    other = build_context(dataclasses.replace(tiny_cfg, seed=tiny_cfg.seed + 1), tmp_path, progress=False, resume=True)
    other.val_eval = no_eval
    with pytest.raises(AssertionError, match="scored again"):
        other.llm_eval("val")  # another seed is other data: its own scores


def test_a_setting_added_later_at_its_default_keeps_the_key():
    @dataclasses.dataclass
    class Later(CompressConfig):  # what a later version's config looks like: one more setting
        new_setting: int = 0

    assert proxy_key(Later(), 0, False) == proxy_key(CompressConfig(), 0, False)
    assert proxy_key(Later(new_setting=1), 0, False) != proxy_key(CompressConfig(), 0, False)
    assert proxy_key(CompressConfig(), 1, False) != proxy_key(CompressConfig(), 0, False)


def test_patience_watches_the_fused_llm_whether_or_not_the_curve_is_recorded(tiny_ctx, tmp_path):
    """Every method stops on what it would ship: proxy-centralized (no curve) as fedproxy (curve)."""
    from fedproxy.eval import headline
    from fedproxy.fuse import fuse_into
    from fedproxy.modeling import load_params
    from fedproxy.proxies import round_monitor

    fed = tiny_ctx.cfg.fed
    proxy, pmap, _ = make_proxy(tiny_ctx, tiny_ctx.cfg.compress, tmp_path / "w")
    base = snapshot(proxy)  # the proxy as compressed: what the fused LLM's delta is measured from
    trained = {k: v + 0.05 * torch.randn_like(v) for k, v in base.items()}
    watched = round_monitor(tiny_ctx, proxy, pmap, dataclasses.replace(fed, patience=2, curve=False))(trained)
    assert set(watched) == {"val", "fused_val_score", "score"}  # no test examples scored without the curve
    fuse_into(tiny_ctx.llm, {k: trained[k] - v for k, v in base.items()}, pmap)
    assert watched["score"] == headline(tiny_ctx.val_eval(tiny_ctx.llm))
    tiny_ctx.restore_llm()
    load_params(proxy, base)  # each monitor takes the proxy it is built on as the base
    curve = round_monitor(tiny_ctx, proxy, pmap, dataclasses.replace(fed, patience=2, curve=True))(trained)
    assert curve["score"] == watched["score"] and {"proxy_test_score", "fused_test_score"} <= set(curve)
    plain = round_monitor(tiny_ctx, proxy, pmap, dataclasses.replace(fed, patience=0, curve=False))(trained)
    assert set(plain) == {"val"}  # without patience or curve only the round check's validation pass


def test_patience_can_watch_the_proxy_instead(tiny_ctx, tmp_path):
    """``fed.stop_on=proxy``: the round check leaves ``score`` out, so the server's patience watches the
    proxy's own validation score; without the curve no fused pass is made at all."""
    from fedproxy.eval import headline
    from fedproxy.proxies import round_monitor

    fed = dataclasses.replace(tiny_ctx.cfg.fed, patience=2, stop_on="proxy")
    proxy, pmap, _ = make_proxy(tiny_ctx, tiny_ctx.cfg.compress, tmp_path / "w")
    trained = {k: v + 0.05 * torch.randn_like(v) for k, v in snapshot(proxy).items()}
    bare = round_monitor(tiny_ctx, proxy, pmap, dataclasses.replace(fed, curve=False))(trained)
    assert set(bare) == {"val"}
    drawn = round_monitor(tiny_ctx, proxy, pmap, dataclasses.replace(fed, curve=True))(trained)
    assert "score" not in drawn and {"fused_val_score", "fused_test_score", "proxy_test_score"} <= set(drawn)
    assert headline(drawn["val"]) == headline(bare["val"])  # the score patience watches
    with pytest.raises(ConfigError, match="fed.stop_on must be one of"):
        dataclasses.replace(fed, stop_on="shipped")


def test_when_clients_train_the_llm_itself_the_fused_llm_is_scored_once(tiny_ctx):
    """FedAvg-LoRA's "proxy" is the LLM (identity map): its fused LLM at x1 is the proxy, so the
    round check reuses the proxy's scores; they equal fusing and scoring the LLM."""
    from fedproxy.compress import ProxyMap, build_proxy
    from fedproxy.eval import headline
    from fedproxy.fuse import fuse_into
    from fedproxy.modeling import blocks
    from fedproxy.proxies import round_monitor

    n = len(blocks(tiny_ctx.llm))
    proxy = build_proxy(tiny_ctx.llm, list(range(n)))
    pmap = ProxyMap(n, list(range(n)), tiny_ctx.llm.config.model_type, "fixed")
    base = snapshot(proxy)
    trained = {k: v + 0.05 * torch.randn_like(v) for k, v in base.items()}
    calls = []
    val_eval = tiny_ctx.val_eval
    tiny_ctx.val_eval = lambda model, loss=True: calls.append(model) or val_eval(model, loss)
    fed = dataclasses.replace(tiny_ctx.cfg.fed, patience=2, curve=True)
    once = round_monitor(tiny_ctx, proxy, pmap, fed, fused_is_proxy=True)(trained)
    assert len(calls) == 1 and once["fused_test_score"] == once["proxy_test_score"]
    fuse_into(tiny_ctx.llm, {k: trained[k] - v for k, v in base.items()}, pmap)
    assert once["score"] == once["fused_val_score"] == headline(val_eval(tiny_ctx.llm))
    tiny_ctx.restore_llm()
    calls.clear()
    round_monitor(tiny_ctx, proxy, pmap, fed)(trained)
    assert len(calls) == 2  # without the flag: the proxy and the fused LLM
