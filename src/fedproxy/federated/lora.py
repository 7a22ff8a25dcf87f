"""LoRA factors -> dense deltas (pure), so every aggregator works on the same representation."""

from __future__ import annotations

import torch

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALPHA_OVER_R = 2.0  # lora_alpha = 2 r in client training


def lora_to_dense(factors: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Dense delta ``(alpha/r) B @ A`` per adapted weight; zeros for the other reference keys."""
    out = {k: torch.zeros_like(v) for k, v in reference.items()}
    for name, a in factors.items():
        if ".lora_A." not in name:
            continue
        b = factors[name.replace(".lora_A.", ".lora_B.")]
        key = name.replace("base_model.model.", "", 1).replace(".lora_A.default", "")
        if key not in out:
            raise KeyError(f"LoRA factor {name} targets {key}, which is not a trainable tensor")
        out[key] = ALPHA_OVER_R * (b.float() @ a.float())
    return out
