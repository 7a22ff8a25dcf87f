"""Stage 3: training-free plug-in fusion of proxy deltas into the LLM."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..compress.base import ProxyMap
from ..modeling import load_params, snapshot
from .plugin import VARIANTS, fuse_state, map_delta

__all__ = ["VARIANTS", "fuse_into", "fuse_state", "map_delta", "select_fusion", "save_fused"]


def fuse_into(llm: torch.nn.Module, delta: dict[str, torch.Tensor], pmap: ProxyMap, variant: str = "source",
              scale: float = 1.0) -> torch.nn.Module:
    """Load ``llm`` with its fused weights (in place) and return it."""
    load_params(llm, fuse_state(snapshot(llm), delta, pmap, variant, scale))
    return llm


def select_fusion(llm: torch.nn.Module, delta, pmap: ProxyMap, variants: list[str], scales: list[float],
                  score: Callable[[torch.nn.Module], float]) -> tuple[dict, list[dict]]:
    """Try every (variant, scale) on server-side validation via ``score``; keep the best.

    Leaves ``llm`` fused with the winner; returns the recipe and the table of trials.
    """
    base = snapshot(llm)
    trials = []
    for variant in variants:
        for scale in scales:
            load_params(llm, fuse_state(base, delta, pmap, variant, scale))
            trials.append({"variant": variant, "scale": scale, "val_accuracy": score(llm)})
    best = max(trials, key=lambda t: (t["val_accuracy"], -abs(t["scale"] - 1.0)))
    load_params(llm, fuse_state(base, delta, pmap, best["variant"], best["scale"]))
    return {"variant": best["variant"], "scale": best["scale"]}, trials


def save_fused(llm: torch.nn.Module, tokenizer, recipe: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "fusion_recipe.json").write_text(json.dumps(recipe, indent=2))
    return out
