"""MD with learned models (forcematch.md): conservation laws, the neighbour list, the pressure
estimator, and the protocol catching a bad potential. Real OpenMM data (the tiny dataset), real
trained models, JAX MD integrators."""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from precision import float32_atol

from forcematch.cli import main
from forcematch.config import load_config
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md
from forcematch.md import checks
from forcematch.md.engine import ModelEngine
from forcematch.md.pair_table import PairTable
from forcematch.md.record import StabilityLimits, min_pair_distance_nm
from forcematch.md.run import require_same_system, run_model_md, run_reference_md, system_record
from forcematch.potential import Potential, load_model
from forcematch.training.run import train
from forcematch.units import BOLTZMANN_KJ_MOL_K, KJ_MOL_NM3_TO_BAR

NO_LIMITS = StabilityLimits(min_distance_nm=0.0, runaway_factor=1e9)
N_PAIRS_TINY = 32 * 31 // 2  # the most terms of a tiny frame's sum over pairs


@pytest.fixture(scope="module")
def md_runs(tiny_data, tmp_path_factory):
    """The reference's MD, a pair model trained to fit (force-only, 40 epochs) and one
    deliberately under-trained (energy-only, 16 frames, one epoch), each through the protocol."""
    root = tmp_path_factory.mktemp("md")
    config = load_config(tiny_data.config)
    train_frames = read_h5md(tiny_data.dataset / "train.h5")
    val = read_h5md(tiny_data.dataset / "val.h5")
    cutoff = config["system"]["cutoff_nm"]
    train(train_frames, val, {"model": "pair", "epochs": 40, "max_epochs": 40,
                              "energy_weight": 0.01, "force_weight": 1.0},
          None, cutoff, root / "good", progress=lambda _: None)
    train(train_frames.select(list(range(16))), val,
          {"model": "pair", "epochs": 1, "energy_weight": 1.0, "force_weight": 0.0},
          None, cutoff, root / "bad", progress=lambda _: None)
    reference = run_reference_md(config, tiny_data.dataset, root / "md" / "reference")
    summaries = {name: run_model_md(config, root / name / "model", tiny_data.dataset,
                                    root / "md" / "reference", root / "md" / name)
                 for name in ("good", "bad")}
    return {"root": root, "config": config, "reference": reference, **summaries}


def test_an_under_trained_model_is_reported_not_crashed(md_runs):
    bad, good = md_runs["bad"], md_runs["good"]
    assert bad["stable"] is False
    first = bad["equilibration"] if not bad["equilibration"]["stable"] else next(
        s for s in bad["stability"].values() if not s["stable"])
    assert first["failure"] and 0 < first["time_to_failure_ps"] <= first["duration_ps"]
    # The same checks pass the reference and the fitted model: they are not failing everything.
    assert md_runs["reference"]["stable"] and good["stable"]
    written = json.loads((md_runs["root"] / "md" / "bad" / "md.json").read_text())
    assert written["stable"] is False
    assert (md_runs["root"] / "md" / "bad" / "nvt.h5").is_file()


def test_model_md_is_compared_with_the_reference(md_runs):
    good, reference = md_runs["good"], md_runs["reference"]
    assert good["protocol"] == reference["protocol"]
    assert good["system"] == reference["system"] == {
        "n_atoms": 32, "box_nm": reference["system"]["box_nm"], "species": {"0": 32}}
    against = good["against_reference"]
    assert against["available"] and against["rdf_noise_floor"] == reference["rdf_noise_floor"]
    assert math.isfinite(against["pressure_bar"]["difference"])
    for row in good["energy"]["nve"]:
        assert row["stable"] and row["momentum_change_relative"] < 1e-5
        assert math.isfinite(row["drift_eps_per_atom_per_ns"])
    # A pair model runs from its table (md.pair_table, the default), whose bound md.json states
    assert good["engine"] == "jax_md, pair table"
    assert good["pair_table"]["max_force_error_rel"] <= 1e-6
    assert good["pair_table"]["force_error_rel_per_atom"] < 3e-5
    # The trajectory file is H5MD with the energies of every record.
    frames = read_h5md(md_runs["root"] / "md" / "good" / "nvt.h5")
    assert frames.velocities_nm_ps is not None and np.isfinite(frames.positions_nm).all()


