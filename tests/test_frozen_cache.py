import pytest
import torch

from fedproxy import frozen_cache
from fedproxy.errors import ModelError


def tensors():
    return {"model.embed_tokens.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(2)}


def test_digest_names_content_not_order():
    t = tensors()
    assert frozen_cache.digest(t) == frozen_cache.digest(dict(reversed(list(t.items()))))
    changed = {**t, "b": torch.tensor([1.0, 1.5])}
    assert frozen_cache.digest(changed) != frozen_cache.digest(t)
    renamed = {"c" if k == "b" else k: v for k, v in t.items()}
    assert frozen_cache.digest(renamed) != frozen_cache.digest(t)


def test_store_then_load_roundtrip(tmp_path):
    t = tensors()
    key = frozen_cache.digest(t)
    assert not frozen_cache.has(tmp_path, key)
    frozen_cache.store(tmp_path, key, t)
    assert frozen_cache.has(tmp_path, key)
    back = frozen_cache.load(tmp_path, key)
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) for k in t)


def test_tensors_that_do_not_match_their_digest_are_refused(tmp_path, fault_log):
    key = frozen_cache.digest(tensors())
    with pytest.raises(ModelError, match="do not match their digest"):
        frozen_cache.store(tmp_path, key, {**tensors(), "b": torch.zeros(2)})
    assert not frozen_cache.has(tmp_path, key)
    fault_log.bad_input("frozen tensors that do not match their digest")


def test_missing_cache_entry_says_the_server_resends(tmp_path):
    with pytest.raises(ModelError, match="not cached on this node.*sends them again"):
        frozen_cache.load(tmp_path, "0" * 32)
