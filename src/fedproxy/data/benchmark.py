"""Benchmark container and registry."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..registry import Registry


@dataclass(frozen=True)
class Example:
    """One example: ``text`` and its class ``label`` (classification), or ``text`` and its reference
    answers ``targets`` (generation; the first is trained on, any of them counts as right)."""

    text: str
    label: int
    domain: str
    targets: tuple[str, ...] = ()


@dataclass
class Benchmark:
    """Everything a run needs: per-client train/test data plus server-side material.

    ``server_val`` is a small labelled set the server owns (used only to choose the fusion
    scale); ``server_text`` is public unlabelled text for calibration and distillation.
    Neither overlaps client data.
    """

    name: str
    labels: list[str]
    instruction: str
    client_names: list[str]
    train: list[list[Example]]
    test: list[list[Example]]
    server_val: list[Example]
    server_text: list[str]
    meta: dict = field(default_factory=dict)
    # How a prompt is laid out (fedproxy.data.encode.Encoder): instruction, then the input after
    # ``input_tag``, then ``output_tag``, and the label or answer as the continuation.
    input_tag: str = "Text:"
    output_tag: str = "Sentiment:"
    task: str = "classification"  # or "generation": ``labels`` is empty, examples carry ``targets``

    @property
    def metric(self) -> str:
        """The headline score: accuracy (classification) or token F1 (generation)."""
        return "accuracy" if self.task == "classification" else "f1"

    # What a client needs to read and encode its own examples (the classes, the prompt layout), and
    # nothing of anyone's data: the server sends it to SuperNodes that bring their own folder.
    _SPEC = ("name", "labels", "instruction", "input_tag", "output_tag", "task")

    def task_spec(self) -> dict:
        return {k: getattr(self, k) for k in self._SPEC}

    @classmethod
    def from_spec(cls, spec: dict) -> "Benchmark":
        """A benchmark with the task of ``spec`` (:meth:`task_spec`) and no examples yet."""
        return cls(**{k: spec[k] for k in cls._SPEC}, client_names=[], train=[], test=[], server_val=[],
                   server_text=[])

    def label_counts(self, examples: list[Example]) -> dict[str, int]:
        if self.task != "classification":
            return {}
        return {self.labels[k]: v for k, v in sorted(Counter(e.label for e in examples).items())}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "metric": self.metric,
            "labels": self.labels,
            "clients": [
                {"name": n, "train": len(tr), "test": len(te), "train_label_counts": self.label_counts(tr),
                 "test_label_counts": self.label_counts(te)}
                for n, tr, te in zip(self.client_names, self.train, self.test)
            ],
            "server_val": len(self.server_val),
            # what the fusion scale is chosen on: a label mix unlike the test splits' misleads it
            "server_val_label_counts": self.label_counts(self.server_val),
            "server_text": len(self.server_text),
            **self.meta,
        }


BENCHMARKS: Registry = Registry("benchmark")
