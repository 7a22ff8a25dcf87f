"""Generation benchmarks: greedy answers scored by token F1 and exact match, plus the reference's loss."""

from __future__ import annotations

import re
import string
from collections import Counter

import torch
from torch import nn

from ..data.benchmark import Example
from ..data.encode import Encoder, batches
from ..objectives import sequence_logprob

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> list[str]:
    """SQuAD's answer normalization: lower case, no punctuation or articles, single spaces; as tokens."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after :func:`normalize` (SQuAD's F1)."""
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


@torch.no_grad()
def generate_answers(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device) -> list[str]:
    """Greedy answers, at most ``encoder.max_answer`` tokens, cut at end-of-sequence or a new line."""
    prompts = [encoder.prompt_ids(e.text) for e in examples]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                         max_new_tokens=encoder.max_answer, pad_token_id=encoder.pad_id,
                         eos_token_id=encoder.eos_id)
    answers = []
    for row in out[:, width:].tolist():
        if encoder.eos_id in row:
            row = row[: row.index(encoder.eos_id)]
        answers.append(encoder.tok.decode(row, skip_special_tokens=True).split("\n")[0].strip())
    return answers


@torch.no_grad()
def evaluate_generation(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device,
                        batch_size: int = 32) -> dict:
    """Token F1 (the ``score``) and exact match of greedy answers, best over each example's references,
    and the mean per-token loss of the first reference. ``scores`` and ``outputs`` list every example's
    F1 and answer in order, for paired comparisons and the collapse guard (:mod:`fedproxy.eval.guard`)."""
    model.eval()
    outputs, f1s, ems, nll_sum = [], [], [], 0.0
    for chunk in batches(examples, batch_size):
        gold = encoder.batch(chunk, with_label=True).to(device)
        lengths = torch.tensor([len(x) for x in gold.label_ids], device=device)
        nll_sum += float((-sequence_logprob(model, gold) / lengths).sum())
        for ex, answer in zip(chunk, generate_answers(model, encoder, chunk, device)):
            outputs.append(answer)
            f1s.append(max(token_f1(answer, t) for t in ex.targets))
            ems.append(max(exact_match(answer, t) for t in ex.targets))
    n = max(1, len(examples))
    return {"score": sum(f1s) / n, "f1": sum(f1s) / n, "exact_match": sum(ems) / n, "loss": nll_sum / n,
            "n": len(examples), "scores": f1s, "outputs": outputs}