@pytest.fixture(scope="module")
def good_engine_start(md_runs, tiny_data):
    test = read_h5md(tiny_data.dataset / "test.h5")
    return load_model(md_runs["root"] / "good" / "model"), test


def test_nve_conserves_momentum_and_its_energy_error_scales_as_dt_squared(good_engine_start):
    potential, test = good_engine_start
    with jax.enable_x64(True):
        engine = ModelEngine(potential, test.masses_amu, test.box_nm[0], float64=True)
        start, runs = nve_at_two_steps(engine, test.positions_nm[0])
    # NVE starts from zero total momentum, though Langevin left the start some
    assert np.abs(start.momentum_amu_nm_ps[-1]).max() > 1e-3
    for seg in runs.values():
        assert seg.failure is None
        assert checks.momentum_change(seg) < 1e-10  # float64: round-off only
        assert np.abs(seg.momentum_amu_nm_ps).max() < 1e-10
    # Velocity Verlet: the energy error is O(dt^2); half the step, a quarter of the error.
    assert 3.0 < energy_fluctuation_ratio(runs) < 5.5


def test_md_runs_any_number_of_atoms(good_engine_start):
    """A model trained on 32 atoms drives MD of the frame replicated 2x2x2 (256 atoms): the
    first record's energy per atom and forces are the 32-atom frame's (to float32 round-off),
    and species must be given only where the model knows several."""
    potential, test = good_engine_start
    x, box = test.positions_nm[0], test.box_nm[0]
    shifts = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)]) * box
    big = (x[None] + shifts[:, None]).reshape(-1, 3)
    masses = np.tile(test.masses_amu, 8)
    engine = ModelEngine(potential, masses, 2 * box)
    one = ModelEngine(potential, test.masses_amu, box)
    big_seg = engine.run("nve", big, np.zeros_like(big), 100.0, 2.0, 10, 10, 0, 1.0, NO_LIMITS)
    small = one.run("nve", x, np.zeros_like(x), 100.0, 2.0, 10, 10, 0, 1.0, NO_LIMITS)
    e_small = small.potential_kJ_mol[0]
    assert big_seg.potential_kJ_mol[0] / 256 == pytest.approx(
        e_small / 32, abs=float32_atol(e_small / 32, n_terms=256 * 32))
    f_small = small.forces_kJ_mol_nm[0]
    np.testing.assert_allclose(big_seg.forces_kJ_mol_nm[0], np.tile(f_small, (8, 1)), rtol=0,
                               atol=float32_atol(f_small, n_terms=N_PAIRS_TINY))
    with pytest.raises(ForcematchError, match=r"species must be \[256\] integers"):
        ModelEngine(potential, masses, 2 * box, species=np.zeros(32, np.int32))
    with pytest.raises(ForcematchError, match=r"species must lie in 0..0"):
        ModelEngine(potential, masses, 2 * box, species=np.ones(256, np.int32))


def nve_at_two_steps(engine, positions_nm):
    """(the NVT start, {dt: NVE Segment}): 0.4 ps of NVT at 100 K from `positions_nm`, then
    0.8 ps of NVE from its end at 2 fs and at 1 fs (float64 engines: round-off aside)."""
    start = engine.run("nvt", positions_nm, None, 100.0, 2.0, 200, 10, 1, 1.0, NO_LIMITS)
    x, v = start.final_state()
    return start, {dt: engine.run("nve", x, v, 100.0, dt, steps, every, 0, 1.0, NO_LIMITS)
                   for dt, steps, every in ((2.0, 400, 10), (1.0, 800, 20))}


def energy_fluctuation_ratio(runs) -> float:
    """Total-energy fluctuation at 2 fs over that at 1 fs (4 for an O(dt^2) error)."""
    fluctuation = {dt: checks.energy_drift(seg, 1.0)["fluctuation_eps_per_atom"]
                   for dt, seg in runs.items()}
    return fluctuation[2.0] / fluctuation[1.0]


