"""Losses and scores on label continuations, computing the LM head only where needed.

The head of a small LM is a large share of its FLOPs (SmolLM2: 49k x 576 per token), so we
run the backbone on the whole sequence and the head only at the label positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data.encode import Encoded, Encoder
from .modeling import backbone, unwrapped


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module, float | None]:
    base = unwrapped(model)
    cap = getattr(base.config, "final_logit_softcapping", None)
    return backbone(model), base.get_output_embeddings(), cap


# Packed rows are filled up to this many tokens (or the longest sequence). Measured on
# SmolLM2 and its proxy, 2 CPU cores, the 400 test examples in batches of 32
# (benchmarks/diagnostics/eval_packing.py): rows of 512 tokens scored 1.35x faster than padding, rows of
# 2048 only 1.16-1.22x, because a packed row's attention is quadratic in its length. A
# client's training batch (8 examples) mostly fits in one row.
PACK_TOKENS = 512


def pack(batch: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded batch -> (input_ids, position_ids, row, start) of packed rows.

    Sequences are laid end to end in rows of at most ``PACK_TOKENS`` tokens, in order, each
    with positions from 0. transformers reads the restarts in ``position_ids`` (with no
    attention mask and no cache) as packed sequences and masks attention to each one, so a
    sequence's hidden states are those of the padded batch, without computing the padding.
    Example ``i`` sits in row ``row[i]`` from column ``start[i]``; a row's unused tail is a
    padding segment of its own.
    """
    lengths = batch.attention_mask.sum(1).tolist()
    cap = max(PACK_TOKENS, max(lengths))
    used: list[int] = []
    row, start = [], []
    for n in lengths:
        if not used or used[-1] + n > cap:
            used.append(0)
        row.append(len(used) - 1)
        start.append(used[-1])
        used[-1] += n
    dev = batch.input_ids.device
    width = max(used)
    ids = torch.zeros((len(used), width), dtype=batch.input_ids.dtype, device=dev)  # the tails are never read
    pos = torch.zeros((len(used), width), dtype=torch.long, device=dev)
    for i, n in enumerate(lengths):
        ids[row[i], start[i]: start[i] + n] = batch.input_ids[i, :n]
        pos[row[i], start[i]: start[i] + n] = torch.arange(n, device=dev)
    for r, n in enumerate(used):
        pos[r, n:] = torch.arange(width - n, device=dev)
    return ids, pos, torch.tensor(row, device=dev), torch.tensor(start, device=dev)


def padding_fraction(encoder: Encoder, chunks, packed: bool = False) -> float:
    """Share of the tokens a forward over ``chunks``' label batches processes that are padding.

    Right-padded batches pad every sequence to the longest; packed rows (:func:`pack`) pad
    only the tails of rows shorter than the widest.
    """
    real = processed = 0
    for chunk in chunks:
        batch = encoder.batch(chunk, with_label=True)
        real += int(batch.attention_mask.sum())
        processed += pack(batch)[0].numel() if packed else batch.attention_mask.numel()
    return 1 - real / processed


