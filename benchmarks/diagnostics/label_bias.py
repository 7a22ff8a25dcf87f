"""Is a model's missing class a label prior? Fit one bias per class on server validation and score the test splits.

Usage (the table in docs/results.md, "What the fused LLM predicts"):
    python benchmarks/diagnostics/label_bias.py runs/default/work/fedproxy/fused_llm --seed 0 --out runs/label_bias.json

Scores the LLM zero-shot and every model directory given (first-token label scores, as a run
scores them), fits a per-class additive bias on the server's labelled validation split by
maximum likelihood (4 numbers; the server already uses that split to choose the fusion
scale), and reports test accuracy and recall per class with and without it. If a class the
model never predicts comes back with a bias, the model holds the distinction and only its
prior is off; if not, the distinction itself is missing. Diagnostic only: no method uses it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fedproxy.config import RunConfig
from fedproxy.data import load_benchmark
from fedproxy.data.encode import Encoder, batches
from fedproxy.eval.classify import confusion_matrix
from fedproxy.modeling import load_pretrained, resolve_checkpoint
from fedproxy.objectives import score_first_tokens
from fedproxy.report import class_recall, format_recall


@torch.no_grad()
def label_scores(model, encoder: Encoder, examples) -> tuple[torch.Tensor, torch.Tensor]:
    scores, gold = [], []
    for chunk in batches(examples, 32):
        batch = encoder.batch(chunk, with_label=True)
        s, _ = score_first_tokens(model, batch, [t[0] for t in encoder.label_tokens])
        scores.append(s.float())
        gold.append(batch.labels)
    return torch.cat(scores), torch.cat(gold)


def fit_bias(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """The per-class bias that maximises the likelihood of ``gold`` under softmax(scores + bias)."""
    bias = torch.zeros(scores.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([bias], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores + bias, gold)
        loss.backward()
        return loss

    opt.step(closure)
    return bias.detach()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="Hugging Face model directories (e.g. a run's fused_llm)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (its data split)")
    p.add_argument("--out", default="runs/label_bias.json")
    args = p.parse_args(argv)
    cfg = RunConfig()
    bench = load_benchmark(cfg.data, args.seed)
    test = [e for t in bench.test for e in t]
    n = len(bench.labels)
    out = {"seed": args.seed, "labels": bench.labels, "models": {}}
    labels = ", ".join(bench.labels)
    print(f"| model | bias on val ({labels}) | test acc | with bias | recall | recall with bias |")
    print("|---|---|---|---|---|---|")
    for name in ["zero-shot", *args.models]:
        model, tok = load_pretrained(resolve_checkpoint(cfg.model.source) if name == "zero-shot" else name)
        model.eval()
        encoder = Encoder(tok, bench, cfg.data.max_length)
        bias = fit_bias(*label_scores(model, encoder, bench.server_val))
        scores, gold = label_scores(model, encoder, test)
        raw = confusion_matrix(gold, scores.argmax(1), n).tolist()
        cal = confusion_matrix(gold, (scores + bias).argmax(1), n).tolist()
        acc = lambda c: sum(c[i][i] for i in range(n)) / len(test)  # noqa: E731
        out["models"][name] = {"bias": bias.tolist(), "accuracy": acc(raw), "accuracy_with_bias": acc(cal),
                               "confusion": raw, "confusion_with_bias": cal}
        print(f"| {name} | {', '.join(f'{b:+.2f}' for b in bias.tolist())} | {acc(raw):.3f} | {acc(cal):.3f} | "
              f"{' / '.join(format_recall(class_recall(raw)))} | {' / '.join(format_recall(class_recall(cal)))} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
