"""Block influence (ShortGPT): BI_i = 1 - E[cos(h_in, h_out)] on server calibration text."""

from __future__ import annotations

import torch

from .base import SELECTORS, top_k_with_anchors


@torch.no_grad()
def block_influence(llm, calib, device) -> list[float]:
    n = llm.config.num_hidden_layers
    sums = torch.zeros(n, dtype=torch.float64)
    count = 0
    llm.eval()
    for ids, mask in calib:
        hs = llm(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
        m = mask.to(device).bool()
        # hidden_states[i] is block i's input; the last entry is after the final norm, so
        # block n-1's output is not directly exposed and we compare against the normed output.
        for i in range(n):
            cos = torch.nn.functional.cosine_similarity(hs[i][m].float(), hs[i + 1][m].float(), dim=-1)
            sums[i] += float((1 - cos).sum())
        count += int(m.sum())
    return (sums / max(1, count)).tolist()


@SELECTORS.register("block-influence")
def select_block_influence(llm, calib, n_keep, cfg, device):
    scores = block_influence(llm, calib, device)
    return top_k_with_anchors(scores, n_keep, cfg.keep_first, cfg.keep_last), scores
