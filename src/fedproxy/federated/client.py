"""Client side: fine-tune the proxy on private data and return only a parameter update."""

from __future__ import annotations

import copy
import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..aggregate.base import Delta
from ..aggregate.hties import pcr_penalty
from ..compress.base import split_block_key
from ..config import FedConfig
from ..data.benchmark import Example
from ..data.encode import Encoder, balanced_batches, infinite_batches
from ..errors import ConfigError, ModelError
from ..modeling import adamw, autocast, load_params
from ..objectives import label_loss


@dataclass
class ClientResult:
    """What a client sends back: an update (dense delta or LoRA factors) and scalar metrics."""

    update: Delta
    num_examples: int
    metrics: dict = field(default_factory=dict)
    kind: str = "dense"  # or "lora"


def trainable_names(model: torch.nn.Module, cfg: FedConfig, blocks_only: list[int] | None = None) -> list[str]:
    """Names of the parameters a client trains and ships.

    Blocks and the final norm by default; embeddings only when ``cfg.train_embeddings``.
    ``blocks_only`` restricts training to those block ids (Offsite-Tuning's adapter).
    """
    names = []
    for n, _ in model.named_parameters():
        parts = split_block_key(n)
        if parts is None:
            is_embed = "embed_tokens" in n or "lm_head" in n
            if blocks_only is None and (cfg.train_embeddings or not is_embed):
                names.append(n)
        elif blocks_only is None or parts[1] in blocks_only:
            names.append(n)
    return names


def prior_bias(examples: list[Example], encoder: Encoder, tau: float) -> dict[int, float]:
    """First label token -> ``tau * log(C * p_c)`` from the client's own label frequencies.

    Added to the logits in the loss (balanced softmax / FedLC's calibration), this lets the
    label prior explain the client's skew, so the update carries the class evidence and not
    the prior; a uniform client gets zeros. Add-one smoothing keeps unseen labels finite.
    Empty when ``tau`` is 0 or the labels share a first token (then nothing to adjust).
    """
    if tau == 0 or not encoder.first_token_scoring:
        return {}
    n_cls = len(encoder.label_tokens)
    counts = [1.0] * n_cls
    for e in examples:
        counts[e.label] += 1
    total = sum(counts)
    return {tok[0]: tau * math.log(n_cls * c / total) for tok, c in zip(encoder.label_tokens, counts)}


def class_tokens(encoder: Encoder, cfg: FedConfig) -> list[int] | None:
    """The classes' first tokens when ``fed.label_softmax=classes`` (:func:`label_loss`), else None."""
    if cfg.label_softmax != "classes":
        return None
    if not encoder.first_token_scoring:
        raise ConfigError("fed.label_softmax=classes needs labels whose first tokens differ, and two of this "
                          "benchmark's labels start with the same token; use fed.label_softmax=vocab")
    return [t[0] for t in encoder.label_tokens]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def local_train(model: torch.nn.Module, global_params: Delta, examples: list[Example], encoder: Encoder,
                cfg: FedConfig, device: torch.device, seed: int, bf16: bool = False,
                progress: str | None = None, opt_state: dict | None = None,
                conflict: Delta | None = None) -> ClientResult:
    """Run ``cfg.local_steps`` AdamW steps from ``global_params``; return the update.

    Full fine-tuning returns the dense delta of the trained tensors. With ``cfg.lora_r > 0``
    a peft LoRA adapter is trained on all linear layers of the blocks and only its factors
    are returned (see :func:`fedproxy.federated.lora.lora_to_dense`). ``opt_state`` (a
    stateful client's moments, :func:`saved_moments`, empty in its first round) is put into
    the fresh optimizer and updated in place with its state after training. With
    ``cfg.pcr_lambda`` and ``conflict`` (the server's per-coordinate sign conflict of the last
    round, :func:`fedproxy.aggregate.hties.conflict_score`) the loss adds the paper's
    conflict-weighted proximal term (PCR) towards ``global_params``.
    """
    load_params(model, global_params)
    names = list(global_params)
    if cfg.lora_r > 0:
        train_model, params = _lora_model(model, cfg, names)
    else:
        train_model = model
        own = dict(model.named_parameters())
        params = {n: own[n] for n in names}
        for n, p in model.named_parameters():
            p.requires_grad_(n in params)
    opt = adamw(params.values(), cfg.lr)
    if opt_state:
        restore_moments(opt, params, opt_state)
    terms = regularizers(cfg, train_model, params, global_params, conflict)
    bias = prior_bias(examples, encoder, cfg.logit_adjust)
    classes = class_tokens(encoder, cfg)
    rng = random.Random(seed)
    stream = (balanced_batches if cfg.balance_classes else infinite_batches)(examples, cfg.batch_size, rng)
    train_model.train()
    losses, tokens = [], 0
    t0 = time.perf_counter()
    for _ in tqdm(range(cfg.local_steps), desc=progress, disable=progress is None, leave=False):
        batch = encoder.batch(next(stream), with_label=True).to(device)
        # Before the forward, not after: the last step's gradients then never coexist with this
        # step's activations (each about the size of the trained tensors).
        opt.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            loss = label_loss(train_model, batch, bias, cfg.pack, classes)
        total = loss
        for _, weight, term in terms:
            total = total + weight * term()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        tokens += int(batch.attention_mask.sum())
    seconds = time.perf_counter() - t0
    if opt_state is not None:
        opt_state.clear()
        opt_state.update(saved_moments(opt, params))
    # Gradients and AdamW moments are three copies of the trained tensors; free them before the
    # update is built, so the client's peak is training's, not training's plus the update's.
    opt.zero_grad(set_to_none=True)
    del opt
    train_model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.lora_r > 0:
        update = {n: p.detach().float().cpu().clone() for n, p in params.items()}
    else:  # straight from the parameters: a snapshot first would be one more copy
        update = {n: params[n].detach().float().cpu() - global_params[n] for n in names}
    metrics = {"train_loss": sum(losses) / len(losses), "tokens_per_s": tokens / max(seconds, 1e-9),
               "train_seconds": seconds, "peak_rss_mb": peak_rss_mb(), "tokens": tokens,
               "examples_seen": cfg.local_steps * cfg.batch_size}
    return ClientResult(update, len(examples), metrics, kind="lora" if cfg.lora_r > 0 else "dense")


