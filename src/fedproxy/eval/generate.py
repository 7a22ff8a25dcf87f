"""Generation benchmarks: greedy answers scored by token F1 and exact match, plus the reference's loss."""

from __future__ import annotations

import inspect
import re
import string
from collections import Counter

import torch
from torch import nn

from ..data.benchmark import Example
from ..data.encode import Encoded, Encoder, batches
from ..modeling import backbone, unwrapped
from ..objectives import _label_index, head_logits

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


def _cache_kwarg(module: nn.Module) -> str:
    """The name under which this transformers version's forward takes the KV cache (``cache`` from 5.x,
    ``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(unwrapped(module).forward).parameters else "past_key_values"


def _cache_of(res):
    cache = getattr(res, "cache", None)
    return cache if cache is not None else res.past_key_values


def _sliding_window(model: nn.Module) -> int | None:
    """The attention window of a model whose layers (some or all) attend to the last tokens only."""
    window = getattr(unwrapped(model).config.get_text_config(), "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions from the attention mask, as ``generate`` makes them (``_prepare_position_ids_for_generation``)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _greedy_from(model: nn.Module, cache, first: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor,
                 max_new: int, stop_ids: list[int]) -> list[list[int]]:
    """Greedy decoding on from a filled KV ``cache``: ``first`` [B] is each row's first new token, ``mask``
    [B, T] the attention mask over the cache, ``next_pos`` [B] the position of ``first``. A row ends with
    its first stop token, or after ``max_new`` tokens, and then leaves the batch and the cache."""
    n = first.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=first.device)
    rows, nxt, key = torch.arange(n, device=first.device), first, _cache_kwarg(model)  # rows: each batch row's input row
    for step in range(max_new):
        if step:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            res = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                        use_cache=True, logits_to_keep=1, **{key: cache})
            cache, nxt, next_pos = _cache_of(res), res.logits[:, -1].argmax(-1), next_pos + 1
        for r, t in zip(rows.tolist(), nxt.tolist()):
            out[r].append(t)
        going = ~torch.isin(nxt, stops) if len(stops) else torch.ones_like(nxt, dtype=torch.bool)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, nxt, mask, next_pos = rows[keep], nxt[keep], mask[keep], next_pos[keep]
    return out


@torch.no_grad()
def greedy_tokens(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, max_new: int,
                  stop_ids: list[int]) -> list[list[int]]:
    """Greedy continuations of the left-padded prompts ``ids`` (``mask``: 1 on prompt tokens), each
    up to and including its first token in ``stop_ids``, at most ``max_new`` tokens.

    ``model.generate`` would give the same tokens, but it keeps every row of a batch in the forward
    pass until the last row has stopped; short-answer QA has most answers end in 2-8 tokens and a few
    run to ``max_new``, so most decode work went to rows already done (benchmarks/diagnostics/
    decode_speed.py). Here a row that stops leaves the batch and the KV cache
    (``Cache.batch_select_indices``). Positions follow the attention mask as in ``generate``. A forward
    pass over fewer rows can round differently, so a near tie may rarely resolve otherwise than in the
    full batch, exactly as it may between two batchings of ``generate``."""
    if ids.shape[0] == 0 or max_new <= 0:
        return [[] for _ in range(ids.shape[0])]
    res = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True, logits_to_keep=1)
    return _greedy_from(model, _cache_of(res), res.logits[:, -1].argmax(-1), mask, mask.sum(1), max_new, stop_ids)


@torch.no_grad()
def greedy_tokens_and_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, references: list[list[int]],
                           max_new: int, stop_ids: list[int]) -> tuple[list[list[int]], torch.Tensor]:
    """:func:`greedy_tokens`, and each row's mean per-token loss of ``references`` (one non-empty token
    list per row, read after its prompt), from one forward pass over prompt and reference.

    The reference's loss needs the prompt's hidden states, and so does the answer: one pass over both
    serves both, where a loss pass of its own would run every prompt again. The reference stays in
    the KV cache but is masked out of the answer's attention and its positions are reused, so the
    answer attends to exactly what it would without it (causal attention: the prompt's keys and
    values do not depend on what follows). A sliding attention window counts cache slots, the
    reference's among them, so where prompt, reference and answer outrun the window the answer
    comes from a prefill of the prompt alone (:func:`greedy_tokens`) instead."""
    n, width = ids.shape
    if n == 0:
        return [], torch.zeros(0, device=ids.device)
    if any(len(r) == 0 for r in references) or len(references) != n:
        raise ValueError("greedy_tokens_and_loss needs one non-empty reference per prompt")
    ref = torch.zeros((n, max(map(len, references))), dtype=ids.dtype, device=ids.device)
    ref_mask = torch.zeros_like(ref)
    for i, r in enumerate(references):
        ref[i, : len(r)], ref_mask[i, : len(r)] = torch.tensor(r, device=ids.device), 1
    full_mask = torch.cat([mask, ref_mask], dim=1)
    window = _sliding_window(model)
    shared = window is None or width + ref.shape[1] + max_new <= window
    stack = backbone(model)
    res = stack(input_ids=torch.cat([ids, ref], dim=1), attention_mask=full_mask, position_ids=_positions(full_mask),
                use_cache=shared, **({_cache_kwarg(stack): None} if shared else {}))
    # (row, column, token) of every reference token, the first predicted at the prompt's last column
    rows, cols, targets = _label_index(Encoded(ids, mask, torch.full((n,), width - 1), references, torch.zeros(n)))
    logp = head_logits(model, res.last_hidden_state[rows, cols]).log_softmax(-1)
    lengths = torch.tensor([len(r) for r in references], device=ids.device)
    nll = -torch.zeros(n, device=logp.device).index_add_(0, rows, logp.gather(1, targets[:, None]).squeeze(1)) / lengths
    if max_new <= 0:
        return [[] for _ in range(n)], nll
    if not shared:
        return greedy_tokens(model, ids, mask, max_new, stop_ids), nll
    first = logp[torch.cumsum(lengths, 0) - lengths].argmax(-1)  # each row's first entry: the end of its prompt
    answer_mask = torch.cat([mask, torch.zeros_like(ref_mask)], dim=1)  # the reference, hidden from the answer
    return _greedy_from(model, _cache_of(res), first, answer_mask, mask.sum(1), max_new, stop_ids), nll


def left_padded(encoder: Encoder, examples: list[Example], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples' prompts, left-padded: every prompt ends where generation starts."""
    prompts = [encoder.prompt_ids(e.text) for e in examples]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), encoder.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def answer_texts(encoder: Encoder, token_rows: list[list[int]]) -> list[str]:
    """Each row's text up to its first new line; a final end-of-sequence is dropped, a new-line token's
    text before its new line kept."""
    answers = []
    for row in token_rows:
        if row and row[-1] == encoder.eos_id:
            row = row[:-1]
        answers.append(encoder.tok.decode(row, skip_special_tokens=True).split("\n")[0].strip())
    return answers


