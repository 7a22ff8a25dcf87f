import pytest
import torch

from fedproxy.aggregate import AGGREGATORS, AggOptions, validate_update
from fedproxy.aggregate.agreement import agreement_weights
from fedproxy.aggregate.ties import ties_merge
from fedproxy.errors import UpdateRejected

OPTS = AggOptions(density=1.0, server_lr=1.0, momentum=0.5, seed=0)


def d(*vals):
    return {"w": torch.tensor(vals, dtype=torch.float32)}


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])  # FedProx's difference is on the client
def test_fedavg_is_sample_weighted(name):
    out = AGGREGATORS.get(name)([d(1.0, 0.0), d(4.0, 2.0)], [1, 3], OPTS, {})
    assert torch.allclose(out["w"], torch.tensor([0.25 * 1 + 0.75 * 4, 0.75 * 2]))


def test_fedavgm_accumulates_momentum():
    state = {}
    agg = AGGREGATORS.get("fedavgm")
    first = agg([d(2.0)], [1], OPTS, state)
    second = agg([d(2.0)], [1], OPTS, state)
    assert first["w"].item() == pytest.approx(2.0)
    assert second["w"].item() == pytest.approx(0.5 * 2.0 + 2.0)


def test_fedexp_extrapolates_only_when_clients_disagree():
    agg = AGGREGATORS.get("fedexp")
    # Orthogonal unit updates: mean (0.5, 0.5), ||mean||^2 = 0.5, mean ||d||^2 = 1 -> eta = 1 / (2 * 0.5) = 1.
    assert torch.allclose(agg([d(1.0, 0.0), d(0.0, 1.0)], [1, 1], OPTS, {})["w"], torch.tensor([0.5, 0.5]))
    # Three orthogonal updates: ||mean||^2 = 1/3 -> eta = 1 / (2/3) = 1.5.
    three = [d(1.0, 0.0, 0.0), d(0.0, 1.0, 0.0), d(0.0, 0.0, 1.0)]
    state = {}
    out = agg(three, [1, 1, 1], OPTS, state)
    assert torch.allclose(out["w"], torch.full((3,), 1.5 / 3))
    assert state["server_steps"] == [pytest.approx(1.5)]
    # Identical updates: eta would be 0.5, clamped to 1 (plain FedAvg).
    assert torch.allclose(agg([d(2.0, 1.0), d(2.0, 1.0)], [1, 3], OPTS, {})["w"], torch.tensor([2.0, 1.0]))


def test_ties_hand_computed():
    # Column 0: +3, -1, +1 -> elected + (sum 3), mean of agreeing (3, 1) = 2.
    # Column 1: -2, -2, +1 -> elected - (sum -3), mean of (-2, -2) = -2.
    out = AGGREGATORS.get("ties")([d(3.0, -2.0), d(-1.0, -2.0), d(1.0, 1.0)], [1, 1, 1], OPTS, {})
    assert torch.allclose(out["w"], torch.tensor([2.0, -2.0]))


@pytest.mark.parametrize("density", [0.3, 0.5, 1.0])
def test_ties_matches_peft(density):
    from peft.utils.merge_utils import ties as peft_ties

    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(6, 5, generator=g) for _ in range(4)]
    ours = ties_merge(torch.stack(tensors), density)
    theirs = peft_ties(tensors, torch.ones(4), density=density, majority_sign_method="total")
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_dare_full_density_equals_fedavg():
    ups, sizes = [d(1.0, 2.0), d(3.0, -2.0)], [1, 1]
    dare = AGGREGATORS.get("dare")(ups, sizes, OPTS, {})
    avg = AGGREGATORS.get("fedavg")(ups, sizes, OPTS, {})
    assert torch.allclose(dare["w"], avg["w"])


def test_dare_is_unbiased_in_expectation():
    ups = [{"w": torch.ones(20000)}]
    out = AGGREGATORS.get("dare")(ups, [1], AggOptions(density=0.25, seed=3), {})
    assert (out["w"] == 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    assert out["w"].mean().item() == pytest.approx(1.0, abs=0.05)


def test_median_ignores_one_outlier():
    out = AGGREGATORS.get("median")([d(1.0), d(2.0), d(1000.0)], [1, 1, 1], OPTS, {})
    assert out["w"].item() == 2.0


def test_normclip_bounds_a_huge_update():
    out = AGGREGATORS.get("normclip")([d(1.0), d(1.0), d(1000.0)], [1, 1, 1], OPTS, {})
    assert out["w"].item() == pytest.approx(1.0)


def test_fedproxy_downweights_the_conflicting_client():
    ups = [d(1.0, 1.0), d(1.0, 0.9), d(-1.0, -1.0)]
    w = agreement_weights(ups, [1, 1, 1])
    assert w[2] < w[0] and w[2] < w[1]
    assert w.sum().item() == pytest.approx(1.0)


def test_fedproxy_merge_does_not_cancel_opposite_pushes():
    # Two clients agree on +1, one pushes -1: FedAvg shrinks to 1/3, sign consensus keeps +1.
    ups = [d(1.0), d(1.0), d(-1.0)]
    out = AGGREGATORS.get("agreement")(ups, [1, 1, 1], OPTS, {})
    avg = AGGREGATORS.get("fedavg")(ups, [1, 1, 1], OPTS, {})
    assert out["w"].item() == pytest.approx(1.0)
    assert avg["w"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("update, reason", [
    ({"w": torch.tensor([float("nan"), 0.0])}, "NaN or Inf"),
    ({"w": torch.tensor([float("inf"), 0.0])}, "NaN or Inf"),
    ({"w": torch.zeros(3)}, "shape"),
    ({"v": torch.zeros(2)}, "keys differ"),
    ({"w": torch.tensor([1e6, 0.0])}, "exceeds the bound"),
])
def test_bad_updates_are_rejected_with_reason(update, reason):
    with pytest.raises(UpdateRejected, match=reason):
        validate_update(update, {"w": torch.Size([2])}, max_norm=10.0)
