"""Offsite-Tuning's geometry (Xiao et al., 2023): which LLM blocks form the adapter and the emulator."""

from .uniform import uniform_keep

ADAPTER = 2


def adapter_size(num_layers: int) -> int:
    """ADAPTER blocks at each end, fewer on very shallow models so an emulator remains."""
    return max(1, min(ADAPTER, num_layers // 4))


def ot_keep(num_layers: int, keep_ratio: float) -> list[int]:
    a = adapter_size(num_layers)
    middle = list(range(a, num_layers - a))
    n_mid = min(len(middle), max(1, round(keep_ratio * len(middle))))
    emulator = [middle[i] for i in uniform_keep(len(middle), n_mid)] if middle else []
    return list(range(a)) + emulator + list(range(num_layers - a, num_layers))
