"""Stage 3: training-free plug-in fusion of proxy deltas into the LLM."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..compress.base import ProxyMap
from ..eval import headline
from ..eval.guard import Acceptance, paired_test, per_example
from ..modeling import load_params, snapshot
from .plugin import VARIANTS, fuse_state, map_delta

# What a decision ships when no plug-in was shown to help (``decision["shipped"]``).
UNCHANGED_LLM = "unchanged LLM"

__all__ = ["Acceptance", "UNCHANGED_LLM", "VARIANTS", "fuse_into", "fuse_state", "map_delta", "select_fusion",
           "save_fused", "tie_break"]


def fuse_into(llm: torch.nn.Module, delta: dict[str, torch.Tensor], pmap: ProxyMap, variant: str = "source",
              scale: float = 1.0) -> torch.nn.Module:
    """Load ``llm`` with its fused weights (in place) and return it."""
    load_params(llm, fuse_state(snapshot(llm), delta, pmap, variant, scale))
    return llm


def tie_break(trial: dict) -> tuple:
    """How :func:`select_fusion` orders trials of equal validation score (larger wins): the
    unchanged LLM first (a tie never ships a plug-in), then the plainer recipe: scale nearest 1,
    then the unaligned delta."""
    return trial["scale"] == 0, -abs(trial["scale"] - 1.0), not trial.get("aligned", False)


def _score(ev: dict | float) -> float:
    return ev if isinstance(ev, (int, float)) else float(headline(ev))


def select_fusion(llm: torch.nn.Module, delta, pmap: ProxyMap, variants: list[str], scales: list[float],
                  score: Callable[[torch.nn.Module], dict | float], aligned=None,
                  keep_llm: bool = False, accept: Acceptance | None = None,
                  llm_score: dict | float | None = None) -> tuple[dict, list[dict]]:
    """Try every (variant, scale) on server-side validation via ``score``; keep the best.

    ``score(model)`` returns the validation accuracy, or an evaluation dict
    (:func:`fedproxy.eval.evaluate`: ``accuracy`` or ``score``, plus the per-example tables that
    ``accept`` needs). With ``aligned`` (the delta after :func:`fedproxy.fuse.align.align_delta`)
    every (variant, scale) is tried with it too. With ``keep_llm`` the LLM as it is (scale 0) is a
    candidate as well and wins ties; with ``accept`` as well, a delta is plugged in only when it
    passes the :class:`~fedproxy.eval.guard.Acceptance` rule against the unchanged LLM, whose score is
    ``llm_score`` when given (computed once per run), else ``score(llm)``. Leaves ``llm`` fused with the
    winner; returns the recipe (with ``decision``: what shipped and why) and the table of trials.
    """
    base = snapshot(llm)
    candidates = {False: delta, **({True: aligned} if aligned is not None else {})}
    trials, evals = [], []
    if keep_llm or accept is not None:  # scale 0 is the same model for every variant: score it once
        ev = score(llm) if llm_score is None else llm_score
        trials.append({"variant": variants[0], "scale": 0.0, "aligned": False, "val_accuracy": _score(ev)})
        evals.append(ev)
    for is_aligned, d in candidates.items():
        for variant in variants:
            for scale in scales:
                if scale == 0 and trials and trials[0]["scale"] == 0:
                    continue  # the unchanged LLM is already in the table
                load_params(llm, fuse_state(base, d, pmap, variant, scale))
                ev = score(llm)
                trials.append({"variant": variant, "scale": scale, "aligned": is_aligned, "val_accuracy": _score(ev)})
                evals.append(ev)
    if accept is None:
        best = max(trials, key=lambda t: (t["val_accuracy"], *tie_break(t)))
        decision = {"rule": "best validation score" + (" (the unchanged LLM competing)" if keep_llm else "")}
    else:
        best, decision = _accepted(trials, evals, accept, variants)
    load_params(llm, fuse_state(base, candidates[best["aligned"]], pmap, best["variant"], best["scale"]))
    recipe = {"variant": best["variant"], "scale": best["scale"], "aligned": best["aligned"], "decision": decision}
    return recipe, trials


def _accepted(trials: list[dict], evals: list, accept: Acceptance, variants: list[str]) -> tuple[dict, dict]:
    """Apply the do-no-harm rule; annotate ``trials`` in place; return the winner and the decision.

    Candidates are tested in a fixed order, plainest first (scale nearest 1, the listed variant
    order, unaligned before aligned), each at ``accept.alpha``, stopping at the first one not
    accepted: fixed-sequence testing, so the chance of shipping any plug-in that is not better
    than the LLM stays at most ``alpha`` however many candidates are tried. Among the accepted,
    the best validation score ships.
    """
    base_trial, base_ev = trials[0], evals[0]
    if isinstance(base_ev, (int, float)):
        raise TypeError("the acceptance rule needs per-example validation tables: score(model) must return "
                        "fedproxy.eval.evaluate's dict, not a number")
    base_scores = per_example(base_ev)
    order = sorted(range(1, len(trials)), key=lambda i: (trials[i]["aligned"], abs(trials[i]["scale"] - 1.0),
                                                         trials[i]["scale"], variants.index(trials[i]["variant"])))
    accepted, chain_open = [], True
    for i in order:
        t, ev = trials[i], evals[i]
        t["collapse"] = accept.collapse(ev, base_ev)
        t["test"] = paired_test(per_example(ev), base_scores, accept.alpha)
        if not chain_open:
            t["verdict"] = "not tested: an earlier candidate in the fixed order was not accepted"
        elif t["collapse"]:
            t["verdict"] = "rejected: collapsed (" + "; ".join(t["collapse"]) + ")"
        elif not t["test"]["better"]:
            t["verdict"] = "rejected: not shown better than the unchanged LLM"
        else:
            t["verdict"] = "accepted"
            accepted.append(t)
        chain_open = chain_open and t["verdict"] == "accepted"
    base_trial["verdict"] = "baseline (the unchanged LLM)"
    n = len(base_scores)
    if accepted:
        best = max(accepted, key=lambda t: (t["val_accuracy"], *tie_break(t)))
        why = (f"x{best['scale']:g} {best['variant']}{' aligned' if best['aligned'] else ''} beats the unchanged "
               f"LLM on {n} validation examples: {best['test']['diff']:+.3f} (one-sided {1 - accept.alpha:.0%} CI "
               f">= {best['test']['ci_low']:+.3f}, {best['test']['test']} p = {best['test']['p']:.3g})")
        shipped = "plug-in"
    else:
        best = base_trial
        first = trials[order[0]] if order else None
        why = "no candidate was tried" if first is None else (
            f"the first candidate in the fixed order, x{first['scale']:g} {first['variant']}, was "
            f"{first['verdict'].removeprefix('rejected: ')}: {first['test']['diff']:+.3f} on {n} validation "
            f"examples (one-sided {1 - accept.alpha:.0%} CI >= {first['test']['ci_low']:+.3f}, "
            f"p = {first['test']['p']:.3g}); the unchanged LLM ships")
        shipped = UNCHANGED_LLM
    decision = {"rule": f"paired one-sided test at alpha {accept.alpha:g}, fixed-sequence over candidates, "
                        f"collapse guard (share {accept.max_share:g}, recall {accept.min_recall:g}, "
                        f"recall kept {accept.recall_keep:g})",
                "shipped": shipped, "why": why, "val_examples": n,
                "rejected": [{"variant": t["variant"], "scale": t["scale"], "aligned": t["aligned"],
                              "reason": t["verdict"]} for t in trials[1:] if t["verdict"] != "accepted"]}
    return best, decision


def save_fused(llm: torch.nn.Module, tokenizer, recipe: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "fusion_recipe.json").write_text(json.dumps(recipe, indent=2))
    return out