def test_langevin_ideal_gas_has_the_target_temperature_with_3n_degrees_of_freedom(
        good_engine_start):
    """JAX MD's BAOAB kicks every momentum, the total included: with no forces (the trained
    model's parameters zeroed) <K> = 3N kT/2; 3N - 3 would read T 3.2 % high at 32 atoms."""
    potential, test = good_engine_start
    gas = Potential(potential.path, potential.info,
                    jax.tree.map(jnp.zeros_like, potential.params))
    n = test.n_atoms
    # friction 20/ps: the kinetic energy decorrelates in 1/(2 x 20) ps, the record interval
    engine = ModelEngine(gas, test.masses_amu, test.box_nm[0], friction_per_ps=20.0)
    segment = engine.run("nvt", test.positions_nm[0], None, 100.0, 5.0, 20_000, 10, 1, 20.0,
                         NO_LIMITS)
    assert segment.failure is None and np.abs(segment.forces_kJ_mol_nm).max() == 0.0
    t = checks.block_mean(segment.temperature_inst_K[1:], n_blocks=20)
    assert t["error"] < 1.0  # K: the check below can tell 3N from 3N - 3 (3.2 K)
    assert abs(t["mean"] - 100.0) < 3 * t["error"], t
    assert abs(t["mean"] * 3 * n / (3 * n - 3) - 100.0) > 3 * t["error"], t


def test_the_pair_table_is_the_network_within_its_bound(good_engine_start, tiny_data):
    """The table MD integrates for a pair model: energies equal the network's to float32
    round-off, forces within the per-pair bound summed over neighbours plus round-off; NVE
    from it conserves energy with an O(dt^2) fluctuation (its forces are the exact derivative
    of the interpolated energy)."""
    potential, test = good_engine_start
    closest = float(min_pair_distance_nm(test.positions_nm, test.box_nm[0]).min())
    table = PairTable.build(potential, [closest])
    assert table.max_force_error_rel <= 1e-6
    assert table.force_error(test.positions_nm[:8], test.box_nm[:8], test.species) < 3e-5
    energies = potential.predict(test.positions_nm[:8], test.box_nm[:8])[0]
    i, j = np.triu_indices(test.n_atoms, k=1)  # every pair: a list with an infinite skin
    with jax.enable_x64(True):
        energy, params = table.energy_function(), table.params_as(np.float64)
        got = [float(energy(params, x, box, test.species, (i, j)))
               for x, box in zip(test.positions_nm[:8], test.box_nm[:8], strict=True)]
        # the table's energy in float64 against the network's in float32
        np.testing.assert_allclose(got, energies, rtol=0,
                                   atol=float32_atol(energies, n_terms=N_PAIRS_TINY))
        engine = ModelEngine(table, test.masses_amu, test.box_nm[0], float64=True)
        _, runs = nve_at_two_steps(engine, test.positions_nm[0])
    for seg in runs.values():
        assert seg.failure is None and checks.momentum_change(seg) < 1e-10
    assert 3.0 < energy_fluctuation_ratio(runs) < 5.5


def test_a_full_neighbour_list_is_reallocated_and_no_pair_is_lost(good_engine_start):
    potential, test = good_engine_start
    messages = []
    engine = ModelEngine(potential, test.masses_amu, test.box_nm[0], skin_nm=0.02,
                         capacity_multiplier=1.0, progress=messages.append)
    seg = engine.run("nvt", test.positions_nm[0], None, 150.0, 5.0, 400, 10, 3, 1.0,
                     NO_LIMITS)
    assert seg.failure is None
    assert any("overflow" in m for m in messages), messages
    # Every recorded energy is the model's own (its pair search, no skin list) to round-off.
    energies, _ = potential.predict(seg.positions_nm, seg.box_nm)
    np.testing.assert_allclose(seg.potential_kJ_mol, energies, rtol=1e-5,
                               atol=1e-4 * np.abs(energies).max())


