"""The proxy map and proxy construction shared by all compressors."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..errors import ModelError
from ..modeling import blocks, check_supported, set_blocks
from ..registry import Registry

BLOCK_PREFIXES = ("model.layers.", "model.language_model.layers.")

# A selector: (llm, calibration batches, n_keep, config, device) -> (kept block ids, per-block scores)
SELECTORS: Registry = Registry("compressor")


@dataclass
class ProxyMap:
    """Which LLM block(s) each proxy block stands for; what fusion reads.

    ``keep[j]`` is the LLM block proxy block ``j`` was copied from. ``spans[j]`` lists the
    LLM blocks it stands for: its source plus the dropped blocks up to the next kept one.
    """

    llm_num_layers: int
    keep: list[int]
    model_type: str
    method: str
    scores: list[float] = field(default_factory=list)
    distilled: bool = False

    def __post_init__(self) -> None:
        if not self.keep:
            raise ModelError("proxy map keeps no blocks")
        if sorted(set(self.keep)) != list(self.keep):
            raise ModelError(f"proxy map 'keep' must be strictly increasing block ids, got {self.keep}")
        if self.keep[0] < 0 or self.keep[-1] >= self.llm_num_layers:
            raise ModelError(f"proxy map refers to blocks {self.keep} outside an LLM of {self.llm_num_layers} blocks")

    @property
    def spans(self) -> list[list[int]]:
        bounds = self.keep[1:] + [self.llm_num_layers]
        spans = [list(range(k, b)) for k, b in zip(self.keep, bounds)]
        spans[0] = list(range(0, self.keep[0])) + spans[0]  # blocks dropped below the first kept one
        return spans

    @property
    def schedule(self) -> list[int]:
        """The proxy block that runs at each LLM depth under layer sharing (``compress.share_layers``)."""
        return [j for j, span in enumerate(self.spans) for _ in span]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "spans": self.spans}, indent=2))

    def check_llm(self, llm: nn.Module) -> None:
        """Fail clearly when this map was made from a different LLM."""
        n, kind = len(blocks(llm)), llm.config.model_type
        if (n, kind) != (self.llm_num_layers, self.model_type):
            raise ModelError(f"proxy map was made from a {self.model_type} LLM of {self.llm_num_layers} blocks, but "
                             f"this LLM is a {kind} of {n} blocks; use a proxy compressed from this LLM")

    @classmethod
    def load(cls, path: Path) -> "ProxyMap":
        try:
            data = json.loads(Path(path).read_text())
            data.pop("spans", None)
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ModelError(f"cannot read proxy map {path}: {err}") from None


def split_block_key(key: str) -> tuple[str, int, str] | None:
    """'model.layers.7.mlp.up_proj.weight' -> ('model.layers.', 7, 'mlp.up_proj.weight')."""
    for prefix in BLOCK_PREFIXES:
        if key.startswith(prefix):
            idx, _, rest = key[len(prefix):].partition(".")
            return prefix, int(idx), rest
    return None


def build_proxy(llm: nn.Module, keep: list[int]) -> nn.Module:
    """A standalone copy of ``llm`` holding only blocks ``keep`` (a normal HF model)."""
    check_supported(llm)
    n = len(blocks(llm))
    if not keep or any(not 0 <= k < n for k in keep):
        raise ModelError(f"cannot keep blocks {keep} of an LLM with {n} blocks")
    proxy = copy.deepcopy(llm)
    layers = blocks(proxy)
    kept = nn.ModuleList([layers[k] for k in keep])
    for j, block in enumerate(kept):
        attn = getattr(block, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = j  # KV-cache slots are indexed by position in the new stack
    set_blocks(proxy, kept)
    cfg = proxy.config.get_text_config() if hasattr(proxy.config, "get_text_config") else proxy.config
    for c in {id(proxy.config): proxy.config, id(cfg): cfg}.values():
        c.num_hidden_layers = len(keep)
        if isinstance(getattr(c, "layer_types", None), list):
            c.layer_types = [c.layer_types[k] for k in keep]
    return proxy


def n_keep_from(cfg, num_layers: int) -> int:
    n = cfg.num_layers or max(1, round(cfg.keep_ratio * num_layers))
    if n > num_layers:
        raise ModelError(f"compress.num_layers={n} exceeds the LLM's {num_layers} blocks")
    if n < cfg.keep_first + cfg.keep_last:
        raise ModelError(
            f"proxy of {n} blocks cannot hold keep_first={cfg.keep_first} + keep_last={cfg.keep_last} blocks"
        )
    return n


def top_k_with_anchors(scores: list[float], n_keep: int, keep_first: int, keep_last: int) -> list[int]:
    """The ``n_keep`` highest-scoring blocks, always including the anchored bottom/top ones."""
    n = len(scores)
    forced = set(range(keep_first)) | set(range(n - keep_last, n))
    rest = sorted((i for i in range(n) if i not in forced), key=lambda i: -scores[i])
    return sorted(forced | set(rest[: n_keep - len(forced)]))
