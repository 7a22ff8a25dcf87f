"""Accuracy by scoring the label continuations, plus held-out label loss (generation: :mod:`.generate`)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.benchmark import Example
from ..data.encode import Encoder, batches
from ..objectives import score_first_tokens, sequence_logprob


def confusion_matrix(gold: torch.Tensor, predicted: torch.Tensor, n_cls: int) -> torch.Tensor:
    """``[n_cls, n_cls]`` counts: row = gold class, column = predicted class."""
    return torch.bincount(gold.cpu() * n_cls + predicted.cpu(), minlength=n_cls * n_cls).view(n_cls, n_cls)


def class_recall(confusion: list[list[int]]) -> list[float | None]:
    """Recall of each gold class from a ``confusion[gold][predicted]`` matrix (None: class absent)."""
    return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(confusion)]


@torch.no_grad()
def evaluate(model: nn.Module, encoder: Encoder, examples: list[Example], device: torch.device,
             batch_size: int = 32, loss: bool = True) -> dict:
    """Accuracy (argmax over label continuations), mean label NLL and the confusion matrix on ``examples``.

    ``predictions`` and ``gold`` list the predicted and gold class of every example in order,
    for paired comparisons of two models on the same examples (:mod:`fedproxy.eval.guard`).

    ``confusion[g][p]`` counts examples of gold class ``g`` predicted as ``p``: accuracy alone
    hides a model that has stopped predicting some class.

    ``loss=False`` lets a generation benchmark skip the reference's loss (its own forward pass);
    classification gets the label loss from the scoring pass and always reports it.
    """
    if encoder.generative:
        from .generate import evaluate_generation

        return evaluate_generation(model, encoder, examples, device, batch_size, loss)
    model.eval()
    n_cls = len(encoder.label_tokens)
    nll_sum = 0.0
    predicted: list[int] = []
    golds: list[int] = []
    firsts = [t[0] for t in encoder.label_tokens]
    for chunk in batches(examples, batch_size):
        gold = encoder.batch(chunk, with_label=True).to(device)
        if encoder.first_token_scoring:
            scores, nll = score_first_tokens(model, gold, firsts)
        else:  # labels share a first token: score every full continuation
            nll = -sequence_logprob(model, gold) / torch.tensor([len(x) for x in gold.label_ids], device=device)
            scores = torch.stack([
                sequence_logprob(model, encoder.batch(chunk, True, [c] * len(chunk)).to(device))
                for c in range(n_cls)
            ], dim=1)
        predicted += scores.argmax(1).tolist()
        golds += gold.labels.tolist()
        nll_sum += float(nll.sum())
    n = max(1, len(examples))
    confusion = confusion_matrix(torch.tensor(golds, dtype=torch.long), torch.tensor(predicted, dtype=torch.long),
                                 n_cls)
    accuracy = int(confusion.trace()) / n
    return {"score": accuracy, "accuracy": accuracy, "loss": nll_sum / n, "n": len(examples),
            "confusion": confusion.tolist(), "predictions": predicted, "gold": golds}


def evaluate_clients(model: nn.Module, encoder: Encoder, tests: list[list[Example]], names: list[str],
                     device: torch.device, batch_size: int = 32, loss: bool = True) -> dict:
    """Per-client and pooled metrics (pooled = example-weighted over all clients).

    ``score`` is the benchmark's headline metric (accuracy, or token F1 for generation).
    """
    per = {name: evaluate(model, encoder, t, device, batch_size, loss) for name, t in zip(names, tests)}
    n = sum(m["n"] for m in per.values())
    pooled = {key: sum(m[key] * m["n"] for m in per.values()) / n
              for key in ("score", "accuracy", "f1", "exact_match", "loss") if all(key in m for m in per.values())}
    if all("confusion" in m for m in per.values()):
        pooled["confusion"] = torch.tensor([m["confusion"] for m in per.values()]).sum(0).tolist()
    return {**pooled, "per_client": per}
