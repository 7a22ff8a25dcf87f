"""How parameters travel between server and clients (``fed.wire_dtype``): pure functions over
``dict[str, Tensor]``, used by the in-process path and the Flower app alike so that both
compute the same result.

``float32`` sends tensors as they are: the global proxy parameters down, the client's delta up.
``float16`` halves the bytes of every round. Down, it sends the global parameters' change since
round 0 (the node keeps round 0's tensors next to the frozen ones, see ``fedproxy.frozen_cache``);
up, the client's delta. Both are small numbers, so each tensor is divided by a per-tensor scale
(its largest magnitude / 2**14) before the cast: values keep float16's 11 significant bits
instead of falling into its subnormal range, and the scale travels beside the tensor. Why not
bfloat16: Flower's arrays are NumPy arrays, and NumPy has no bfloat16; float16 also keeps 3
more bits.
"""

from __future__ import annotations

import torch

from ..config import WIRE_DTYPES
from ..errors import ConfigError

Tensors = dict[str, torch.Tensor]
Scales = dict[str, float]
_HEADROOM = 2.0**14  # the largest magnitude maps to 16384, well inside float16's 65504


def check_dtype(wire_dtype: str) -> None:
    if wire_dtype not in WIRE_DTYPES:
        raise ConfigError(f"fed.wire_dtype must be one of {WIRE_DTYPES}, got '{wire_dtype}'")


def encode(tensors: Tensors, wire_dtype: str) -> tuple[Tensors, Scales]:
    """``tensors`` as they go on the wire, and the per-tensor scales (empty for float32)."""
    check_dtype(wire_dtype)
    if wire_dtype == "float32":
        return {k: v.detach().float() for k, v in tensors.items()}, {}
    out, scales = {}, {}
    for k, v in tensors.items():
        v = v.detach().float()
        amax = float(v.abs().max()) if v.numel() else 0.0
        scale = amax / _HEADROOM if amax > 0 else 1.0
        out[k], scales[k] = (v / scale).half(), scale
    return out, scales


def decode(tensors: Tensors, scales: Scales) -> Tensors:
    """float32 tensors back from :func:`encode`'s output."""
    return {k: v.float() * scales[k] if k in scales else v.float() for k, v in tensors.items()}


def roundtrip(tensors: Tensors, wire_dtype: str) -> Tensors:
    """What the receiver of ``tensors`` gets."""
    return decode(*encode(tensors, wire_dtype))


def encode_global(params: Tensors, initial: Tensors, wire_dtype: str) -> tuple[Tensors, Scales]:
    """The global parameters as sent to a client: themselves (float32) or their change since round 0."""
    if wire_dtype == "float32":
        return encode(params, wire_dtype)
    return encode({k: params[k] - initial[k] for k in params}, wire_dtype)


def decode_global(tensors: Tensors, scales: Scales, initial: Tensors, wire_dtype: str) -> Tensors:
    """The global parameters a client trains from, given round 0's tensors it keeps."""
    got = decode(tensors, scales)
    if wire_dtype == "float32":
        return got
    return {k: initial[k].float() + v for k, v in got.items()}


def nbytes(tensors: Tensors, wire_dtype: str) -> int:
    """Bytes of ``tensors`` on the wire (the scales add 8 bytes per tensor)."""
    check_dtype(wire_dtype)
    per = 4 if wire_dtype == "float32" else 2
    return sum(v.numel() * per + (0 if wire_dtype == "float32" else 8) for v in tensors.values())
