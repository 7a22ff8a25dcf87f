"""Evaluation: 4-way accuracy by scoring label continuations, held-out loss, perplexity."""

from .classify import evaluate, evaluate_clients
from .perplexity import perplexity

__all__ = ["evaluate", "evaluate_clients", "perplexity"]
