"""Stage 1: compress the LLM into a proxy small LM, guided by server-side text.

``compress()`` picks blocks with a registered selector, builds the proxy, distils it
towards the LLM and returns it with its :class:`ProxyMap`. A new selector is one file with
``@SELECTORS.register("name")``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import CompressConfig
from ..modeling import apply_layer_schedule, blocks, check_supported, load_pretrained, param_count
from . import block_influence, loss_drop, uniform  # noqa: F401  (registration)
from .base import SELECTORS, ProxyMap, build_proxy, n_keep_from, split_block_key
from .distill import distill

__all__ = ["SELECTORS", "ProxyMap", "CompressResult", "build_proxy", "compress", "load_proxy", "save_proxy",
           "select_blocks", "split_block_key"]


@dataclass
class CompressResult:
    proxy: torch.nn.Module
    pmap: ProxyMap
    info: dict = field(default_factory=dict)


def select_blocks(llm, text_batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: CompressConfig,
                  device: torch.device) -> ProxyMap:
    """Which LLM blocks the proxy keeps (the map, before any distillation), chosen on server text."""
    check_supported(llm)
    n_layers = len(blocks(llm))
    calib = text_batches[: max(1, len(text_batches) // 2)]
    keep, scores = SELECTORS.get(cfg.method)(llm, calib, n_keep_from(cfg, n_layers), cfg, device)
    return ProxyMap(n_layers, keep, llm.config.model_type, cfg.method, [float(s) for s in scores])


def compress(llm, text_batches: list[tuple[torch.Tensor, torch.Tensor]], cfg: CompressConfig,
             device: torch.device, seed: int, bf16: bool = False, ckpt_dir: Path | None = None,
             progress: bool = True) -> CompressResult:
    """Select blocks on ``text_batches`` (server text), build and distil the proxy."""
    t0 = time.perf_counter()
    pmap = select_blocks(llm, text_batches, cfg, device)
    keep = pmap.keep
    t_select = time.perf_counter() - t0
    proxy = build_proxy(llm, keep).to(device)
    if cfg.share_layers:
        apply_layer_schedule(proxy, pmap.schedule)
    history: list[float] = []
    if cfg.distill_steps > 0:
        history = distill(proxy, llm, pmap, text_batches, cfg, device, seed, bf16, ckpt_dir, progress)
        pmap.distilled = True
    return CompressResult(proxy, pmap, {
        "method": cfg.method,
        "keep": keep,
        "block_scores": pmap.scores,
        "llm_params": param_count(llm),
        "proxy_params": param_count(proxy),
        "compression_ratio": param_count(llm) / param_count(proxy),
        "select_seconds": t_select,
        "total_seconds": time.perf_counter() - t0,
        "distill_loss_first": history[0] if history else None,
        "distill_loss_last": history[-1] if history else None,
    })


def save_proxy(proxy: torch.nn.Module, pmap: ProxyMap, out: Path, tokenizer=None) -> Path:
    """A Hugging Face directory loadable by AutoModelForCausalLM, plus proxy_map.json."""
    out.mkdir(parents=True, exist_ok=True)
    proxy.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    pmap.save(out / "proxy_map.json")
    return out


def load_proxy(path: Path) -> tuple[torch.nn.Module, ProxyMap]:
    model, _ = load_pretrained(path)
    return model, ProxyMap.load(Path(path) / "proxy_map.json")
