"""Several species through the whole chain with real parts: a Kob–Andersen mixture simulated
with OpenMM, split, a `pair` model trained on it resolving species from the data (one pair
function per species pair), validated with the test error per species, and used through ASE by
chemical symbol (the species names stored with the model). The mixture's species are named
Ar (A) and Ne (B, the smaller and weaker) so that ASE takes them as elements."""

from __future__ import annotations

import json

import numpy as np
import yaml
from ase import Atoms
from conftest import TINY

from forcematch import cli
from forcematch.calculators.ase import EV_PER_KJ_MOL, ForcematchCalculator
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.units import ARGON_MASS_AMU, ARGON_SIGMA_NM, AVOGADRO_PER_MOL

SIG, EPS = ARGON_SIGMA_NM, 0.99607
KA_DENSITY_G_CM3 = 1.2 / SIG**3 * ARGON_MASS_AMU / AVOGADRO_PER_MOL * 1e21  # ρ* = 1.2


def ka_config(tmp_path):
    """The tiny config as a 40-atom Kob–Andersen mixture (32 A, 8 B; box 1.0958 nm)."""
    config = yaml.safe_load(TINY.read_text())
    config["system"] = {
        "n_atoms": 40, "temperature_K": 119.8, "density_g_cm3": KA_DENSITY_G_CM3,
        "cutoff_nm": 0.54, "switch_nm": 0.45,
        "species": [
            {"name": "Ar", "count": 32, "mass_amu": ARGON_MASS_AMU, "sigma_nm": SIG,
             "epsilon_kJ_mol": EPS},
            {"name": "Ne", "count": 8, "mass_amu": ARGON_MASS_AMU, "sigma_nm": 0.88 * SIG,
             "epsilon_kJ_mol": 0.5 * EPS}],
        "pair_parameters": [{"species": ["Ar", "Ne"], "sigma_nm": 0.8 * SIG,
                             "epsilon_kJ_mol": 1.5 * EPS}]}
    config["simulate"] |= {"timestep_fs": 2.0, "steps_between_frames": 10}
    config["train"] |= {"epochs": 4}
    path = tmp_path / "ka.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_mixture_trains_with_species_and_reports_each(tmp_path, keep_environment):
    config = ka_config(tmp_path)
    replicas = [tmp_path / f"replica_{k}.h5" for k in range(3)]
    for k, path in enumerate(replicas):
        assert cli.main(["simulate", "--config", str(config), "--replica", str(k),
                         "--out", str(path)]) == 0
    data = read_h5md(replicas[0])
    assert data.species.tolist() == [0] * 32 + [1] * 8
    np.testing.assert_array_equal(data.masses_amu, ARGON_MASS_AMU)
    dataset = tmp_path / "dataset"
    assert cli.main(["dataset", "--config", str(config), "--inputs", *map(str, replicas),
                     "--out-dir", str(dataset)]) == 0
    assert cli.main(["train", "--config", str(config), "--dataset-dir", str(dataset),
                     "--out-dir", str(tmp_path / "train")]) == 0
    model = load_model(tmp_path / "train" / "model")
    assert model.info["model_config"]["n_species"] == 2  # from the data, not the default 1
    np.testing.assert_array_equal(model.species, data.species)
    assert cli.main(["validate", "--config", str(config), "--dataset-dir", str(dataset),
                     "--model", str(tmp_path / "train" / "model"),
                     "--out-dir", str(tmp_path / "validate")]) == 0
    metrics = json.loads((tmp_path / "validate" / "metrics.json").read_text())
    rows = {row["name"]: row for row in metrics["by_species"]}
    assert set(rows) == {"Ar", "Ne"}
    assert (rows["Ar"]["n_atoms"], rows["Ne"]["n_atoms"]) == (32, 8)
    # The atom-weighted mean square of the species' errors is the overall one.
    mean_square = sum(r["n_atoms"] * r["force_rmse"] ** 2 for r in rows.values()) / 40
    assert np.isclose(mean_square, metrics["force_rmse"] ** 2, rtol=1e-9)
    # Species pairs resolved: swapping the species of an A and a B atom changes the energy.
    frame = read_h5md(dataset / "test.h5")
    swapped = frame.species.copy()
    swapped[[0, 39]] = swapped[[39, 0]]
    e = model.energy(frame.positions_nm[0], frame.box_nm[0])
    e_swapped = model.energy(frame.positions_nm[0], frame.box_nm[0], swapped)
    assert abs(float(e) - float(e_swapped)) > 1e-3  # kJ/mol
    # Through ASE by chemical symbol, with no species_map: the names stored with the model.
    assert model.species_names == ["Ar", "Ne"]
    symbols = ["Ne" if s else "Ar" for s in frame.species]
    atoms = Atoms(symbols, positions=frame.positions_nm[0] * 10,
                  cell=np.diag(frame.box_nm[0] * 10), pbc=True)
    atoms.calc = ForcematchCalculator(tmp_path / "train" / "model")
    assert atoms.calc.species_map == {"Ar": 0, "Ne": 1}
    np.testing.assert_allclose(atoms.get_potential_energy(), float(e) * EV_PER_KJ_MOL,
                               rtol=1e-6)
    reversed_atoms = atoms[::-1]  # any order: the symbols carry the species
    reversed_atoms.calc = ForcematchCalculator(tmp_path / "train" / "model")
    np.testing.assert_allclose(reversed_atoms.get_potential_energy(),
                               atoms.get_potential_energy(), rtol=1e-6)
