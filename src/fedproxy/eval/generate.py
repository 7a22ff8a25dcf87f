"""Generation benchmarks: greedy answers scored by token F1 and exact match, plus the reference's loss."""

from __future__ import annotations

import inspect
import re
import string
from collections import Counter
from collections.abc import Callable

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


def _cache_kwarg(model: nn.Module) -> str:
    """The name under which this transformers version's forward takes the KV cache (``cache`` from 5.x,
    ``past_key_values`` before)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def greedy_tokens(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, max_new: int,
                  stop_ids: list[int]) -> list[list[int]]:
    """Greedy continuations of the left-padded prompts ``ids`` (``mask``: 1 on prompt tokens), each
    up to and including its first token in ``stop_ids``, at most ``max_new`` tokens.

    ``model.generate`` would give the same tokens, but it keeps every row of a batch in the forward
    pass until the last row has stopped; short-answer QA has most answers end in 2-8 tokens and a few
    run to ``max_new``, so most decode work went to rows already done. Here a row that stops leaves
    the batch and the KV cache (``Cache.batch_select_indices``). Positions follow the attention mask
    as in ``generate`` (``_prepare_position_ids_for_generation``). A forward pass over fewer rows can
    round differently, so a near tie may rarely resolve otherwise than in the full batch, exactly as
    it may between two batchings of ``generate``."""
    n = ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max_new <= 0:
        return out
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=ids.device)
    rows = torch.arange(n, device=ids.device)  # which input row each batch row is
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    kw = {"use_cache": True, "logits_to_keep": 1}
    cache_key, cache = _cache_kwarg(model), None
    step_ids, step_pos = ids, pos
    for _ in range(max_new):
        res = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, **{cache_key: cache}, **kw)
        cache = getattr(res, "cache", None) or res.past_key_values
        nxt = res.logits[:, -1].argmax(-1)
        for r, t in zip(rows.tolist(), nxt.tolist()):
            out[r].append(t)
        going = ~torch.isin(nxt, stops) if len(stops) else torch.ones_like(nxt, dtype=torch.bool)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, nxt, mask, pos = rows[keep], nxt[keep], mask[keep], pos[keep]
        step_ids, step_pos = nxt[:, None], pos[:, -1:] + 1
        pos = torch.cat([pos, step_pos], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return out


def generate_answers(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device,
                     decode: Callable | None = None) -> list[str]:
    """Greedy answers, at most ``encoder.max_answer`` tokens, cut at end-of-sequence or a new line.

    A row stops at its first stop token (:attr:`Encoder.stop_ids`: end-of-sequence or any token
    holding a new line) and leaves the batch (:func:`greedy_tokens`); the answers are the same as
    generating on and cutting afterwards. ``decode`` replaces :func:`greedy_tokens` (same arguments
    and result), e.g. to compare it with ``model.generate`` (benchmarks/diagnostics/decode_speed.py)."""
    prompts = [encoder.prompt_ids(e.text) for e in examples]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    stops = encoder.stop_ids
    answers = []
    for row in (decode or greedy_tokens)(model, ids.to(device), mask.to(device), encoder.max_answer, stops):
        if row and row[-1] in stops:  # keep a new-line token's text before its new line; drop end-of-sequence
            row = row[:-1] if row[-1] == encoder.eos_id else row
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