def test_strain_derivative_is_the_derivative_of_the_energy_under_each_strain(
        good_engine_start):
    """dU/dε [3,3] against central differences of the float64 energy under each of the six
    symmetric strains of positions and box (a shear makes the box a general cell); its trace
    is dU/dλ of a uniform scaling, the pressure's virial term."""
    potential, test = good_engine_start
    frames, box = test.positions_nm[:3], test.box_nm[0]
    with jax.enable_x64(True):
        derivative = potential.strain_derivative(frames, box, float64=True)
        h = 1e-5
        for a, b in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = h if a == b else h / 2
            fd = [(potential.energy_float64(f @ (np.eye(3) + strain),
                                            np.diag(box) @ (np.eye(3) + strain))
                   - potential.energy_float64(f @ (np.eye(3) - strain),
                                              np.diag(box) @ (np.eye(3) - strain))) / (2 * h)
                  for f in frames]
            # a shear strain h/2 in (a, b) and (b, a): dU = 2 x (h/2) x dU/dε_ab
            np.testing.assert_allclose(derivative[:, a, b], fd, rtol=1e-6,
                                       atol=1e-6 * np.abs(derivative).max())
        dudl = [(potential.energy_float64(f * (1 + h), box * (1 + h))
                 - potential.energy_float64(f * (1 - h), box * (1 - h))) / (2 * h)
                for f in frames]
    np.testing.assert_allclose(np.trace(derivative, axis1=1, axis2=2), dudl, rtol=1e-6)
    # float32 (the MD default) agrees to its precision
    np.testing.assert_allclose(potential.strain_derivative(frames, box), derivative,
                               rtol=1e-3, atol=1e-3 * np.abs(derivative).max())


def test_pressure_of_an_ideal_gas_is_n_kb_t_over_v():
    n, temperature_K, box = 100, 100.0, np.array([2.0, 2.0, 2.0])
    kinetic = 1.5 * n * BOLTZMANN_KJ_MOL_K * temperature_K
    pressure = checks.pressure_bar([kinetic], [0.0], box)[0]
    assert pressure == pytest.approx(n * BOLTZMANN_KJ_MOL_K * temperature_K / 8.0
                                     * KJ_MOL_NM3_TO_BAR)
    assert pressure == pytest.approx(n * 1.380649e-23 * 100.0 / 8e-27 / 1e5,
                                     rel=1e-6)  # n k_B T / V in SI, then Pa -> bar


def test_rdf_of_the_reference_liquid_and_of_an_ideal_gas(tiny_data):
    frames = read_h5md(tiny_data.dataset / "train.h5")
    r, g = checks.rdf(frames.positions_nm, frames.box_nm[0])
    peak_r, peak_g = checks.first_peak(r, g)
    assert peak_r == pytest.approx(3.73, abs=0.15)  # design.md: 3.73 A at 100 K
    assert peak_g > 2.0
    gas = np.random.default_rng(0).uniform(0, 2.0, size=(200, 64, 3))
    _, g_gas = checks.rdf(gas, [2.0, 2.0, 2.0], n_bins=20)
    assert np.abs(g_gas[5:] - 1.0).max() < 0.15  # uniform: g = 1 (N(N-1)/N² below it)


def test_power_law_and_block_mean():
    dt = np.array([1.0, 2.0, 4.0])
    assert checks.power_law_exponent(dt, 3e-5 * dt**2) == pytest.approx(2.0)
    assert math.isnan(checks.power_law_exponent([1.0], [1.0]))
    blocks = checks.block_mean(np.repeat(np.arange(10.0), 5), n_blocks=10)
    assert blocks["mean"] == pytest.approx(4.5)
    assert blocks["error"] == pytest.approx(np.std(np.arange(10.0), ddof=1) / np.sqrt(10))


def test_md_refuses_a_reference_of_other_settings(md_runs, tiny_data, tmp_path, capsys,
                                                   keep_environment):
    config = dict(md_runs["config"])
    config["md"] = config["md"] | {"nvt_ps": 2.0}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(config))
    code = main(["md", "--config", str(path), "--dataset-dir", str(tiny_data.dataset),
                 "--model", str(md_runs["root"] / "good" / "model"), "--reference-dir",
                 str(md_runs["root"] / "md" / "reference"), "--out-dir", str(tmp_path / "o")])
    assert code == 2
    assert "other md settings" in capsys.readouterr().err
    assert not (tmp_path / "o" / "md.json").exists()
    code = main(["md", "--config", str(tiny_data.config), "--dataset-dir",
                 str(tiny_data.dataset), "--model", str(md_runs["root"] / "good" / "model"),
                 "--out-dir", str(tmp_path / "o")])
    assert code == 2 and "--reference-dir" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reference_and_model(tiny_data, tmp_path_factory):
    """(the reference's MD directory, a model directory): real and cheap (the tiny protocol,
    a pair model trained for one epoch on 16 frames)."""
    root = tmp_path_factory.mktemp("md_inputs")
    config = load_config(tiny_data.config)
    train(read_h5md(tiny_data.dataset / "train.h5").select(list(range(16))),
          read_h5md(tiny_data.dataset / "val.h5"),
          {"model": "pair", "epochs": 1, "energy_weight": 0.01, "force_weight": 1.0},
          None, config["system"]["cutoff_nm"], root / "train", progress=lambda _: None)
    run_reference_md(config, tiny_data.dataset, root / "reference")
    return root / "reference", root / "train" / "model"


