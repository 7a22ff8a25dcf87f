"""MultiEmo English sentence sentiment (BIG-bench), one client per domain."""

from __future__ import annotations

import random

from .. import assets
from ..config import DataConfig
from ..errors import ConfigError
from .benchmark import BENCHMARKS, Benchmark, Example
from .partition import dirichlet_partition

DOMAINS = ("hotels", "medicine", "products", "reviews")
LABELS = ["positive", "negative", "neutral", "ambivalent"]
INSTRUCTION = "Is the sentiment of this opinion positive, negative, neutral or ambivalent?"
# Public, unlabelled passages the server uses for calibration and distillation; no client sees them.
SERVER_TEXT_TASKS = (
    "natural_instructions/subtask001_quoref_question_generation",
    "natural_instructions/subtask002_quoref_answer_generation",
)


def _examples(task: dict, domain: str, order: list[int]) -> list[Example]:
    """The task's examples at positions ``order``, labelled by their top target score."""
    out = []
    for i in order:
        ex = task["examples"][i]
        scores = ex["target_scores"]
        out.append(Example(ex["input"].strip(), LABELS.index(max(scores, key=scores.get)), domain))
    return out


def public_text(tasks: dict[str, dict], n: int, rng: random.Random) -> list[str]:
    texts = []
    for name in SERVER_TEXT_TASKS:
        for ex in tasks[name]["examples"]:
            body = ex["input"].split("Passage:")[-1].split("Question:")[0].strip()
            texts.append(" ".join(body.split()[:120]))
    rng.shuffle(texts)
    return texts[:n]


@BENCHMARKS.register("multiemo-domains")
def multiemo_domains(cfg: DataConfig, seed: int, cache=None, server_text: bool = True) -> Benchmark:
    if cfg.partition == "domain" and cfg.num_clients != len(DOMAINS):
        raise ConfigError(
            f"multiemo-domains with partition='domain' has {len(DOMAINS)} clients, got data.num_clients="
            f"{cfg.num_clients}; set num_clients=4 or partition='dirichlet'"
        )
    names = [f"multiemo/{d}_sentence_en" for d in DOMAINS]
    tasks = assets.bigbench_tasks(names + (list(SERVER_TEXT_TASKS) if server_text else []), cache)
    rng = random.Random(seed)
    per_val = max(1, cfg.server_val // len(DOMAINS))
    n_train = cfg.train_per_client * (1 if cfg.partition == "domain" else max(1, cfg.num_clients // len(DOMAINS) + 1))
    trains, tests, val = [], [], []
    for d, name in zip(DOMAINS, names):
        # Fixed-seed split: [test | server-val | train]. Shuffling positions permutes exactly as
        # shuffling the examples would, and only the ~400 used of each domain's ~14k get built
        # (building all was 0.4 s of every client message).
        order = list(range(len(tasks[name]["examples"])))
        rng.shuffle(order)
        exs = _examples(tasks[name], d, order[: cfg.test_per_client + per_val + n_train])
        tests.append(exs[: cfg.test_per_client])
        val.extend(exs[cfg.test_per_client : cfg.test_per_client + per_val])
        start = cfg.test_per_client + per_val
        trains.append(exs[start : start + n_train])
    clients = list(DOMAINS)
    if cfg.partition == "dirichlet":
        pool_train = [e for t in trains for e in t]
        pool_test = [e for t in tests for e in t]
        trains = [p[: cfg.train_per_client] for p in dirichlet_partition(pool_train, cfg.num_clients, cfg.dirichlet_alpha, seed)]
        tests = dirichlet_partition(pool_test, cfg.num_clients, cfg.dirichlet_alpha, seed)
        clients = [f"client{i}" for i in range(cfg.num_clients)]
    return Benchmark(
        name="multiemo-domains",
        labels=LABELS,
        instruction=INSTRUCTION,
        client_names=clients,
        train=trains,
        test=tests,
        server_val=val,
        server_text=public_text(tasks, cfg.server_text, rng) if server_text else [],
        meta={"source": "bigbench==1.0.0 multiemo/*_sentence_en", "partition": cfg.partition, "seed": seed},
    )
