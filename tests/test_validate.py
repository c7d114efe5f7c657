"""The validation arithmetic, checked against functions whose derivatives are known exactly;
U/N against a reference only where one exists; outputs that are strict JSON, written whole."""

import errno
import json
import math

import numpy as np
import pytest
from conftest import TINY

from forcematch.config import load_config, schema
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io import atomic
from forcematch.io.atomic import OutputError, write_json
from forcematch.metrics import accuracy
from forcematch.validation.validate import (
    U_PER_ATOM_EPS_EXPECTED,
    U_REFERENCE_STATE,
    _write_outputs,
    fd_samples,
    finite_difference_errors,
    has_u_reference,
    net_force,
    summarise_fd,
    u_per_atom_eps,
    u_per_atom_metrics,
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
    assert u_per_atom_eps(energies[:1], 100, 0.99607)[1] is None  # one frame: no spread


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


def test_u_reference_only_for_its_state():
    defaults = {key: spec["default"] for key, spec in
                schema()["properties"]["system"]["properties"].items()}
    assert has_u_reference(defaults)  # the default experiment is the reference state
    assert not has_u_reference(load_config(TINY)["system"])  # tiny: 0.55 nm cutoff
    for key, value in U_REFERENCE_STATE.items():
        other = not value if isinstance(value, bool) else value * 1.01
        assert not has_u_reference(defaults | {key: other}), key
    assert has_u_reference(defaults | {"n_atoms": 1000})  # not a property of the state


def frames_with_energies(u_per_atom_eps: list[float]) -> Frames:
    n, t = 4, len(u_per_atom_eps)
    energies = np.asarray(u_per_atom_eps) * n * 0.99607
    return Frames(np.zeros((t, n, 3)), np.zeros((t, n, 3)), energies, np.ones(3),
                  np.zeros(n, np.int32))


def testu_per_atom_metrics_say_when_there_is_no_reference():
    defaults = {key: spec["default"] for key, spec in
                schema()["properties"]["system"]["properties"].items()}
    lines = []
    splits = [frames_with_energies([-5.6, -5.58])]
    at_reference = u_per_atom_metrics(splits, defaults, lines.append)
    assert at_reference["u_per_atom_eps_expected"] == U_PER_ATOM_EPS_EXPECTED
    assert at_reference["u_per_atom_within_tolerance"] is True
    elsewhere = u_per_atom_metrics(splits, defaults | {"temperature_K": 120.0}, lines.append)
    assert elsewhere["u_per_atom_eps"] == pytest.approx(-5.59)
    assert elsewhere["u_per_atom_eps_expected"] is None
    assert elsewhere["u_per_atom_within_tolerance"] is None
    assert elsewhere["u_per_atom_note"] == "no reference value for this state"
    assert "no reference value for this state" in lines[-1]
    one = u_per_atom_metrics([frames_with_energies([-5.6])], defaults, lines.append)
    assert one["u_per_atom_eps_sem"] is None  # not NaN: JSON has no NaN


def test_write_json_refuses_nan_naming_the_key(tmp_path):
    with pytest.raises(ForcematchError, match=r"m.json: 'runs.a\[1\].force_rmse_rel' is nan: "
                                              r"JSON has no NaN or infinity"):
        write_json(tmp_path / "m.json", {"runs": {"a": [{}, {"force_rmse_rel": math.nan}]}})
    with pytest.raises(ForcematchError, match=r"'x' is -inf"):
        write_json(tmp_path / "m.json", {"x": -math.inf})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "m.json", {"x": None, "y": 1.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": None, "y": 1.5}


TABLES = {"fd": [{"step_nm": 0.1, "max_rel_error": 1e-3}],
          "net_force": [{"frame": 0, "net_force_kJ_mol_nm": 1e-5}]}


@pytest.mark.parametrize("error, hint", [
    (OSError(errno.ENOSPC, "No space left on device"), "free some disk space"),
    (PermissionError(errno.EACCES, "Permission denied"), "make the output directory writable"),
    (OSError(errno.EROFS, "Read-only file system"),
     "make the output directory writable or choose another --out-dir"),
])
def test_a_refused_write_leaves_the_previous_output(tmp_path, monkeypatch, error, hint):
    out = tmp_path / "validate"
    _write_outputs(out, {"net_force_max": 1.0}, TABLES, progress=lambda _: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def refuse(root):
        raise error

    monkeypatch.setattr(atomic, "_fsync_tree", refuse)
    with pytest.raises(OutputError, match=rf"^cannot write {out}: {error.strerror}; {hint}"):
        _write_outputs(out, {"net_force_max": 2.0}, TABLES, progress=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["validate"]  # no temporaries left


def test_metrics_with_nan_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "validate"
    with pytest.raises(ForcematchError, match="'force_corr' is nan"):
        _write_outputs(out, {"net_force_max": 1.0, "force_corr": math.nan}, TABLES,
                       progress=lambda _: None)
    assert not out.exists() and sorted(tmp_path.iterdir()) == []
