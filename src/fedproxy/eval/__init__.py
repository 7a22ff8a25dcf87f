"""Evaluation: 4-way accuracy by scoring label continuations, held-out loss, perplexity."""

from .classify import evaluate, evaluate_clients
from .perplexity import perplexity

__all__ = ["evaluate", "evaluate_clients", "headline", "perplexity"]


def headline(ev: dict) -> float:
    """An evaluation's headline score: ``score`` (accuracy or token F1), or ``accuracy`` in older results."""
    return ev["score"] if "score" in ev else ev["accuracy"]
