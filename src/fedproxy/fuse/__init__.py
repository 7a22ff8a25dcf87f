"""Stage 3: training-free plug-in fusion of proxy deltas into the LLM."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..compress.base import ProxyMap
from ..modeling import load_params, snapshot
from .plugin import VARIANTS, fuse_state, map_delta

__all__ = ["VARIANTS", "fuse_into", "fuse_state", "map_delta", "select_fusion", "save_fused", "tie_break"]


def fuse_into(llm: torch.nn.Module, delta: dict[str, torch.Tensor], pmap: ProxyMap, variant: str = "source",
              scale: float = 1.0) -> torch.nn.Module:
    """Load ``llm`` with its fused weights (in place) and return it."""
    load_params(llm, fuse_state(snapshot(llm), delta, pmap, variant, scale))
    return llm


def tie_break(trial: dict) -> tuple:
    """How :func:`select_fusion` orders trials of equal validation score (larger wins): a fused
    model before the unchanged LLM, then the plainer recipe: scale nearest 1, then the unaligned delta."""
    return trial["scale"] > 0, -abs(trial["scale"] - 1.0), not trial.get("aligned", False)


def select_fusion(llm: torch.nn.Module, delta, pmap: ProxyMap, variants: list[str], scales: list[float],
                  score: Callable[[torch.nn.Module], float], aligned=None,
                  keep_llm: bool = False) -> tuple[dict, list[dict]]:
    """Try every (variant, scale) on server-side validation via ``score``; keep the best.

    With ``aligned`` (the delta after :func:`fedproxy.fuse.align.align_delta`) every
    (variant, scale) is tried with it too. With ``keep_llm`` the LLM as it is (scale 0) is a
    candidate as well, so a delta is plugged in only if it beats the unchanged LLM on
    validation. Leaves ``llm`` fused with the winner; returns the recipe and the table of trials.
    """
    base = snapshot(llm)
    candidates = {False: delta, **({True: aligned} if aligned is not None else {})}
    trials = []
    if keep_llm and 0 not in scales:  # scale 0 is the same model for every variant: score it once
        trials.append({"variant": variants[0], "scale": 0.0, "aligned": False, "val_accuracy": score(llm)})
    for is_aligned, d in candidates.items():
        for variant in variants:
            for scale in scales:
                load_params(llm, fuse_state(base, d, pmap, variant, scale))
                trials.append({"variant": variant, "scale": scale, "aligned": is_aligned, "val_accuracy": score(llm)})
    best = max(trials, key=lambda t: (t["val_accuracy"], *tie_break(t)))
    load_params(llm, fuse_state(base, candidates[best["aligned"]], pmap, best["variant"], best["scale"]))
    return {"variant": best["variant"], "scale": best["scale"], "aligned": best["aligned"]}, trials


def save_fused(llm: torch.nn.Module, tokenizer, recipe: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "fusion_recipe.json").write_text(json.dumps(recipe, indent=2))
    return out
