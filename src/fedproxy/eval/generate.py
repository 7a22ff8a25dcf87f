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
    """Greedy answers, at most ``encoder.max_answer`` tokens, cut at end-of-sequence or a new line.

    A row stops at its first stop token (:attr:`Encoder.stop_ids`: end-of-sequence or any token
    holding a new line), so a batch ends when every answer has ended rather than after
    ``max_answer`` tokens; the answers are the same as generating on and cutting afterwards."""
    prompts = [encoder.prompt_ids(e.text) for e in examples]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    stops = encoder.stop_ids
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                         max_new_tokens=encoder.max_answer, pad_token_id=encoder.pad_id,
                         eos_token_id=stops or None)
    stop_set = set(stops)
    answers = []
    for row in out[:, width:].tolist():
        end = next((i for i, t in enumerate(row) if t in stop_set), None)
        if end is not None:  # keep a new-line token's text before its new line; drop end-of-sequence
            row = row[: end + (row[end] != encoder.eos_id)]
        answers.append(encoder.tok.decode(row, skip_special_tokens=True).split("\n")[0].strip())
    return answers


@torch.no_grad()
def evaluate_generation(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device,
                        batch_size: int = 32, loss: bool = True) -> dict:
    """Token F1 (the ``score``) and exact match of greedy answers, best over each example's references,
    and the mean per-token loss of the first reference. ``scores`` and ``outputs`` list every example's
    F1 and answer in order, for paired comparisons and the collapse guard (:mod:`fedproxy.eval.guard`).

    ``loss=False`` skips the reference's forward pass and leaves ``loss`` out, for checks that
    read only the score (a learning curve, an early-stopping score)."""
    model.eval()
    n_ex = len(examples)
    outputs, f1s, ems, nll_sum = [""] * n_ex, [0.0] * n_ex, [0.0] * n_ex, 0.0
    # Batches of similar prompt length pad less (the QA sources' prompts range from one sentence to
    # a passage); every result goes back to its example's place.
    order = sorted(range(n_ex), key=lambda i: len(examples[i].text))
    for idx in batches(order, batch_size):
        chunk = [examples[i] for i in idx]
        if loss:
            gold = encoder.batch(chunk, with_label=True).to(device)
            lengths = torch.tensor([len(x) for x in gold.label_ids], device=device)
            nll_sum += float((-sequence_logprob(model, gold) / lengths).sum())
        for i, ex, answer in zip(idx, chunk, generate_answers(model, encoder, chunk, device)):
            outputs[i] = answer
            f1s[i] = max(token_f1(answer, t) for t in ex.targets)
            ems[i] = max(exact_match(answer, t) for t in ex.targets)
    n = max(1, len(examples))
    return {"score": sum(f1s) / n, "f1": sum(f1s) / n, "exact_match": sum(ems) / n,
            **({"loss": nll_sum / n} if loss else {}), "n": len(examples), "scores": f1s, "outputs": outputs}
