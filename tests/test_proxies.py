"""The proxy a run's methods share (fedproxy.proxies.make_proxy): compressed once, reused by key."""

import dataclasses

import torch

from fedproxy.config import CompressConfig
from fedproxy.modeling import snapshot
from fedproxy.proxies import make_proxy, proxy_key


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


def test_a_setting_added_later_at_its_default_keeps_the_key():
    @dataclasses.dataclass
    class Later(CompressConfig):  # what a later version's config looks like: one more setting
        new_setting: int = 0

    assert proxy_key(Later(), 0, False) == proxy_key(CompressConfig(), 0, False)
    assert proxy_key(Later(new_setting=1), 0, False) != proxy_key(CompressConfig(), 0, False)
    assert proxy_key(CompressConfig(), 1, False) != proxy_key(CompressConfig(), 0, False)
