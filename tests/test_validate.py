"""The validation arithmetic, checked against functions whose derivatives are known exactly."""

import numpy as np
import pytest

from forcematch.metrics import accuracy
from forcematch.validate import (
    fd_samples,
    finite_difference_errors,
    net_force,
    summarise_fd,
    u_per_atom_eps,
)

STEPS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]


def harmonic_energies(stack):
    """E = sum_i k |x_i - x0_i|^2 / 2 ... with a cubic term so FD truncation error is visible."""
    x = stack.reshape(len(stack), -1)
    return 0.5 * 3.0 * np.sum(x**2, axis=1) + 0.7 * np.sum(x**3, axis=1)


def harmonic_forces(positions):
    return -(3.0 * positions + 2.1 * positions**2)


def test_fd_errors_follow_truncation_then_round_off():
    rng = np.random.default_rng(0)
    positions = rng.normal(size=(10, 3))
    samples = fd_samples(rng, 10, 12)
    errors = finite_difference_errors(harmonic_energies, positions, harmonic_forces(positions),
                                      samples, STEPS)
    worst = errors.max(axis=1)
    # Central differences: error ~ h^2 for large h (the cubic term), round-off for tiny h.
    assert worst[0] / worst[1] == pytest.approx(100, rel=0.05)
    metrics, rows = summarise_fd(STEPS, errors)
    assert metrics["fd_max_rel_error"] < 1e-8
    assert len(rows) == len(STEPS)


def test_fd_catches_a_flipped_force_sign():
    rng = np.random.default_rng(1)
    positions = rng.normal(size=(6, 3))
    samples = fd_samples(rng, 6, 10)
    errors = finite_difference_errors(harmonic_energies, positions, -harmonic_forces(positions),
                                      samples, STEPS)
    assert summarise_fd(STEPS, errors)[0]["fd_max_rel_error"] > 1.0


def test_fd_samples_are_distinct_and_in_range():
    samples = fd_samples(np.random.default_rng(2), 5, 100)
    assert len(samples) == 15
    assert len({tuple(s) for s in samples}) == 15
    assert samples[:, 0].max() < 5 and samples[:, 1].max() < 3


def test_net_force_and_accuracy():
    forces = np.zeros((2, 4, 3))
    forces[0, :, 0] = [1, -1, 2, -2]
    forces[1, 0] = [3, 4, 0]
    assert np.allclose(net_force(forces), [0.0, 5.0])
    rng = np.random.default_rng(3)
    f_true = rng.normal(size=(20, 8, 3))
    e_true = rng.normal(size=20)
    exact = accuracy(e_true, e_true, f_true, f_true)
    assert exact["force_rmse"] == 0 and exact["force_corr"] == pytest.approx(1)
    shrunk = accuracy(e_true, e_true + 8.0, f_true, 0.5 * f_true)
    assert shrunk["force_std_ratio"] == pytest.approx(0.5)
    assert shrunk["energy_mae_per_atom"] == pytest.approx(1.0)
    assert shrunk["force_rmse_rel"] == pytest.approx(0.5, rel=0.05)


def test_u_per_atom_in_epsilon():
    energies = np.full(100, -5.6 * 0.99607 * 100)
    mean, sem = u_per_atom_eps(energies, 100, 0.99607)
    assert mean == pytest.approx(-5.6) and sem == pytest.approx(0)


def test_collapsed_model_gives_finite_metrics():
    """A model whose forces collapsed to zero is a result to report, not a NaN."""
    rng = np.random.default_rng(4)
    f_true = rng.normal(size=(5, 6, 3))
    metrics = accuracy(np.zeros(5), np.zeros(5), f_true, np.zeros_like(f_true))
    assert metrics["force_corr"] == 0.0 and metrics["force_std_ratio"] == 0.0
    assert metrics["force_rmse_rel"] == pytest.approx(1.0, rel=0.1)
    errors = finite_difference_errors(lambda stack: np.zeros(len(stack)), rng.normal(size=(6, 3)),
                                      np.zeros((6, 3)), fd_samples(rng, 6, 4), STEPS)
    assert np.all(errors == 0.0)
