"""Uniform layer drop (Offsite-Tuning style): evenly spaced blocks, first and last included."""

from __future__ import annotations

from .base import SELECTORS


def uniform_keep(num_layers: int, n_keep: int) -> list[int]:
    if n_keep == 1:
        return [0]
    return sorted({round(i * (num_layers - 1) / (n_keep - 1)) for i in range(n_keep)})


@SELECTORS.register("uniform")
def select_uniform(llm, calib, n_keep, cfg, device):
    from ..modeling import blocks

    n = len(blocks(llm))
    return uniform_keep(n, n_keep), [0.0] * n
