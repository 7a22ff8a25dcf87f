"""Do no harm: paired acceptance tests and the collapse guard (pure functions over score tables).

A candidate model (a fused LLM, a new global proxy) replaces the model it would succeed only
when it is *shown* to be better on the same validation examples, and never when its
predictions have collapsed. Every function here takes per-example tables (what
:func:`fedproxy.eval.evaluate` returns) and nothing else, so the rules are tested with
hand-made tables.

Statistics: per-example scores that are all 0/1 (accuracy) are compared with the exact
one-sided McNemar test (a binomial test on the discordant pairs); other scores (token F1,
ROUGE-L) with the one-sided paired t-test. The one-sided lower confidence bound of the mean
per-example difference (t interval) is reported with either, and a candidate counts as better
only when the test rejects at ``alpha`` *and* that bound is above 0. scipy (already needed by
Opacus) supplies the distributions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .classify import class_recall, confusion_matrix


@dataclass(frozen=True)
class Acceptance:
    """The do-no-harm rule (``fuse.accept_alpha``, ``fuse.guard_share``, ``fuse.guard_recall``,
    ``fuse.guard_recall_keep``).

    A candidate replaces the model it would succeed only when a paired one-sided test on the
    same validation examples shows it better at ``alpha`` (:func:`paired_test`) and its
    predictions have not collapsed (:func:`collapse_reasons` with ``max_share``, ``min_recall``
    and ``recall_keep``). ``labels`` name the classes in messages.
    """

    alpha: float = 0.05
    max_share: float = 0.8
    min_recall: float = 0.1
    labels: tuple[str, ...] | None = None
    recall_keep: float = 0.25

    def collapse(self, ev: dict, base_ev: dict | None) -> list[str]:
        return collapse_reasons(ev, base_ev, self.labels, self.max_share, self.min_recall,
                                recall_keep=self.recall_keep)


def per_example(ev: dict) -> list[float]:
    """The per-example score of an evaluation: its ``scores`` (generation) or 1/0 correct (classification)."""
    if "scores" in ev:
        return [float(s) for s in ev["scores"]]
    if "predictions" not in ev or "gold" not in ev:
        raise ValueError("an evaluation needs 'scores', or 'predictions' and 'gold', for a paired test")
    return [float(p == g) for p, g in zip(ev["predictions"], ev["gold"])]


def paired_test(candidate: Sequence[float], base: Sequence[float], alpha: float = 0.05) -> dict:
    """One-sided test that ``candidate`` scores above ``base`` on the same examples.

    Returns ``n``, ``diff`` (mean per-example difference), ``ci_low`` (its one-sided
    ``1 - alpha`` lower bound), ``p``, ``test``, ``wins``/``losses`` (examples where the
    candidate is better / worse) and ``better`` (``p < alpha`` and ``ci_low > 0``).
    """
    if len(candidate) != len(base):
        raise ValueError(f"paired test needs the same examples: {len(candidate)} scores against {len(base)}")
    if not candidate:
        raise ValueError("paired test on zero examples")
    # scipy.stats costs 0.5 s to import, paid by every Flower ClientApp process (one per message) that
    # imports the federated package: only the server's tests need it.
    from scipy import stats

    c, b = np.asarray(candidate, dtype=float), np.asarray(base, dtype=float)
    d = c - b
    n = len(d)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    binary = bool(np.isin(c, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if binary:
        test = "McNemar exact (one-sided)"
        p = float(stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    else:
        test = "paired t (one-sided)"
        p = float(stats.ttest_rel(c, b, alternative="greater").pvalue) if d.std() > 0 else (0.0 if d.mean() > 0
                                                                                              else 1.0)
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    ci_low = diff - float(stats.t.ppf(1 - alpha, n - 1)) * se if n > 1 and se > 0 else (diff if n > 1 else -math.inf)
    return {"n": n, "diff": diff, "ci_low": ci_low, "confidence": 1 - alpha, "p": p, "test": test,
            "wins": wins, "losses": losses, "better": bool(p < alpha and ci_low > 0)}


def collapse_reasons(ev: dict, base_ev: dict | None = None, labels: Sequence[str] | None = None,
                     max_share: float = 0.8, min_recall: float = 0.1, loss_ratio: float = 1.5,
                     recall_keep: float = 0.0) -> list[str]:
    """Why ``ev``'s predictions count as collapsed (empty list: they do not).

    Classification (``predictions`` and ``gold``):
    - one class takes ``max_share`` or more of the predictions while it is less than that
      share of the gold labels;
    - a class that ``base_ev`` (the model being replaced) recalls at ``min_recall`` or more
      gets zero recall, or less than ``recall_keep`` times that recall: near zero on validation
      is often zero on test.

    Generation (``outputs``): one output string (the empty one included) for ``max_share``
    or more of the examples, or a reference loss above ``loss_ratio`` times ``base_ev``'s.
    """
    if "outputs" in ev:
        return _generation_reasons(ev, base_ev, max_share, loss_ratio)
    preds, gold = list(ev["predictions"]), list(ev["gold"])
    n = len(preds)
    if n == 0:
        return []
    name = (lambda k: repr(labels[k])) if labels else (lambda k: f"class {k}")
    out = []
    top, count = Counter(preds).most_common(1)[0]
    gold_share = sum(g == top for g in gold) / n
    if count / n >= max_share and gold_share < max_share:
        out.append(f"predicts {name(top)} for {count} of {n} examples ({count / n:.0%}; gold {gold_share:.0%})")
    if base_ev is not None:
        cand_r, base_r = recall(preds, gold), recall(base_ev["predictions"], base_ev["gold"])
        for k, r in sorted(base_r.items()):
            c = cand_r.get(k, 0.0)
            if r >= min_recall and c == 0.0:
                out.append(f"recall 0 on {name(k)}, which the model it would replace recalls at {r:.2f}")
            elif r >= min_recall and c < recall_keep * r:
                out.append(f"recall {c:.2f} on {name(k)}, under {recall_keep:.0%} of the {r:.2f} the model it "
                           "would replace has")
    return out


def _generation_reasons(ev: dict, base_ev: dict | None, max_share: float, loss_ratio: float) -> list[str]:
    outs = list(ev["outputs"])
    out = []
    if outs:
        text, count = Counter(outs).most_common(1)[0]
        if count / len(outs) >= max_share:
            out.append(f"generates {text[:40]!r} for {count} of {len(outs)} examples ({count / len(outs):.0%})")
    if base_ev is not None and ev.get("loss") is not None and base_ev.get("loss"):
        if ev["loss"] > loss_ratio * base_ev["loss"]:
            out.append(f"reference loss {ev['loss']:.3f} is above {loss_ratio:g}x the replaced model's "
                       f"{base_ev['loss']:.3f}")
    return out


def recall(predictions: Sequence[int], gold: Sequence[int]) -> dict[int, float]:
    """Recall of every gold class present (:func:`fedproxy.eval.classify.class_recall`, keyed by class)."""
    n_cls = 1 + max([*predictions, *gold], default=-1)
    confusion = confusion_matrix(torch.tensor(list(gold), dtype=torch.long),
                                 torch.tensor(list(predictions), dtype=torch.long), n_cls)
    return {k: r for k, r in enumerate(class_recall(confusion.tolist())) if r is not None}


def clearly_worse(candidate: dict, previous: dict, alpha: float = 0.05) -> dict:
    """The paired test that ``previous`` beats ``candidate`` (a round that lost ground)."""
    return paired_test(per_example(previous), per_example(candidate), alpha)