def regularizers(cfg: FedConfig, train_model, params: dict, global_params: Delta,
                 conflict: Delta | None) -> list[tuple[str, float, Callable[[], torch.Tensor]]]:
    """The client objective's additive terms, each (name, weight, term()), added to the label loss.

    - ``prox`` (``fed.prox_mu``, FedProx): mu/2 x ||theta - theta_global||², which keeps the
      update near the global model (full fine-tuning only: a LoRA client's factors start at 0);
    - ``pcr`` (``fed.pcr_lambda``, the paper's conflict-weighted proximal term):
      lambda x Σ C ⊙ (theta - theta_global)², from the last round's conflict ``conflict``.

    The label loss's own options (logit adjustment, the class softmax) shape the loss itself
    and live in :func:`fedproxy.objectives.label_loss`. A new term is one entry here.
    """
    terms = []
    if cfg.prox_mu > 0 and cfg.lora_r == 0:
        anchor = {n: global_params[n].to(p.device) for n, p in params.items()}
        terms.append(("prox", 0.5 * cfg.prox_mu,
                      lambda: sum((params[n] - anchor[n]).pow(2).sum() for n in params)))
    if cfg.pcr_lambda > 0 and conflict:
        terms.append(("pcr", cfg.pcr_lambda, _pcr_term(train_model, params, global_params, conflict, cfg)))
    return terms


def _pcr_term(train_model, params: dict, global_params: Delta, conflict: Delta, cfg: FedConfig):
    """A closure computing Σ C ⊙ (θ - θ_global)² over the trained tensors (PCR).

    Full fine-tuning: θ - θ_global is the parameter's change. LoRA: it is each adapted
    module's delta weight (scale x B @ A, peft's ``get_delta_weight``), the only change there.
    """
    if cfg.lora_r == 0:
        conf = {n: conflict[n].to(p.device) for n, p in params.items() if n in conflict}
        anchor = {n: global_params[n].to(params[n].device) for n in conf}
        return lambda: pcr_penalty({n: params[n] for n in conf}, anchor, conf)
    pairs = []
    for name, module in train_model.named_modules():
        key = name.removeprefix("base_model.model.") + ".weight"
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}) and key in conflict:
            pairs.append((module, conflict[key].to(next(module.parameters()).device)))
    return lambda: sum((c * m.get_delta_weight("default").pow(2)).sum() for m, c in pairs)


def saved_moments(opt: torch.optim.Optimizer, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat named tensors, ``<param>::<key>``.

    Flat so that a client can keep it as a Flower ``ArrayRecord`` in its context (or any
    tensor file); ``load_state_dict`` would need the nested, index-keyed layout.
    """
    return {f"{n}::{k}": v.detach() for n, p in params.items() for k, v in opt.state[p].items()}


def restore_moments(opt: torch.optim.Optimizer, params: dict[str, torch.Tensor],
                    moments: dict[str, torch.Tensor]) -> None:
    """Put :func:`saved_moments` back into a fresh optimizer over the same named parameters."""
    by_param: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in moments.items():
        name, _, field_ = key.partition("::")
        by_param.setdefault(name, {})[field_] = value
    if set(by_param) != set(params):
        missing, extra = sorted(set(params) - set(by_param)), sorted(set(by_param) - set(params))
        raise ModelError(f"the saved optimizer state does not match the trained tensors (missing {missing[:2]}, "
                         f"unexpected {extra[:2]}); it belongs to another model or run, so delete it to "
                         "restart the client's optimizer")
    for name, p in params.items():
        opt.state[p] = {k: v.to(p.device) for k, v in by_param[name].items()}


def _lora_model(model, cfg: FedConfig, names: list[str]):
    from peft import LoraConfig, get_peft_model

    from .lora import LORA_TARGETS

    # A throwaway copy: the shared proxy object must stay a plain model between clients.
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(
        r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, target_modules=list(LORA_TARGETS)))
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    return peft_model, params
