"""fedproxy.federated.wire: what a receiver gets over a float32 or float16 wire."""

import pytest
import torch

from fedproxy.errors import ConfigError
from fedproxy.federated.wire import decode_global, encode, encode_global, nbytes, roundtrip


def _deltas():
    g = torch.Generator().manual_seed(0)
    # fine-tuning deltas span decades; the smallest fall in float16's subnormal range unscaled
    return {"w": torch.randn(64, 32, generator=g) * 10.0 ** torch.randint(-8, -2, (64, 32), generator=g),
            "b": torch.randn(7, generator=g) * 1e-6, "zero": torch.zeros(5), "empty": torch.zeros(0)}


def test_float32_wire_is_exact():
    d = _deltas()
    got = roundtrip(d, "float32")
    assert all(torch.equal(got[k], d[k]) for k in d)
    assert nbytes(d, "float32") == 4 * sum(v.numel() for v in d.values())


def test_float16_wire_keeps_11_significant_bits_at_every_scale():
    d = _deltas()
    sent, scales = encode(d, "float16")
    assert all(v.dtype == torch.float16 for v in sent.values()) and set(scales) == set(d)
    got = roundtrip(d, "float16")
    for k, v in d.items():
        amax = float(v.abs().max()) if v.numel() else 0.0
        # round-to-nearest: half an ulp of 11 bits, down to float16's smallest subnormal at the tensor's scale
        bound = torch.maximum(v.abs() * 2.0**-11, torch.full_like(v, amax * 2.0**-38))
        assert bool(((got[k] - v).abs() <= bound).all()), k
    # without the per-tensor scale the 1e-8 entries would be flushed to zero
    plain = d["w"].half().float()
    assert bool(((plain - d["w"]).abs() > d["w"].abs() * 2.0**-11).any())
    assert nbytes(d, "float16") < 0.6 * nbytes(d, "float32")


def test_global_travels_as_its_change_since_round_0():
    g = torch.Generator().manual_seed(1)
    initial = {"w": torch.randn(16, 8, generator=g) * 0.02}
    assert torch.equal(decode_global(*encode_global(initial, initial, "float16"), initial, "float16")["w"],
                       initial["w"])  # round 0: nothing changed, nothing lost
    params = {"w": initial["w"] + torch.randn(16, 8, generator=g) * 1e-4}
    got = decode_global(*encode_global(params, initial, "float16"), initial, "float16")
    change = params["w"] - initial["w"]
    assert float((got["w"] - params["w"]).abs().max()) <= float(change.abs().max()) * 2.0**-11
    # sent whole, a float16 copy of the weights would lose the change itself
    assert float((params["w"].half().float() - params["w"]).abs().max()) > float(change.abs().max()) * 2.0**-8
    assert torch.equal(decode_global(*encode_global(params, initial, "float32"), initial, "float32")["w"],
                       params["w"])


def test_unknown_wire_dtype_is_refused(fault_log):
    with pytest.raises(ConfigError, match="fed.wire_dtype must be one of"):
        encode({"w": torch.ones(2)}, "bfloat16")
    fault_log.bad_input("unknown wire dtype")