@torch.no_grad()
def evaluate_generation(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device,
                        batch_size: int = 32, loss: bool = True) -> dict:
    """Token F1 (the ``score``) and exact match of greedy answers, best over each example's references,
    and the mean per-token loss of the first reference. ``scores`` and ``outputs`` list every example's
    F1 and answer in order, for paired comparisons and the collapse guard (:mod:`fedproxy.eval.guard`).

    The loss comes from the answer's own forward pass over the prompt, which reads the reference too
    (:func:`greedy_tokens_and_loss`). ``loss=False`` leaves the reference and ``loss`` out, for checks
    that read only the score (a learning curve, an early-stopping score)."""
    model.eval()
    n_ex = len(examples)
    outputs, f1s, ems, nll_sum = [""] * n_ex, [0.0] * n_ex, [0.0] * n_ex, 0.0
    # Batches of similar prompt length pad less (the QA sources' prompts range from one sentence to
    # a passage); every result goes back to its example's place.
    order = sorted(range(n_ex), key=lambda i: len(examples[i].text))
    for idx in batches(order, batch_size):
        chunk = [examples[i] for i in idx]
        ids, mask = left_padded(encoder, chunk, device)
        if loss:  # the reference's loss from the same forward pass as the answer's prompt
            rows, nll = greedy_tokens_and_loss(model, ids, mask, [encoder.continuation(e) for e in chunk],
                                               encoder.max_answer, encoder.stop_ids)
            nll_sum += float(nll.sum())
        else:
            rows = greedy_tokens(model, ids, mask, encoder.max_answer, encoder.stop_ids)
        for i, ex, answer in zip(idx, chunk, answer_texts(encoder, rows)):
            outputs[i] = answer
            f1s[i] = max(token_f1(answer, t) for t in ex.targets)
            ems[i] = max(exact_match(answer, t) for t in ex.targets)
    n = max(1, len(examples))
    return {"score": sum(f1s) / n, "f1": sum(f1s) / n, "exact_match": sum(ems) / n,
            **({"loss": nll_sum / n} if loss else {}), "n": len(examples), "scores": f1s, "outputs": outputs}
