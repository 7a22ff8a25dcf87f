"""The paper's stage-2 aggregation (arXiv 2604.19015 §4.2): heterogeneity-aware TIES (H-TIES).

Per round, from the client updates Δ_1..Δ_K (flattened over every trained tensor):

1. cosine similarities S_ij; heterogeneity h_i = 1 - Σ_{j≠i} max(S_ij, 0) / (K - 1), min-max
   normalised over the clients to ĥ_i; client weights w = softmax_i(Σ_{j≠i} |S_ij|) (Eqs. 5-7);
2. per-coordinate conflict C = 1 - |Σ_i sign(Δ_i)| / K (:func:`conflict_score`), which the
   server keeps for the next round's conflict-weighted proximal term on the clients (PCR,
   Eqs. 8-9; :func:`pcr_penalty`, ``fed.pcr_lambda``), whatever the aggregator;
3. client i keeps its top r_i = 1 - 0.2·ĥ_i fraction of entries by magnitude (Eq. 10), so a
   more heterogeneous client trims more;
4. weighted sign election: the positive side wins a coordinate when its weighted mass is at
   least ``rho`` times the negative side's (and the reverse); otherwise the coordinate stays 0;
   the winner's weighted disjoint mean is the merged value (Eqs. 11-14).

The paper itself was not reachable here; the equations follow the public third-party
reproduction (github.com/bulemush/Fedsecond, ``federated/analysis.py`` and
``aggregation.py``, rho = 1.1), which its authors describe as an inferred implementation. One
difference: the reproduction analyses LoRA factors, this one the dense update of the proxy
(LoRA clients' factors are multiplied out first), which is what the paper's analysis of proxy
parameters describes.
"""

from __future__ import annotations

import torch

from .base import AGGREGATORS, Delta

RHO = 1.1
TRIM_STEP = 0.2  # r_i = 1 - TRIM_STEP * ĥ_i


def client_analysis(flat: torch.Tensor, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Similarities, heterogeneity, normalised heterogeneity, weights and keep ratios of ``flat`` [K, N]."""
    k = flat.shape[0]
    if k == 1:
        one = torch.ones(1)
        return {"similarity": one[:, None], "heterogeneity": torch.zeros(1), "h_norm": torch.zeros(1),
                "weights": one, "keep": one}
    norms = flat.norm(dim=1)
    denom = norms[:, None] * norms[None, :]
    sim = torch.where(denom > eps, flat @ flat.T / denom.clamp_min(eps), torch.zeros_like(denom))
    off = sim - torch.diag(torch.diagonal(sim))
    het = 1.0 - off.clamp_min(0).sum(1) / (k - 1)
    span = het.max() - het.min()
    h_norm = torch.zeros_like(het) if span <= eps else (het - het.min()) / span
    return {"similarity": sim, "heterogeneity": het, "h_norm": h_norm, "weights": torch.softmax(off.abs().sum(1), 0),
            "keep": (1.0 - TRIM_STEP * h_norm).clamp(0.0, 1.0)}


def conflict_score(flat: torch.Tensor) -> torch.Tensor:
    """C = 1 - |Σ_i sign(Δ_i)| / K per coordinate: 0 where every client agrees, 1 where they cancel."""
    return 1.0 - flat.sign().sum(0).abs() / flat.shape[0]


def keep_top(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """``x`` with all but its ``ratio`` fraction of largest-magnitude entries set to 0 (ties kept)."""
    if ratio >= 1.0:
        return x
    k = int(ratio * x.numel())
    if k <= 0:
        return torch.zeros_like(x)
    threshold = x.abs().kthvalue(x.numel() - k + 1).values
    return torch.where(x.abs() >= threshold, x, torch.zeros_like(x))


def elect_and_merge(flat: torch.Tensor, weights: torch.Tensor, rho: float = RHO, eps: float = 1e-12) -> torch.Tensor:
    """Weighted sign election with dominance ``rho``, then the winner's weighted disjoint mean."""
    w = weights.reshape(-1, 1).to(flat.dtype)
    scaled = flat * w
    pos, neg = scaled > 0, scaled < 0
    p_mass, n_mass = (scaled * pos).sum(0), (-scaled * neg).sum(0)
    p_wins = p_mass / (n_mass + eps) >= rho
    n_wins = ~p_wins & (n_mass / (p_mass + eps) >= rho)
    p_den, n_den = (w * pos).sum(0), (w * neg).sum(0)
    p_val = torch.where(p_den > 0, (scaled * pos).sum(0) / p_den.clamp_min(eps), torch.zeros_like(p_mass))
    n_val = torch.where(n_den > 0, (scaled * neg).sum(0) / n_den.clamp_min(eps), torch.zeros_like(n_mass))
    return torch.where(p_wins, p_val, torch.where(n_wins, n_val, torch.zeros_like(p_val)))


def _flatten(deltas: list[Delta]) -> tuple[torch.Tensor, list[tuple[str, torch.Size, int]]]:
    spec = [(k, v.shape, v.numel()) for k, v in deltas[0].items()]
    return torch.stack([torch.cat([d[k].float().flatten() for k, _, _ in spec]) for d in deltas]), spec


def _unflatten(vec: torch.Tensor, spec) -> Delta:
    out, start = {}, 0
    for k, shape, n in spec:
        out[k] = vec[start: start + n].reshape(shape)
        start += n
    return out


def h_ties_merge(deltas: list[Delta], rho: float = RHO) -> tuple[Delta, dict]:
    """The merged update and the round's analysis (similarities, weights, keep ratios)."""
    flat, spec = _flatten(deltas)
    info = client_analysis(flat)
    if len(deltas) == 1:
        return _unflatten(flat[0], spec), info
    trimmed = torch.stack([keep_top(flat[i], float(info["keep"][i])) for i in range(len(deltas))])
    return _unflatten(elect_and_merge(trimmed, info["weights"], rho), spec), info


def conflicts(deltas: list[Delta]) -> Delta:
    """:func:`conflict_score` of every tensor of the clients' updates."""
    return {k: conflict_score(torch.stack([d[k].float() for d in deltas])) for k in deltas[0]}


@AGGREGATORS.register("h-ties")
def h_ties(deltas: list[Delta], sizes, opts, state) -> Delta:
    merged, info = h_ties_merge(deltas)
    state["last_weights"] = info["weights"].tolist()
    state["keep_ratios"] = info["keep"].tolist()
    return merged


def pcr_penalty(params: dict[str, torch.Tensor], anchor: Delta, conflict: Delta) -> torch.Tensor:
    """Σ C ⊙ (θ - θ_global)²: the conflict-weighted proximal term (PCR), over the trained tensors."""
    total = None
    for name, p in params.items():
        term = (conflict[name].to(p.device, p.dtype) * (p - anchor[name].to(p.device, p.dtype)).pow(2)).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())
