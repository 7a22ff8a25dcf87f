"""qa-domains (generation) on made-up task files, and the generation encoder (no download)."""

import pytest

from fedproxy.config import DataConfig
from fedproxy.data import qa_domains
from fedproxy.errors import ConfigError


def _fake_tasks(names, n=40):
    return {name: {"examples": [{"input": f"Question: {name} number {i} ?",
                                 "target": [f"answer {i}.", f"alt {i}."] if i % 2 else f"answer {i}."}
                                for i in range(n)]} for name in names}


def test_one_client_per_source_with_every_reference(monkeypatch):
    monkeypatch.setattr(qa_domains.assets, "bigbench_tasks", lambda names, cache=None: _fake_tasks(names))
    bench = qa_domains.qa_domains(DataConfig(train_per_client=10, test_per_client=5, server_val=8, server_text=4),
                                  seed=3)
    assert bench.task == "generation" and bench.metric == "f1" and bench.labels == []
    assert bench.client_names == list(qa_domains.DOMAINS)
    assert [len(t) for t in bench.train] == [10] * 4 and [len(t) for t in bench.test] == [5] * 4
    assert len(bench.server_val) == 8
    odd = next(e for e in bench.test[0] if e.text.endswith("?") and len(e.targets) == 2)
    assert odd.targets[0].startswith("answer") and odd.targets[1].startswith("alt")  # trailing '.' removed
    seen = {e.text for part in bench.train + bench.test for e in part} | {e.text for e in bench.server_val}
    assert len(seen) == sum(map(len, bench.train + bench.test)) + len(bench.server_val)  # splits are disjoint


def test_a_domain_too_small_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(qa_domains.assets, "bigbench_tasks", lambda names, cache=None: _fake_tasks(names, n=12))
    with pytest.raises(ConfigError, match="domain 'winogrande' has 12 examples.*lower data.train_per_client"):
        qa_domains.qa_domains(DataConfig(train_per_client=10, test_per_client=5, server_val=8), seed=0)


def test_generation_encoder_trains_the_answer_then_end_of_sequence(tiny_cfg, tmp_path):
    from fedproxy.context import build_context

    ctx = build_context(tiny_cfg.with_overrides(["data.benchmark=tiny-qa", "data.max_answer=4"]), tmp_path,
                        progress=False)
    enc, ex = ctx.encoder, ctx.bench.train[0][0]
    assert enc.generative and not enc.first_token_scoring
    cont = enc.continuation(ex)
    assert cont[-1] == ctx.tokenizer.eos_token_id
    assert ctx.tokenizer.decode(cont[:-1]).strip() == ex.targets[0]
    long = " ".join(["w1"] * 100) + " q0"
    ids = enc.prompt_ids(long)
    assert len(ids) + enc.max_answer + 1 <= enc.max_length
    assert ctx.tokenizer.decode(ids[-len(enc.suffix) - 1:-len(enc.suffix)]) == "q0"  # the end of the input is kept
