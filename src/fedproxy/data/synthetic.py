"""Generated sentiment-like data for the tiny pipeline and tests (no downloads)."""

from __future__ import annotations

import random

from ..config import DataConfig
from .benchmark import BENCHMARKS, Benchmark, Example

LABELS = ["positive", "negative", "neutral", "ambivalent"]
KEYWORDS = {0: ["great", "lovely", "superb"], 1: ["awful", "broken", "rude"], 2: ["located", "listed", "dated"],
            3: ["mixed", "uneven", "halfway"]}
FILLER = [f"w{i}" for i in range(40)]
INSTRUCTION = "classify :"


def vocabulary() -> list[str]:
    words = set(FILLER) | set(LABELS) | set(INSTRUCTION.split()) | {"text", "sentiment", ":", "domain"}
    for kws in KEYWORDS.values():
        words |= set(kws)
    return sorted(words) + [f"d{i}" for i in range(8)]


def _sentence(label: int, domain: int, rng: random.Random) -> str:
    words = rng.choices(FILLER, k=rng.randint(4, 9))
    words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
    return " ".join([f"d{domain}"] + words)


@BENCHMARKS.register("tiny-synthetic")
def tiny_synthetic(cfg: DataConfig, seed: int, cache=None, server_text: bool = True) -> Benchmark:
    rng = random.Random(seed)
    n = cfg.num_clients

    def draw(client: int, k: int) -> list[Example]:
        # Label skew: each client mostly sees two of the four labels.
        out = []
        for _ in range(k):
            label = (client + rng.choice([0, 0, 0, 1, 1, 2, 3])) % 4
            out.append(Example(_sentence(label, client, rng), label, f"d{client}"))
        return out

    return Benchmark(
        name="tiny-synthetic",
        labels=LABELS,
        instruction=INSTRUCTION,
        client_names=[f"d{c}" for c in range(n)],
        train=[draw(c, cfg.train_per_client) for c in range(n)],
        test=[draw(c, cfg.test_per_client) for c in range(n)],
        server_val=[e for c in range(n) for e in draw(c, max(1, cfg.server_val // n))],
        server_text=[" ".join(rng.choices(FILLER, k=12)) for _ in range(cfg.server_text if server_text else 0)],
        meta={"source": "generated", "seed": seed},
    )


# ---- generation: tiny-qa -------------------------------------------------------------------
# Each client answers one kind of question about a generated sentence (its "domain"): which
# keyword it holds, which domain tag it starts with, or its first filler word.
QA_KINDS = ("keyword", "tag", "first")


def _qa(kind: int, domain: int, rng: random.Random) -> Example:
    label = rng.randrange(4)
    words = rng.choices(FILLER, k=rng.randint(3, 6))
    key = rng.choice(KEYWORDS[label])
    words.insert(rng.randrange(len(words) + 1), key)
    sentence = " ".join([f"d{domain}"] + words)
    answer = {"keyword": key, "tag": f"d{domain}", "first": next(w for w in words if w in FILLER)}[QA_KINDS[kind]]
    return Example(f"{sentence} q{kind}", -1, f"d{domain}", (answer,))


@BENCHMARKS.register("tiny-qa")
def tiny_qa(cfg: DataConfig, seed: int, cache=None, server_text: bool = True) -> Benchmark:
    rng = random.Random(seed)
    n = cfg.num_clients

    def draw(client: int, k: int) -> list[Example]:
        # Task skew: each client mostly asks its own kind of question.
        return [_qa((client + rng.choice([0, 0, 0, 1, 2])) % len(QA_KINDS), client, rng) for _ in range(k)]

    return Benchmark(
        name="tiny-qa", labels=[], instruction="answer :", client_names=[f"d{c}" for c in range(n)],
        train=[draw(c, cfg.train_per_client) for c in range(n)], test=[draw(c, cfg.test_per_client) for c in range(n)],
        server_val=[e for c in range(n) for e in draw(c, max(1, cfg.server_val // n))],
        server_text=[" ".join(rng.choices(FILLER, k=12)) for _ in range(cfg.server_text if server_text else 0)],
        meta={"source": "generated", "seed": seed}, input_tag="text", output_tag="answer", task="generation")
