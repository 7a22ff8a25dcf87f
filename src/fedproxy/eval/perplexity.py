"""Perplexity on held-out server text (the compression fidelity measure)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.encode import Encoder, batches


@torch.no_grad()
def mean_nll(model: nn.Module, id_mask_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device) -> float:
    """Mean next-token negative log-likelihood over padded (ids, mask) batches."""
    model.eval()
    total, count = 0.0, 0
    for ids, mask in id_mask_batches:
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        tgt = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                       ignore_index=-100, reduction="sum"))
        count += int((tgt != -100).sum())
    return total / max(1, count)


def perplexity(model: nn.Module, encoder: Encoder, texts: list[str], device: torch.device,
               batch_size: int = 8) -> float:
    return math.exp(mean_nll(model, (encoder.text_batch(c) for c in batches(texts, batch_size)), device))
