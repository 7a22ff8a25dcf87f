"""Loss-based importance: how much the LM loss on server text rises when a block is skipped."""

from __future__ import annotations

import torch
from torch import nn

from ..eval.perplexity import mean_nll
from ..modeling import blocks
from .base import SELECTORS, top_k_with_anchors


class _Skip(nn.Module):
    """Stands in for a decoder block and returns its input unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@torch.no_grad()
def loss_drop_scores(llm, calib, device) -> list[float]:
    layers = blocks(llm)
    base = mean_nll(llm, calib, device)
    scores = []
    for i in range(len(layers)):
        original = layers[i]
        layers[i] = _Skip()
        try:
            scores.append(mean_nll(llm, calib, device) - base)
        finally:
            layers[i] = original
    return scores


@SELECTORS.register("loss-drop")
def select_loss_drop(llm, calib, n_keep, cfg, device):
    scores = loss_drop_scores(llm, calib, device)
    return top_k_with_anchors(scores, n_keep, cfg.keep_first, cfg.keep_last), scores
