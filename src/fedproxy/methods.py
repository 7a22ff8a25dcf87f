"""Methods a run can compare, each a declarative :class:`Recipe`, and the one runner of them all.

A recipe says which model the clients get, which tensors train on which data, how the server
merges the updates and how the result reaches the LLM. :func:`run_recipe` turns that into the
library's stages (:mod:`fedproxy.compress`, :mod:`fedproxy.federated`, :mod:`fedproxy.fuse`,
:mod:`fedproxy.pooled`), so a new baseline is one short file that registers a recipe.
FedProxy and its diagnostics are declared here; the published baselines in :mod:`fedproxy.baselines`.
"""

from __future__ import annotations

import dataclasses
import random
import time

from .compress import save_proxy
from .compress.base import ProxyMap, build_proxy
from .compress.distill import distill
from .compress.emulator import adapter_size, ot_keep
from .config import FedConfig
from .context import RunContext
from .errors import ConfigError
from .federated import run_federation, trainable_names
from .federated.client import class_tokens
from .fuse import save_fused
from .fuse.align import align_delta, input_grams
from .modeling import blocks, load_params, snapshot
from .pooled import kept_block_names, pooled_finetune
from .proxies import choose_plugin, make_proxy, proxy_test_eval, round_monitor
from .registry import Registry

