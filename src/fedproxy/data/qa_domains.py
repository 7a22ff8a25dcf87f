"""Short-answer question answering from four BIG-bench natural-instructions sources, one client each.

A generative benchmark with natural client domains: commonsense fill-in (WinoGrande), science
facts (QASC), everyday narratives (CosmosQA) and temporal common sense (MC-TACO, its five
answer-generation subtasks pooled). Answers are generated greedily and scored by token F1 and
exact match against every reference (fedproxy.eval.generate).
"""

from __future__ import annotations

import random

from .. import assets
from ..config import DataConfig
from ..errors import ConfigError
from .benchmark import BENCHMARKS, Benchmark, Example
from .multiemo import SERVER_TEXT_TASKS, public_text

_NI = "natural_instructions/"
DOMAINS = {
    "winogrande": [_NI + "subtask033_winogrande_answer_generation"],
    "qasc": [_NI + "subtask041_qasc_answer_generation"],
    "cosmosqa": [_NI + "subtask024_cosmosqa_answer_generation"],
    "mctaco": [_NI + f"subtask{n}_mctaco_answer_generation_{kind}" for n, kind in (
        ("004", "event_duration"), ("007", "transient_stationary"), ("010", "event_ordering"),
        ("013", "absolute_timepoint"), ("016", "frequency"))],
}
INSTRUCTION = "Answer the question in a few words."


def _clean(answer: str) -> str:
    return " ".join(answer.split()).rstrip(".").strip()


def _examples(tasks: dict[str, dict], names: list[str], domain: str) -> list[Example]:
    out = []
    for name in names:
        for ex in tasks[name]["examples"]:
            targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
            targets = tuple(t for t in (_clean(x) for x in targets) if t)
            if targets:
                out.append(Example(" ".join(ex["input"].split()), -1, domain, targets))
    return out


@BENCHMARKS.register("qa-domains")
def qa_domains(cfg: DataConfig, seed: int, cache=None, server_text: bool = True) -> Benchmark:
    if cfg.partition != "domain" or cfg.num_clients != len(DOMAINS):
        raise ConfigError(f"qa-domains has one client per domain ({len(DOMAINS)}: {', '.join(DOMAINS)}); set "
                          f"data.partition='domain' and data.num_clients={len(DOMAINS)}")
    names = [n for group in DOMAINS.values() for n in group]
    tasks = assets.bigbench_tasks(names + (list(SERVER_TEXT_TASKS) if server_text else []), cache)
    rng = random.Random(seed)
    per_val = max(1, cfg.server_val // len(DOMAINS))
    trains, tests, val = [], [], []
    for domain, group in DOMAINS.items():
        exs = _examples(tasks, group, domain)
        need = cfg.test_per_client + per_val + cfg.train_per_client
        if len(exs) < need:
            raise ConfigError(f"qa-domains: domain '{domain}' has {len(exs)} examples, fewer than test_per_client + "
                              f"server_val/4 + train_per_client = {need}; lower data.train_per_client")
        rng.shuffle(exs)  # fixed-seed split: [test | server-val | train]
        tests.append(exs[: cfg.test_per_client])
        val.extend(exs[cfg.test_per_client: cfg.test_per_client + per_val])
        trains.append(exs[cfg.test_per_client + per_val: need])
    return Benchmark(
        name="qa-domains", labels=[], instruction=INSTRUCTION, client_names=list(DOMAINS), train=trains,
        test=tests, server_val=val,
        server_text=public_text(tasks, cfg.server_text, rng) if server_text else [],
        meta={"source": "bigbench==1.0.0 " + ", ".join(names), "seed": seed},
        input_tag="Input:", output_tag="Answer:", task="generation")