@pytest.mark.parametrize("out, option", [
    ("reference/../reference", "--reference-dir"),  # a `..` path
    ("link", "--reference-dir"),  # a symlink to the reference
    ("dataset", "--dataset-dir"),
    ("model", "--model"),
])
def test_md_refuses_an_out_dir_that_is_an_input(reference_and_model, tiny_data, tmp_path,
                                                capsys, keep_environment, out, option):
    """Before any MD: the reference, the dataset and the model are left as they were."""
    reference, model = reference_and_model
    (tmp_path / "link").symlink_to(reference, target_is_directory=True)
    where = {"reference/../reference": reference / ".." / "reference",
             "link": tmp_path / "link", "dataset": tiny_data.dataset, "model": model}[out]
    before = {p.name: p.read_bytes() for p in reference.iterdir()}
    code = main(["md", "--config", str(tiny_data.config), "--dataset-dir",
                 str(tiny_data.dataset), "--model", str(model), "--reference-dir",
                 str(reference), "--out-dir", str(where)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--out-dir {where} is the {option} directory" in err
    assert "its files would be overwritten; choose another --out-dir" in err
    assert {p.name: p.read_bytes() for p in reference.iterdir()} == before
    assert not (tiny_data.dataset / "md.json").exists() and not (model / "md.json").exists()


def test_md_refuses_a_reference_of_another_system(reference_and_model, tiny_data):
    """The reference's md.json records its system (atoms, box, species); a model's run of
    the same dataset matches it, one of another system is refused naming both values, and an
    md.json written before the record existed is still read."""
    reference_dir, _ = reference_and_model
    reference = json.loads((reference_dir / "md.json").read_text())
    test = read_h5md(tiny_data.dataset / "test.h5")
    start = load_config(tiny_data.config)["md"]["start_frame"]
    mine = system_record(test.n_atoms, test.box_nm[start], test.species, None)
    assert reference["system"]["n_atoms"] == 32 and reference["system"]["species"] == {"0": 32}
    require_same_system(reference, mine, reference_dir)  # the OpenMM box is the dataset's
    box = reference["system"]["box_nm"][0]
    for other, message in [
        ({"n_atoms": 100}, r"is of 100 atoms, this run's system has 32$"),
        ({"box_nm": [2.0, 2.0, 2.0]},
         rf"has a box of 2 x 2 x 2 nm, this run's system {box:.6g} x {box:.6g} x {box:.6g} nm"),
        ({"species": {"A": 24, "B": 8}}, r"has species A 24, B 8, this run's system 0 32$"),
    ]:
        edited = reference | {"system": reference["system"] | other}
        where = re.escape(f"--reference-dir {reference_dir}: its md.json")
        with pytest.raises(ForcematchError, match=rf"^{where} {message}"):
            require_same_system(edited, mine, reference_dir)
    older = {k: v for k, v in reference.items() if k != "system"}
    require_same_system(older, mine, reference_dir)


def test_float64_needs_64_bit_jax(good_engine_start):
    potential, test = good_engine_start
    if jnp.zeros(1).dtype == jnp.float64:
        pytest.skip("64-bit JAX is on for the whole session")
    with pytest.raises(Exception, match="64-bit JAX"):
        ModelEngine(potential, test.masses_amu, test.box_nm[0], float64=True)


def test_first_peak_finds_the_centre_between_bins():
    r = np.arange(0.0, 8.5, 0.0425)
    g = 1.0 + 1.7 * np.exp(-((r - 3.7231) / 0.25) ** 2)
    noisy = g + np.random.default_rng(1).normal(0.0, 0.01, r.size)
    peak_r, peak_g = checks.first_peak(r, noisy)
    assert peak_r == pytest.approx(3.7231, abs=0.005)
    assert peak_g == pytest.approx(2.7, abs=0.03)
