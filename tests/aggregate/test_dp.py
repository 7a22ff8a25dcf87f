import pytest
import torch

from fedproxy.aggregate import add_gaussian_noise, clip_update, dp_epsilon, flat_norm


def test_clip_bounds_norm_and_keeps_small_updates():
    big = {"a": torch.full((4,), 10.0)}
    assert flat_norm(clip_update(big, 1.0)) == pytest.approx(1.0)
    small = {"a": torch.full((4,), 0.1)}
    assert torch.equal(clip_update(small, 1.0)["a"], small["a"])


def test_noise_std_matches_calibration():
    zero = {"a": torch.zeros(100_000)}
    noisy = add_gaussian_noise(zero, noise_multiplier=2.0, bound=0.5, n_clients=4, gen=torch.Generator().manual_seed(0))
    assert noisy["a"].std().item() == pytest.approx(2.0 * 0.5 / 4, rel=0.02)


def test_epsilon_from_opacus_decreases_with_noise():
    assert dp_epsilon(2.0, 1.0, 3, 1e-5) < dp_epsilon(1.0, 1.0, 3, 1e-5)
