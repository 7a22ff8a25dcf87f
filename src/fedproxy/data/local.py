"""Your own data: a folder of JSON-lines files, one sub-folder per client (``data.dir``, ``--data``).

Layout::

    DIR/clients/<name>/train.jsonl   one example per line
    DIR/clients/<name>/test.jsonl
    DIR/server/val.jsonl             labelled examples the server owns (the plug-in's acceptance test)
    DIR/server/text.jsonl            optional: public text for compression, {"text": ...} per line
    DIR/labels.json                  optional: the class names, in order (else the union, sorted)
    DIR/instruction.txt              optional: the instruction before every input

A line is ``{"text": ..., "label": ...}`` (classification) or ``{"prompt": ..., "completion": ...}``
(generation; ``completion`` may be a list of references). Client names are the folder names. Every
problem is reported with its file and line, and nothing is trained before the whole folder reads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..errors import DataError
from .benchmark import Benchmark, Example

KINDS = {"classification": ("text", "label"), "generation": ("prompt", "completion")}


def _read(path: Path, kind: str | None) -> tuple[list[dict], str]:
    """The lines of ``path`` as dicts, and the kind they share (checked against ``kind`` if given)."""
    if not path.is_file():
        raise DataError(f"{path}: missing; every client needs train.jsonl and test.jsonl, the server val.jsonl")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: a line must be a JSON object, got {type(row).__name__}")
        line_kind = next((k for k, (a, _) in KINDS.items() if a in row), None)
        if line_kind is None:
            raise DataError(f"{path}:{n}: no 'text' (classification) or 'prompt' (generation) field")
        missing = [f for f in KINDS[line_kind] if f not in row]
        if missing:
            raise DataError(f"{path}:{n}: missing field '{missing[0]}' (a {line_kind} line has "
                            f"{' and '.join(repr(f) for f in KINDS[line_kind])})")
        if kind is not None and line_kind != kind:
            raise DataError(f"{path}:{n}: a {line_kind} line in a {kind} dataset; use one kind of line throughout")
        kind = line_kind
        rows.append({"line": n, **row})
    if not rows:
        raise DataError(f"{path}: empty; it needs at least one example")
    return rows, kind


def _examples(path: Path, rows: list[dict], kind: str, labels: list[str] | None, domain: str) -> list[Example]:
    out = []
    for row in rows:
        if kind == "classification":
            label = str(row["label"])
            if label not in labels:
                raise DataError(f"{path}:{row['line']}: label {label!r} is not one of the declared labels "
                                f"{labels}; declare every class in labels.json")
            out.append(Example(str(row["text"]), labels.index(label), domain))
        else:
            refs = row["completion"] if isinstance(row["completion"], list) else [row["completion"]]
            refs = tuple(str(r).strip() for r in refs if str(r).strip())
            if not refs:
                raise DataError(f"{path}:{row['line']}: empty completion")
            out.append(Example(str(row["prompt"]), -1, domain, refs))
    return out


def _client(folder: Path, kind: str | None) -> tuple[dict[str, tuple[Path, list[dict]]], str]:
    """One client folder's train and test lines (and the kind they share)."""
    out = {}
    for split in ("train", "test"):
        path = folder / f"{split}.jsonl"
        if split == "test" and not path.is_file():
            raise DataError(f"{path}: missing; client '{folder.name}' has no test data (every client is scored on "
                            "its own test.jsonl)")
        rows, kind = _read(path, kind)
        out[split] = (path, rows)
    return out, kind


def _text(path: Path) -> list[str]:
    texts = []
    if path.is_file():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    texts.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{n}: each line must be {{\"text\": ...}}") from None
    return texts


def load_local(root: Path, seed: int, server_only: bool = False) -> Benchmark:
    """The folder ``root`` as a :class:`Benchmark` (all its examples; ``data.*`` sizes do not apply).

    ``server_only``: read what the server owns and nothing else (``server/``, ``labels.json``,
    ``instruction.txt``), as a Flower ServerApp does: no clients; without ``labels.json`` the
    classes are those of ``server/val.jsonl``.
    """
    root = Path(root)
    clients_dir = root / "clients"
    names: list[str] = []
    if not server_only:
        if not clients_dir.is_dir():
            raise DataError(f"{root}: no clients/ folder; put each client's train.jsonl and test.jsonl in "
                            f"{clients_dir}/<name>/")
        names = sorted(p.name for p in clients_dir.iterdir() if p.is_dir())
        if not names:
            raise DataError(f"{clients_dir}: no client folders")
    kind = None
    raw: dict[tuple[str, str], tuple[Path, list[dict]]] = {}
    for name in names:
        splits, kind = _client(clients_dir / name, kind)
        raw |= {(name, split): v for split, v in splits.items()}
    val_path = root / "server" / "val.jsonl"
    val_rows, kind = _read(val_path, kind)
    labels = None
    if kind == "classification":
        labels_path = root / "labels.json"
        if labels_path.is_file():
            try:
                labels = [str(x) for x in json.loads(labels_path.read_text())]
            except (json.JSONDecodeError, TypeError):
                raise DataError(f"{labels_path}: must be a JSON list of class names") from None
        else:
            labels = sorted({str(r["label"]) for _, rows in [*raw.values(), (val_path, val_rows)] for r in rows})
        if len(labels) < 2:
            raise DataError(f"{root}: classification needs at least two labels, found {labels}")
    data = {key: _examples(path, rows, kind, labels, key[0]) for key, (path, rows) in raw.items()}
    server_text = _text(root / "server" / "text.jsonl")
    instruction_path = root / "instruction.txt"
    instruction = instruction_path.read_text().strip() if instruction_path.is_file() else (
        f"Classify the text as one of: {', '.join(labels)}." if kind == "classification"
        else "Answer in a few words.")
    random.Random(seed).shuffle(server_text)
    return Benchmark(
        name=root.name, labels=labels or [], instruction=instruction, client_names=names,
        train=[data[(n, "train")] for n in names], test=[data[(n, "test")] for n in names],
        server_val=_examples(val_path, val_rows, kind, labels, "server"), server_text=server_text,
        meta={"source": str(root), "seed": seed, "server_text_given": bool(server_text)},
        input_tag="Input:", output_tag="Label:" if kind == "classification" else "Answer:", task=kind)


def load_client(folder: Path, task: dict) -> Benchmark:
    """One client's own folder (``train.jsonl``, ``test.jsonl``), read against the server's ``task``
    (:meth:`Benchmark.task_spec`): what a SuperNode with ``--node-config data-dir=...`` trains on.

    A label outside the server's classes, or a line of the other kind, is an error naming its file
    and line, as in :func:`load_local`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; node config data-dir must name this client's folder "
                        "(with train.jsonl and test.jsonl)")
    bench = Benchmark.from_spec(task)
    splits, _ = _client(folder, bench.task)
    labels = bench.labels if bench.task == "classification" else None
    train, test = (_examples(path, rows, bench.task, labels, folder.name) for path, rows in splits.values())
    bench.client_names, bench.train, bench.test = [folder.name], [train], [test]
    return bench
