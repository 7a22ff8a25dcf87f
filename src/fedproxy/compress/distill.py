"""Align the proxy to the LLM on server text: logit KL + hidden-state matching at mapped layers."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import checkpoint
from ..config import CompressConfig
from ..modeling import LAYER_SCHEDULE, adamw, autocast, backbone
from ..objectives import head_logits
from .base import ProxyMap, split_block_key


def trainable_block_params(model) -> dict[str, torch.nn.Parameter]:
    """Block and final-norm parameters; embeddings stay shared with the LLM."""
    return {n: p for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n}


def distill(proxy, llm, pmap: ProxyMap, text_batches: list[tuple[torch.Tensor, torch.Tensor]],
            cfg: CompressConfig, device: torch.device, seed: int, bf16: bool = False,
            ckpt_dir: Path | None = None, progress: bool = True,
            frozen_blocks: list[int] | None = None) -> list[float]:
    """Train ``proxy`` in place; returns the loss history. Resumes from ``ckpt_dir`` if present.

    ``frozen_blocks`` (proxy block ids) stay as they are, with the final norm: Offsite-Tuning
    distils only its emulator, around adapter blocks that remain the LLM's own.
    """
    params = trainable_block_params(proxy)
    if frozen_blocks is not None:
        params = {n: p for n, p in params.items()
                  if (parts := split_block_key(n)) is not None and parts[1] not in frozen_blocks}
    for n, p in proxy.named_parameters():
        p.requires_grad_(n in params)
    opt = adamw(params.values(), cfg.distill_lr)
    rng = random.Random(seed)
    start, history = 0, []
    ckpt = ckpt_dir / "distill.pt" if ckpt_dir else None
    if ckpt and (state := checkpoint.load(ckpt)) is not None:
        proxy.load_state_dict(state["params"], strict=False)
        opt.load_state_dict(state["opt"])
        start, history = state["step"], state["history"]
        rng.setstate(state["rng"])
    # Teacher position of proxy block j's output: the input of the next kept LLM block. A proxy under
    # layer sharing runs at the LLM's depth, so its hidden states line up with the teacher's one to one.
    teacher_idx = pmap.keep[1:]
    scheduled = getattr(proxy.config, LAYER_SCHEDULE, None) is not None
    student_idx = teacher_idx if scheduled else list(range(1, len(teacher_idx) + 1))
    llm.eval()
    proxy.train()
    t = cfg.temperature
    final_state = cfg.distill_target == "final-hidden"
    # KL on a sampled share of the positions (compress.kl_positions < 1): the backbones run on every
    # position, the LM head (the part of a step that grows with the vocabulary) only where sampled.
    sampled = not final_state and cfg.kl_positions < 1.0
    bar = tqdm(range(start, cfg.distill_steps), desc="distill proxy", disable=not progress, initial=start,
               total=cfg.distill_steps)
    for step in bar:
        ids, mask = text_batches[rng.randrange(len(text_batches))]
        ids, mask = ids.to(device), mask.to(device)
        valid = mask.bool()
        opt.zero_grad(set_to_none=True)  # before the forwards: see fedproxy.federated.client.local_train
        # final-hidden: run the backbones only (the LM head is the share of a step that grows with the vocabulary)
        teacher, student = (backbone(llm), backbone(proxy)) if final_state or sampled else (llm, proxy)
        with torch.no_grad(), autocast(device, bf16):
            tout = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        with autocast(device, bf16):
            sout = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        if final_state:
            th, sh = tout.last_hidden_state[valid].float(), sout.last_hidden_state[valid].float()
            loss = cfg.kl_weight * F.mse_loss(sh, th) / th.pow(2).mean().clamp_min(1e-6)
        else:
            if sampled:
                n = int(valid.sum())
                gen = torch.Generator().manual_seed(seed * 100_003 + step)  # the same draw after a resume
                pick = torch.randperm(n, generator=gen)[: max(1, round(cfg.kl_positions * n))].to(device)
                with torch.no_grad():
                    t_logits = head_logits(llm, tout.last_hidden_state[valid][pick]) / t
                s_logits = head_logits(proxy, sout.last_hidden_state[valid][pick]) / t
            else:
                s_logits, t_logits = sout.logits[valid].float() / t, tout.logits[valid].float() / t
            loss = cfg.kl_weight * F.kl_div(s_logits.log_softmax(-1), t_logits.log_softmax(-1), log_target=True,
                                            reduction="batchmean") * t * t
        if cfg.hidden_weight > 0 and teacher_idx:
            hid = 0.0
            for ti, si in zip(teacher_idx, student_idx):
                th, sh = tout.hidden_states[ti][valid].float(), sout.hidden_states[si][valid].float()
                # Normalised by the teacher's scale: residual streams grow with depth.
                hid = hid + F.mse_loss(sh, th) / th.pow(2).mean().clamp_min(1e-6)
            loss = loss + cfg.hidden_weight * hid / len(teacher_idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        opt.step()
        history.append(float(loss.detach()))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
        if ckpt and ((step + 1) % 10 == 0 or step + 1 == cfg.distill_steps):
            checkpoint.save({"params": {n: p.detach().cpu() for n, p in params.items()}, "opt": opt.state_dict(),
                             "step": step + 1, "history": history, "rng": rng.getstate()}, ckpt)
    proxy.eval()
    for p in proxy.parameters():
        p.requires_grad_(False)
    return history
