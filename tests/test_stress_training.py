"""The stress term of the loss (train.stress_weight): it teaches a many-body model the virial
of the reference, with the right sign, and it is refused where it cannot work."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from forcematch.config.sweep import run_config
from forcematch.errors import ForcematchError
from forcematch.fit import fit
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.training import train

CUTOFF_NM = 0.55  # tests/config/tiny.yaml
TRAIN = {"epochs": 12, "batch_size": 8, "learning_rate": 1e-2, "val_frames": 16,
         "energy_weight": 0.01, "seed": 0}
MODEL = {"hidden": [16, 16]}


def _quiet(_line: str) -> None:
    pass


def _virial_rmse(run_dir, frames) -> float:
    """RMS over frames and components of the model's W = −dU/dε against the labels, per atom
    (kJ/mol)."""
    potential = load_model(run_dir / "model")
    predicted = -potential.strain_derivative(frames.positions_nm, frames.box_nm)
    return float(np.sqrt(np.mean((predicted - frames.virial_kJ_mol) ** 2))) / frames.n_atoms


@pytest.fixture(scope="module")
def atomic_runs(tiny_data, tmp_path_factory):
    """The atomic model on the tiny dataset, force and energy labels, without and with the
    virial term (same seed, steps and batches)."""
    train_frames = read_h5md(tiny_data.dataset / "train.h5")
    val_frames = read_h5md(tiny_data.dataset / "val.h5")
    runs = {}
    for name, weight in (("without", 0.0), ("with", 1.0)):
        out = tmp_path_factory.mktemp(f"atomic-{name}")
        train(train_frames, val_frames, TRAIN | {"model": "atomic", "stress_weight": weight},
              MODEL, CUTOFF_NM, out, progress=_quiet)
        runs[name] = out
    return runs, val_frames


def test_the_stress_term_teaches_the_virial(atomic_runs):
    """With the virial term the held-out virial error falls to under a fifth of what forces and
    energies alone give (2.74 against 0.34 kJ/mol per atom when written; a sign error in the
    term would raise it) and below the labels' own spread about their mean (what the best
    constant would give), and the loss column that reports it is filled."""
    runs, val = atomic_runs
    without, with_stress = (_virial_rmse(runs[k], val) for k in ("without", "with"))
    scale = np.sqrt(np.mean(np.var(val.virial_kJ_mol / val.n_atoms, axis=0)))
    assert with_stress < 0.2 * without, (with_stress, without)
    assert with_stress < scale, (with_stress, scale)
    with open(runs["with"] / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["train_stress_loss"]) < 0.5 * float(rows[0]["train_stress_loss"])
    with open(runs["without"] / "metrics.csv", newline="") as fh:
        assert all(float(r["train_stress_loss"]) == 0.0 for r in csv.DictReader(fh))


def test_stress_weight_needs_virials_and_the_normalised_loss(tiny_data, tmp_path):
    frames = read_h5md(tiny_data.dataset / "train.h5")
    bare = dataclasses.replace(frames, virial_kJ_mol=None)
    with pytest.raises(ForcematchError, match=r"stress_weight = 1.0 but the training data "
                                              r"\(arrays\) hold no virial"):
        train(bare, frames, TRAIN | {"stress_weight": 1.0}, {}, CUTOFF_NM, tmp_path / "a",
              progress=_quiet)
    with pytest.raises(ForcematchError, match="needs train.loss_form 'normalised'"):
        train(frames, frames, TRAIN | {"stress_weight": 1.0, "loss_form": "raw_eV_angstrom"},
              {}, CUTOFF_NM, tmp_path / "b", progress=_quiet)
    with pytest.raises(ForcematchError, match="the spline fit has no virial rows"):
        fit(frames, frames, TRAIN | {"model": "spline", "stress_weight": 1.0}, {},
              CUTOFF_NM, tmp_path / "c", progress=_quiet)


def test_only_joint_runs_of_a_sweep_keep_the_stress_weight():
    """train.stress_weight reaches the joint run only (pair: no train_by_model entry of its
    own; the default's atomic and mpnn set 0.01 there)."""
    from forcematch.config import load_config

    config = load_config("config/config.yaml")
    config["train"]["stress_weight"] = 0.5
    weights = {loss: run_config(config, "pair", loss, "all")["train"]["stress_weight"]
               for loss in ("energy", "force", "joint")}
    assert weights == {"energy": 0.0, "force": 0.0, "joint": 0.5}
