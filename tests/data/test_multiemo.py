"""multiemo-domains splits, on made-up task files (no download)."""

import random

import pytest

from fedproxy.config import DataConfig
from fedproxy.data import multiemo


def _fake_tasks(names):
    rng = random.Random(5)
    tasks = {}
    for name in names:
        examples = []
        for i in range(60):
            scores = {label: rng.random() for label in multiemo.LABELS}
            examples.append({"input": f" {name} sentence {i} ", "target_scores": scores})
        tasks[name] = {"examples": examples}
    return tasks


@pytest.mark.parametrize("server_text", [True, False])
def test_split_is_the_seeded_shuffle_of_all_examples(monkeypatch, server_text):
    monkeypatch.setattr(multiemo.assets, "bigbench_tasks", lambda names, cache=None: _fake_tasks(names))
    cfg = DataConfig(train_per_client=10, test_per_client=5, server_val=8, server_text=4)
    bench = multiemo.multiemo_domains(cfg, seed=7, server_text=server_text)
    # the reference: label every example, shuffle them all with the seed, cut [test | val | train]
    tasks, rng = _fake_tasks([f"multiemo/{d}_sentence_en" for d in multiemo.DOMAINS]), random.Random(7)
    for k, d in enumerate(multiemo.DOMAINS):
        exs = multiemo._examples(tasks[f"multiemo/{d}_sentence_en"], d, range(60))
        rng.shuffle(exs)
        assert bench.test[k] == exs[:5]
        assert bench.server_val[2 * k: 2 * k + 2] == exs[5:7]
        assert bench.train[k] == exs[7:17]
    assert len(bench.server_text) == (4 if server_text else 0)
