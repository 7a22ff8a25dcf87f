"""What every method of a run shares: config, data, the LLM, evaluation helpers."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint
from .config import RunConfig
from .data import Benchmark, load_benchmark
from .data.encode import Encoder, batches
from .eval import evaluate, evaluate_clients, headline
from .eval.guard import Acceptance
from .modeling import (bf16_supported, load_params, load_pretrained, pick_device, resolve_checkpoint, set_threads,
                       snapshot, tiny_model, tiny_tokenizer)

log = logging.getLogger("fedproxy")


@dataclass
class RunContext:
    cfg: RunConfig
    bench: Benchmark
    tokenizer: object
    encoder: Encoder
    llm: torch.nn.Module
    device: torch.device
    out: Path
    resume: bool = False
    progress: bool = True
    llm_state: dict = field(default_factory=dict)
    _llm_evals: dict = field(default_factory=dict)

    @property
    def bf16(self) -> bool:
        return self.cfg.bf16 and bf16_supported(self.device)

    def evaluate(self, model: torch.nn.Module, per_client: int | None = None, loss: bool = True) -> dict:
        """``model`` on every client's test split (its first ``per_client`` examples when given).

        ``loss=False``: a generation benchmark skips the reference's loss (a pass of its own)."""
        tests = self.bench.test if per_client is None else [t[:per_client] for t in self.bench.test]
        return evaluate_clients(model, self.encoder, tests, self.bench.client_names, self.device, loss=loss)

    def val_accuracy(self, model: torch.nn.Module) -> float:
        """The headline validation score alone (the loss is not computed)."""
        return headline(self.val_eval(model, loss=False))

    def llm_eval(self, split: str) -> dict:
        """The unchanged LLM on ``split`` ('test': every client's test split, 'val'), computed once per run.

        Zero-shot, every plug-in decision's baseline and every method that ships the LLM as it is
        share it, so the LLM is never evaluated twice on the same examples. It is kept in
        ``work/llm_eval/``, named by what decides it (model, data and seed), and a resumed run
        reuses it rather than scoring the LLM again in each invocation.
        """
        if split not in self._llm_evals:
            c = self.cfg.to_dict()
            key = hashlib.sha256(json.dumps([c["model"], c["data"], c["seed"]], sort_keys=True).encode()).hexdigest()
            self._llm_evals[split] = checkpoint.json_once(
                self.out / "work" / "llm_eval" / f"{split}-{key[:12]}.json", lambda: self._score_llm(split), self.resume)
        return self._llm_evals[split]

    def _score_llm(self, split: str) -> dict:
        self.restore_llm()
        return self.evaluate(self.llm) if split == "test" else self.val_eval(self.llm)

    def val_eval(self, model: torch.nn.Module, loss: bool = True) -> dict:
        """``model`` on the server's validation examples, with the per-example tables."""
        return evaluate(model, self.encoder, self.bench.server_val, self.device, loss=loss)

    def acceptance(self) -> Acceptance:
        """The do-no-harm rule of this run (``fuse.accept_alpha`` and ``fuse.guard_*``)."""
        f = self.cfg.fuse
        return Acceptance(f.accept_alpha or 0.05, f.guard_share, f.guard_recall, tuple(self.bench.labels),
                          f.guard_recall_keep)

    def server_text_batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Calibration/distillation batches; the last quarter of server text is held out."""
        return [self.encoder.text_batch(c) for c in batches(self.heldout_split()[0], batch_size)]

    def heldout_split(self) -> tuple[list[str], list[str]]:
        texts = self.bench.server_text
        cut = max(1, (3 * len(texts)) // 4)
        return texts[:cut], texts[cut:] or texts[-1:]

    def restore_llm(self) -> None:
        """Undo whatever a method did to the shared LLM object."""
        load_params(self.llm, self.llm_state)

    def work_path(self, name: str) -> Path:
        """Where method ``name`` keeps its checkpoints (nothing is created)."""
        return self.out / "work" / name

    def method_dir(self, name: str) -> Path:
        """A method's checkpoint folder; emptied unless resuming, so stale state is never picked up."""
        path = self.work_path(name)
        if path.exists() and not self.resume:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path


def build_context(cfg: RunConfig, out: Path, resume: bool = False, progress: bool = True, cache=None,
                  server_only: bool = False) -> RunContext:
    """The run's shared state; ``server_only``: of your own data folder, only what the server owns
    (a Flower ServerApp's view, :func:`fedproxy.data.load_benchmark`)."""
    set_threads(cfg)
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    bench = load_benchmark(cfg.data, cfg.seed, cache, server_only=server_only)
    if cfg.model.source == "tiny":
        # The tiny LLM's word vocabulary: with your own data, from what the server owns only, so a
        # Flower server that never sees client files builds the same tokenizer as `fedproxy run`.
        client_side = [] if cfg.data.dir else [e for part in bench.train + bench.test for e in part]
        examples = client_side + bench.server_val
        words = {w for e in examples for w in (e.text + " " + " ".join(e.targets)).split()}
        words |= set(bench.labels) | set(bench.instruction.split()) | {bench.input_tag, bench.output_tag}
        words |= {w for t in bench.server_text for w in t.split()}
        tok = tiny_tokenizer(sorted(words))
        llm = tiny_model(cfg.model, len(tok), cfg.seed)
    else:
        llm, tok = load_pretrained(resolve_checkpoint(cfg.model.source, cache))
    llm = llm.to(device)
    for p in llm.parameters():
        p.requires_grad_(False)
    log.info("loaded %s and %s in %.1fs", cfg.model.source, bench.name, time.perf_counter() - t0)
    encoder = Encoder(tok, bench, cfg.data.max_length, cfg.data.max_answer)
    ctx = RunContext(cfg, bench, tok, encoder, llm, device, out, resume, progress)
    ctx.llm_state = snapshot(llm)
    return ctx