def logits_at(model: nn.Module, batch: Encoded, rows: torch.Tensor, cols: torch.Tensor,
              packed: bool = False) -> torch.Tensor:
    """Logits at (example ``rows``, position ``cols``); ``packed`` runs the backbone on :func:`pack`'s rows.

    Scoring always packs (1.35x faster on the test sets, 43% of whose padded tokens are
    padding); training packs with ``fed.pack`` (the default). In fp32 the two layouts give the
    same logits and gradients up to float rounding; under bf16 autocast the rounding differs.
    """
    backbone, head, cap = _parts(model)
    if packed:
        ids, pos, row, start = pack(batch)
        hidden = backbone(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
        rows, cols = row[rows], start[rows] + cols
    else:
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return _head(head, cap, hidden[rows, cols])


def _head(head: nn.Module, cap: float | None, hidden: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``model``'s LM head (and final logit soft-capping) on final hidden states picked beforehand,
    so that only the positions that need logits pay for the vocabulary."""
    _, head, cap = _parts(model)
    return _head(head, cap, hidden)


def _label_index(batch: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(example row, position, target token) of every label token; rows also say which example owns it."""
    rows, cols, targets = [], [], []
    for i, (p, lab) in enumerate(zip(batch.label_pos.tolist(), batch.label_ids)):
        for j, t in enumerate(lab):
            rows.append(i)
            cols.append(p + j)
            targets.append(t)
    dev = batch.input_ids.device
    as_t = lambda x: torch.tensor(x, device=dev)  # noqa: E731
    return as_t(rows), as_t(cols), as_t(targets)


def _first_of_example(rows: torch.Tensor) -> torch.Tensor:
    """Mask over label tokens: True where a token is the first of its example's label."""
    is_first = torch.ones_like(rows, dtype=torch.bool)
    is_first[1:] = rows[1:] != rows[:-1]
    return is_first


def label_loss(model: nn.Module, batch: Encoded, prior_bias: dict[int, float] | None = None,
               packed: bool = False, class_tokens: list[int] | None = None) -> torch.Tensor:
    """Mean token cross-entropy of the label continuation (the fine-tuning objective).

    ``prior_bias`` (token id -> logit offset) is added to the logits of the label's first
    token only (logit adjustment, see :func:`fedproxy.federated.client.prior_bias`);
    ``packed`` runs the backbone on packed rows (:func:`pack`). With ``class_tokens`` (the
    classes' distinct first tokens) a label's first token is trained with a softmax over those
    tokens only, the way :func:`score_first_tokens` scores it; later label tokens keep the
    whole vocabulary.
    """
    rows, cols, targets = _label_index(batch)
    logits = logits_at(model, batch, rows, cols, packed)
    first = _first_of_example(rows)
    if prior_bias:
        offset = torch.zeros(logits.shape[-1], device=logits.device, dtype=logits.dtype)
        offset[torch.tensor(list(prior_bias), device=logits.device)] = torch.tensor(
            list(prior_bias.values()), device=logits.device, dtype=logits.dtype)
        logits = logits + first[:, None].to(logits.dtype) * offset
    if class_tokens is None:
        return F.cross_entropy(logits, targets)
    cls = torch.tensor(class_tokens, device=logits.device)
    per_token = F.cross_entropy(logits, targets, reduction="none")
    # The target's index among the class tokens: every first label token is one of them.
    cls_target = (targets[first, None] == cls).float().argmax(1)
    per_token[first] = F.cross_entropy(logits[first][:, cls], cls_target, reduction="none")
    return per_token.mean()


@torch.no_grad()
def score_first_tokens(model: nn.Module, batch: Encoded, first_tokens: list[int],
                       packed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(class scores [B, C] from the label's first token, per-example label NLL [B]).

    ``batch`` must hold prompt + gold label so one forward gives both numbers.
    """
    rows, cols, targets = _label_index(batch)
    logits = logits_at(model, batch, rows, cols, packed)
    logp = logits.log_softmax(-1)
    nll_tok = -logp.gather(1, targets[:, None]).squeeze(1)
    n = batch.input_ids.shape[0]
    nll = torch.zeros(n, device=nll_tok.device).index_add_(0, rows, nll_tok)
    counts = torch.zeros(n, device=nll_tok.device).index_add_(0, rows, torch.ones_like(nll_tok))
    scores = logp[_first_of_example(rows)][:, first_tokens]
    return scores, nll / counts


@torch.no_grad()
def sequence_logprob(model: nn.Module, batch: Encoded, packed: bool = True) -> torch.Tensor:
    """Summed log-probability of each example's label continuation [B]."""
    rows, cols, targets = _label_index(batch)
    logp = logits_at(model, batch, rows, cols, packed).log_softmax(-1)
    tok = logp.gather(1, targets[:, None]).squeeze(1)
    return torch.zeros(batch.input_ids.shape[0], device=tok.device).index_add_(0, rows, tok)
