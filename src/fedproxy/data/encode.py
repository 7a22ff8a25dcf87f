"""Turning examples into token tensors: prompt + label continuation."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import torch

from .benchmark import Benchmark, Example


@dataclass
class Encoded:
    """Right-padded batch; ``label_pos[i]`` is where the label's first token is predicted."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    label_pos: torch.Tensor  # index of the last prompt token
    label_ids: list[list[int]]  # label continuation tokens per example
    labels: torch.Tensor  # class index per example

    def to(self, device: torch.device) -> "Encoded":
        return Encoded(self.input_ids.to(device), self.attention_mask.to(device), self.label_pos.to(device),
                       self.label_ids, self.labels.to(device))


class Encoder:
    """Encodes examples of one benchmark for one tokenizer.

    A sequence is the prompt (instruction, ``input_tag`` text, ``output_tag``) followed by the
    continuation the model learns: the label's tokens (classification) or the first reference
    answer's tokens, at most ``max_answer``, then end-of-sequence (generation).
    """

    def __init__(self, tokenizer, bench: Benchmark, max_length: int, max_answer: int = 24) -> None:
        self.tok = tokenizer
        self.max_length = max_length
        self.max_answer = max_answer
        self.generative = bench.task == "generation"
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        # Keep the BOS token exactly when the tokenizer itself would add one (Gemma does, SmolLM2 not).
        probe = tokenizer("a")["input_ids"]
        bos_id = tokenizer.bos_token_id
        bos = [bos_id] if bos_id is not None and probe and probe[0] == bos_id else []
        self.prefix = bos + enc(f"{bench.instruction}\n{bench.input_tag}")
        self.suffix = enc(f"\n{bench.output_tag}")
        self.label_tokens = [enc(" " + name) for name in bench.labels]
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        firsts = [t[0] for t in self.label_tokens]
        # One forward per example suffices when the labels differ in their first token.
        self.first_token_scoring = bool(firsts) and len(set(firsts)) == len(firsts)
        self._enc = enc

    @cached_property
    def stop_ids(self) -> list[int]:
        """Tokens that end a generated answer: end-of-sequence and every token whose text holds a new
        line (an answer is cut at its first line, so nothing after such a token is ever kept)."""
        vocab = len(self.tok)
        texts = self.tok.batch_decode([[i] for i in range(vocab)])
        newline = [i for i, t in enumerate(texts) if "\n" in t]
        return ([self.eos_id] if self.eos_id is not None else []) + newline

    def continuation(self, ex: Example, label: int | None = None) -> list[int]:
        """What follows the prompt: the label's tokens, or the reference answer's plus end-of-sequence."""
        if not self.generative:
            return self.label_tokens[ex.label if label is None else label]
        return self._enc(" " + ex.targets[0])[: self.max_answer] + ([self.eos_id] if self.eos_id is not None else [])

    def _budget(self) -> int:
        """Input tokens that fit in ``max_length`` beside the instruction, tags and longest continuation."""
        longest = self.max_answer + 1 if self.generative else max(map(len, self.label_tokens))
        return max(1, self.max_length - len(self.prefix) - len(self.suffix) - longest)

    def truncated(self, examples: list[Example]) -> int:
        """How many of ``examples`` lose input tokens to ``max_length`` (:meth:`prompt_ids` cuts them)."""
        if not examples:
            return 0
        budget = self._budget()
        lengths = self.tok([" " + e.text for e in examples], add_special_tokens=False)["input_ids"]
        return sum(len(ids) > budget for ids in lengths)

    def prompt_ids(self, text: str) -> list[int]:
        budget = self._budget()
        body = self._enc(" " + text)
        # A long input keeps its end in generation (the question comes last), its start in classification.
        body = body[-budget:] if self.generative else body[:budget]
        return self.prefix + body + self.suffix

    def batch(self, examples: list[Example], with_label: bool, label_override: list[int] | None = None) -> Encoded:
        seqs, pos, lab_ids = [], [], []
        for i, ex in enumerate(examples):
            p = self.prompt_ids(ex.text)
            lab = self.continuation(ex, label_override[i] if label_override else None)
            seqs.append(p + lab if with_label else p)
            pos.append(len(p) - 1)
            lab_ids.append(lab)
        ids, mask = self._pad(seqs)
        return Encoded(ids, mask, torch.tensor(pos), lab_ids, torch.tensor([e.label for e in examples]))

    def text_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain LM batch of server text (for calibration, distillation and perplexity)."""
        seqs = [self._enc(t)[: self.max_length] or [self.pad_id] for t in texts]
        return self._pad(seqs)

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask


def batches(items: list, size: int, rng: random.Random | None = None):
    """Yield consecutive chunks (shuffled first when ``rng`` is given)."""
    order = list(range(len(items)))
    if rng is not None:
        rng.shuffle(order)
    for i in range(0, len(order), size):
        yield [items[j] for j in order[i : i + size]]


def infinite_batches(items: list, size: int, rng: random.Random):
    """Endless shuffled epochs, for step-budgeted training."""
    while True:
        yield from batches(items, size, rng)


def balanced_batches(examples: list, size: int, rng: random.Random):
    """Endless class-balanced batches: each slot draws one of the classes present, uniformly,
    then that class's next example (its own shuffled epochs), so rare classes come as often
    as common ones."""
    by_class: dict[int, list] = {}
    for e in examples:
        by_class.setdefault(e.label, []).append(e)
    streams = {c: infinite_batches(items, 1, rng) for c, items in sorted(by_class.items())}
    classes = sorted(streams)
    while True:
        yield [next(streams[rng.choice(classes)])[0] for _ in range(size)]