# What the clients get: nothing (the LLM as shipped), FedProxy's compressed proxy, an
# undistilled uniform layer drop, Offsite-Tuning's adapter around a layer-dropped emulator,
# or the whole LLM (no IP protection).
CLIENT_MODELS = ("nothing", "proxy", "layer-drop", "emulator", "llm")
# Which tensors train: those fed.* names in what the clients get, only the adapter's blocks,
# LoRA factors of the whole LLM, every trainable LLM tensor, or the LLM blocks the proxy keeps.
TRAINS = ("nothing", "all", "adapter", "lora", "kept-blocks")
DATA = ("none", "federated", "pooled")
# How the clients train and the server merges: the run's fed.* as configured (aggregator and
# client extras), or plain FedAvg as the baselines' papers run it (FedConfig.plain).
OPTIMIZATION = ("run", "plain")
# How the result reaches the LLM: the plug-in chosen on server validation among fuse.variants x
# fuse.scales (and aligned deltas with fuse.align); among fuse.scales at the source blocks only;
# the source blocks at x1 without a choice; or none (the LLM itself was trained).
FUSIONS = ("none", "select", "scale", "source-x1")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A method, declared. Validated on creation; :func:`run_recipe` runs it."""

    name: str
    clients_get: str = "proxy"
    trains: str = "all"
    data: str = "federated"
    optimization: str = "run"
    fusion: str = "select"
    distilled: bool = True  # the emulator (clients_get='emulator') is distilled around its adapter
    save: bool = False  # keep the proxy before/after and the fused LLM in the run's work folder

    def __post_init__(self) -> None:
        for field, allowed in (("clients_get", CLIENT_MODELS), ("trains", TRAINS), ("data", DATA),
                               ("optimization", OPTIMIZATION), ("fusion", FUSIONS)):
            if getattr(self, field) not in allowed:
                raise ConfigError(f"recipe '{self.name}': {field}={getattr(self, field)!r}, choose one of {allowed}")
        nothing = (self.clients_get == "nothing", self.trains == "nothing", self.data == "none")
        if any(nothing) and not all(nothing):
            raise ConfigError(f"recipe '{self.name}': clients_get='nothing', trains='nothing' and data='none' "
                              "go together (the LLM as shipped)")
        direct = self.clients_get == "llm" and self.data == "pooled"
        if (self.fusion == "none") != (direct or all(nothing)):
            raise ConfigError(f"recipe '{self.name}': fusion='none' exactly when the LLM itself is trained on pooled "
                              "data (clients_get='llm', data='pooled') or shipped as it is")
        if (self.trains == "kept-blocks" and not direct) or (direct and self.trains not in ("all", "kept-blocks")):
            raise ConfigError(f"recipe '{self.name}': pooled training of the LLM itself trains 'all' or "
                              "'kept-blocks', and 'kept-blocks' only there")
        if direct and self.optimization != "plain":
            raise ConfigError(f"recipe '{self.name}': the LLM trained on pooled data uses plain optimization "
                              "(fedproxy.pooled: AdamW at fed.centralized_lr, early stopping on validation)")
        if (self.trains == "adapter") != (self.clients_get == "emulator"):
            raise ConfigError(f"recipe '{self.name}': the adapter trains exactly when the clients get the emulator")
        if self.trains == "lora" and self.clients_get != "llm":
            raise ConfigError(f"recipe '{self.name}': trains='lora' is LoRA on the whole LLM (clients_get='llm'); "
                              "LoRA on a proxy is fed.lora_r with trains='all'")


METHODS: Registry = Registry("method")


def register(recipe: Recipe) -> Recipe:
    """Make ``recipe`` a method of ``fedproxy run`` (``methods=[...]``) under its name."""
    return METHODS.register(recipe.name)(recipe)


def run_recipe(ctx: RunContext, recipe: Recipe) -> dict:
    """Run ``recipe`` on this run's data and LLM; the method's result (scores on every client's test split)."""
    if recipe.data == "none":
        t0 = time.perf_counter()
        return {**ctx.llm_eval("test"), "wall_seconds": time.perf_counter() - t0, "trainable_params": 0}
    if recipe.fusion == "none":  # the LLM's own tensors, trained on the pooled data
        work = ctx.method_dir(recipe.name)
        if recipe.trains == "kept-blocks":
            names, kept = kept_block_names(ctx)
            return {**pooled_finetune(ctx, names, work), "kept_blocks": kept}
        return pooled_finetune(ctx, trainable_names(ctx.llm, ctx.cfg.fed), work)
    return _through_clients(ctx, recipe)


def _fed(ctx: RunContext, recipe: Recipe) -> FedConfig:
    """The client/server optimization config of ``recipe`` (pooled: one client holding every example)."""
    c = ctx.cfg
    lora = {"lora": {"lora_r": c.fed.lora_r or 8}, "adapter": {"lora_r": 0}}.get(recipe.trains, {})
    fed = dataclasses.replace(c.fed if recipe.optimization == "run" else c.fed.plain(), **lora)
    if recipe.data == "pooled":
        pooled_only = {"fraction": 1.0, "min_clients": 1, "dp_noise": 0.0, "dp_clip": 0.0, "max_update_norm": 0.0}
        clients = len(ctx.bench.train)
        if c.fed.patience:  # stretches of one round's examples, one continuous optimizer: early stopping as federated
            fed = dataclasses.replace(fed, local_steps=c.fed.local_steps * clients, keep_optimizer_state=True,
                                      wire_dtype="float32", curve=False, **pooled_only)
        else:
            fed = dataclasses.replace(fed, rounds=1, local_steps=c.fed.rounds * c.fed.local_steps * clients,
                                      **pooled_only)
    return fed


def fusion_settings(ctx: RunContext, recipe: Recipe) -> dict:
    """How ``recipe`` fuses: the candidate variants and scales, the aligned fit's ridge, whether the LLM competes."""
    f = ctx.cfg.fuse
    if recipe.fusion == "select":
        return {"variants": f.variants, "scales": f.scales, "align_ridge": f.align_ridge if f.align else None,
                "keep_llm": f.keep_llm}
    if recipe.fusion == "scale":
        return {"variants": ["source"], "scales": f.scales, "align_ridge": None, "keep_llm": f.keep_llm}
    return {"variants": ["source"], "scales": [1.0], "align_ridge": None, "keep_llm": False}


def _compression(ctx: RunContext, recipe: Recipe):
    """How a proxy-like client model is compressed: FedProxy's settings, or an undistilled uniform drop."""
    c = ctx.cfg.compress
    return c if recipe.clients_get == "proxy" else dataclasses.replace(c, method="uniform", distill_steps=0)


def _client_model(ctx: RunContext, recipe: Recipe, work):
    """The model the clients get, its map onto the LLM, a summary, and the blocks that train (None: all)."""
    c, n = ctx.cfg, len(blocks(ctx.llm))
    if recipe.clients_get in ("proxy", "layer-drop"):
        return (*make_proxy(ctx, _compression(ctx, recipe), work), None)
    if recipe.clients_get == "llm":  # the "proxy" is the LLM itself (identity map): fusion applies the delta
        keep, only = list(range(n)), None
    else:  # Offsite-Tuning's emulator: adapter blocks at both ends around a uniform drop of the middle
        keep, a = ot_keep(n, c.compress.keep_ratio), adapter_size(n)
        only = list(range(a)) + list(range(len(keep) - a, len(keep)))
    proxy = build_proxy(ctx.llm, keep).to(ctx.device)
    pmap = ProxyMap(n, keep, ctx.llm.config.model_type, "fixed")
    info = {"method": "fixed", "keep": keep}
    if recipe.clients_get == "emulator" and recipe.distilled and c.compress.distill_steps > 0:
        history = distill(proxy, ctx.llm, pmap, ctx.server_text_batches(c.compress.distill_batch), c.compress,
                          ctx.device, c.seed, ctx.bf16, ckpt_dir=work, progress=ctx.progress, frozen_blocks=only)
        info.update(emulator_distilled=True, distill_loss_first=history[0], distill_loss_last=history[-1])
    return proxy, pmap, info, only


def _through_clients(ctx: RunContext, recipe: Recipe) -> dict:
    """Train the model the clients get (federated, or on one pooled shard), fuse it into the LLM, evaluate."""
    t0 = time.perf_counter()
    fed_cfg, fusion = _fed(ctx, recipe), fusion_settings(ctx, recipe)
    class_tokens(ctx.encoder, fed_cfg)  # a config this benchmark cannot train fails before compression
    work = ctx.method_dir(recipe.name)
    proxy, pmap, comp_info, blocks_only = _client_model(ctx, recipe, work)
    proxy_before = (proxy_test_eval(ctx, proxy, _compression(ctx, recipe))
                    if recipe.clients_get in ("proxy", "layer-drop") else ctx.evaluate(proxy))
    keep_files = recipe.save and blocks_only is None
    if keep_files:  # the base proxy, so `fedproxy fuse --proxy proxy --tuned proxy_tuned` can redo stage 3
        save_proxy(proxy, pmap, work / "proxy", ctx.tokenizer)
    monitor = round_monitor(ctx, proxy, pmap, fed_cfg, fused_is_proxy=recipe.clients_get == "llm")
    if fed_cfg.engine == "simulation" and recipe.data == "federated":
        from .flower_app import simulate  # Flower and Ray load only when asked for

        run_cfg = dataclasses.replace(ctx.cfg, fed=fed_cfg)
        server = simulate(run_cfg, proxy, ctx.tokenizer, len(ctx.bench.train), work / "flower", ctx.resume,
                          blocks_only, monitor, ctx.acceptance())
    else:
        shards = ctx.bench.train
        if recipe.data == "pooled":
            pooled = [e for part in ctx.bench.train for e in part]
            random.Random(ctx.cfg.seed).shuffle(pooled)
            shards = [pooled]
        names = trainable_names(proxy, fed_cfg, blocks_only)
        server = run_federation(proxy, snapshot(proxy, names), shards, ctx.encoder, fed_cfg, ctx.device,
                                ctx.cfg.seed, ctx.bf16, ckpt_dir=work, resume=ctx.resume, progress=ctx.progress,
                                desc=f"{recipe.name}: rounds", monitor=monitor, guard=ctx.acceptance())
    delta = server.total_delta()
    aligned, t_align = None, time.perf_counter()
    if fusion["align_ridge"] is not None:  # input statistics of the proxy as sent, before any client trained it
        load_params(proxy, server.initial)
        grams = input_grams(proxy, ctx.llm, pmap, ctx.server_text_batches(ctx.cfg.compress.distill_batch))
        aligned = align_delta(delta, grams, fusion["align_ridge"])
        del grams
    t_align = time.perf_counter() - t_align
    load_params(proxy, server.result())
    proxy_after = ctx.evaluate(proxy)
    if keep_files:
        save_proxy(proxy, pmap, work / "proxy_tuned", ctx.tokenizer)
    t_fuse = time.perf_counter()
    plugin, trials = choose_plugin(ctx, delta, pmap, fusion["variants"], fusion["scales"], aligned,
                                   fusion["keep_llm"])
    t_fuse = time.perf_counter() - t_fuse
    fused = ctx.llm_eval("test") if plugin["scale"] == 0 else ctx.evaluate(ctx.llm)
    if recipe.save:
        save_fused(ctx.llm, ctx.tokenizer, {**plugin, "proxy_map": pmap.keep, "method": recipe.name},
                   work / "fused_llm")
    ctx.restore_llm()
    out = {
        **fused,
        "wall_seconds": time.perf_counter() - t0,
        "trainable_params": sum(v.numel() for v in server.initial.values()),
        "compression": comp_info,
        "proxy_before_fl": proxy_before,
        "proxy_after_fl": proxy_after,
        "fusion": {**plugin, "trials": trials, "seconds": t_fuse + t_align},
        "federation": server.summary(),
    }
    if recipe.clients_get == "emulator":
        out["emulator_distilled"] = bool(comp_info.get("emulator_distilled"))
    return out


register(Recipe("fedproxy", clients_get="proxy", trains="all", data="federated", optimization="run",
                fusion="select", save=True))
# FedProxy's compression and fusion with the proxy trained on pooled data, no federation: the gap
# to ``fedproxy`` is what federated (non-IID) training costs, the gap to ``centralized`` what the
# proxy and the plug-in lose. Same examples seen and learning rate as the federated run.
register(Recipe("proxy-centralized", clients_get="proxy", trains="all", data="pooled", optimization="plain",
                fusion="select"))
# Uniform drop, no distillation, FedAvg, deltas added to the source blocks at x1.
register(Recipe("naive-plugin", clients_get="layer-drop", trains="all", data="federated", optimization="plain",
                fusion="source-x1"))
