"""Multi-seed statistics: paired differences and the share of the centralized gain, with
bootstrap confidence intervals over seeds x test examples (pure functions over score tables).

Every method of one seed is scored on the same test examples, so comparisons are paired: a
bootstrap replicate draws seeds with replacement and, inside each drawn seed, test examples
with replacement, and applies the same draw to every method.
"""

from __future__ import annotations

import math

import numpy as np

# scores[method] is a list over seeds of per-example score arrays (same examples for every method of a seed)
Scores = dict[str, list[np.ndarray]]


def _draws(sizes: list[int], reps: int, seed: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        seeds = rng.integers(0, len(sizes), len(sizes))
        out.append((seeds, [rng.integers(0, sizes[s], sizes[s]) for s in seeds]))
    return out


def _mean(arrays: list[np.ndarray], draw) -> float:
    seeds, idx = draw
    return float(np.mean(np.concatenate([arrays[s][i] for s, i in zip(seeds, idx)])))


def _ci(values: list[float], level: float = 0.95) -> list[float]:
    lo, hi = np.nanquantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def paired_ci(a: list[np.ndarray], b: list[np.ndarray], reps: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` over seeds x examples, with its 95% bootstrap CI."""
    _same_shapes(a, b)
    diff = [x - y for x, y in zip(a, b)]
    draws = _draws([len(d) for d in diff], reps, seed)
    return {"mean": float(np.mean(np.concatenate(diff))), "ci95": _ci([_mean(diff, d) for d in draws])}


def gain_ci(method: list[np.ndarray], zero_shot: list[np.ndarray], centralized: list[np.ndarray],
            reps: int = 2000, seed: int = 0) -> dict:
    """(method - zero-shot) / (centralized - zero-shot) on the pooled examples, with its 95% CI."""
    _same_shapes(method, zero_shot)
    _same_shapes(method, centralized)
    draws = _draws([len(x) for x in method], reps, seed)

    def ratio(draw=None) -> float:
        m, z, c = ((float(np.mean(np.concatenate(x))) if draw is None else _mean(x, draw))
                   for x in (method, zero_shot, centralized))
        return (m - z) / (c - z) if c != z else math.nan

    return {"mean": ratio(), "ci95": _ci([ratio(d) for d in draws])}


def below_by_one_se(a: np.ndarray, b: np.ndarray) -> bool:
    """``a``'s mean is below ``b``'s by more than one standard error of the difference of the two means.

    The unpaired error, sqrt(var(a)/n + var(b)/n): the paired one collapses to nothing when the
    two models disagree on only a few examples, and would count a one-example loss as harm.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else 0.0
    return float(a.mean() - b.mean()) < -se


def _same_shapes(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    if [len(x) for x in a] != [len(x) for x in b]:
        raise ValueError(f"paired statistics need the same examples per seed: {[len(x) for x in a]} against "
                         f"{[len(x) for x in b]}")
