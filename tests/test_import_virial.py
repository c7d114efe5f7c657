"""`forcematch import` reads the virial W = −∂U/∂ε of extended XYZ frames written by ASE: from a
stress (σ, ASE's sign: W = −σV) or a virial (W itself, as libAtoms/MACE/NequIP write it), all
frames or none; files without say so in the log.

The data: a compressed fcc argon crystal (a = 5.0 Å, below the LJ minimum at 5.25 Å) of 48
atoms in a 15 x 10 x 10 Å orthorhombic cell (3 x 2 x 2 cubic cells), rattled, its x edge
stretched a little more in every frame (so every frame has its own volume), with ASE's
LennardJones calculator (σ = 3.405 Å, ε = 0.0103 eV, smooth 7-8 Å cutoff).
"""

from __future__ import annotations

import numpy as np
import pytest

from forcematch.config import validate_config
from forcematch.errors import ForcematchError
from forcematch.imports import import_trajectories, read_parts
from forcematch.io.h5md import read_h5md
from forcematch.units import KJ_MOL_PER_EV_SI, KJ_MOL_PER_KCAL_MOL

EV = KJ_MOL_PER_EV_SI  # kJ/mol
N_FRAMES = 6


def _calculator():
    from ase.calculators.lj import LennardJones

    return LennardJones(sigma=3.405, epsilon=0.0103, rc=8.0, ro=7.0, smooth=True)


def _crystal(k: int):
    """Frame k: the compressed crystal, rattled (seed k), x stretched by 0.4 % per frame."""
    from ase.build import bulk

    atoms = bulk("Ar", "fcc", a=5.0, cubic=True).repeat((3, 2, 2))
    atoms.set_cell(atoms.cell.array * [1 + 0.004 * k, 1, 1], scale_atoms=True)
    atoms.rattle(0.05, seed=k)
    atoms.calc = _calculator()
    return atoms


@pytest.fixture(scope="module")
def crystals() -> list:
    """N_FRAMES frames with ASE's results (energy, forces, stress) computed."""
    frames = [_crystal(k) for k in range(N_FRAMES)]
    for atoms in frames:
        atoms.get_stress()
    return frames


def _write(path, frames, stress=True, info=None) -> None:
    """The frames to `path` (extxyz) with energy, forces and, where `stress` says (a bool, or
    one per frame), the stress; `info(k, atoms)`: entries for the comment line."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    stress = [stress] * len(frames) if isinstance(stress, bool) else stress
    out = []
    for k, atoms in enumerate(frames):
        frame = atoms.copy()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if stress[k]:
            results["stress"] = atoms.get_stress()
        frame.calc = SinglePointCalculator(frame, **results)
        frame.info.update(info(k, atoms) if info else {})
        out.append(frame)
    ase.io.write(path, out, format="extxyz")


def _expected_virial_kJ_mol(frames, energy_kJ_mol: float = EV) -> np.ndarray:
    """W = −σV [T,3,3] of the frames from ASE's own stress, the energy unit in kJ/mol."""
    return np.array([-a.get_stress(voigt=False) * a.get_volume() * energy_kJ_mol
                     for a in frames])


def _config(files, units="ase", **extra) -> dict:
    """Strained crystals are no trajectory: no unit check can run on them (import.trust_units)."""
    return validate_config({"import": {"files": [str(f) for f in files], "units": units,
                                       "trust_units": True, **extra}})


def _refusal(config: dict) -> str:
    with pytest.raises(ForcematchError) as info:
        read_parts(config, progress=None)
    return str(info.value)


# ------------------------------------------------------------------------------------ stress


@pytest.mark.parametrize("units, kj_mol", [
    ("ase", EV),
    ({"length": "angstrom", "energy": "kcal/mol", "force": "kcal/mol/angstrom"},
     KJ_MOL_PER_KCAL_MOL),
])
def test_stress_becomes_the_virial(crystals, tmp_path, units, kj_mol):
    """W = −σV in the declared energy unit, per frame with its own volume (15.0 .. 15.3 Å x
    10 x 10 Å)."""
    path = tmp_path / "stress.xyz"
    _write(path, crystals)
    lines = []
    parts = read_parts(_config([path] * 3, units), progress=lines.append)
    frames, record = parts[0]
    expected = _expected_virial_kJ_mol(crystals, kj_mol)
    assert frames.virial_kJ_mol.shape == (N_FRAMES, 3, 3)
    np.testing.assert_allclose(frames.virial_kJ_mol, expected, rtol=1e-12,
                               atol=1e-12 * np.abs(expected).max())
    volumes = np.array([a.get_volume() for a in crystals])
    assert np.ptp(volumes) > 0.015 * volumes[0]  # the volume differs from frame to frame
    assert np.abs(expected[:, 0, 1]).min() > 0  # shear components too, from the rattle
    assert record["virial_from"] == "−σV from 'stress'"
    assert sum(f"{path}: virial W = −∂U/∂ε from −σV from 'stress'" in line
               for line in lines) == 3  # once per file
    assert not any(line.startswith("no virial") for line in lines)


def test_virial_written_to_the_parts(crystals, tmp_path):
    path = tmp_path / "stress.xyz"
    _write(path, crystals)
    out = tmp_path / "import"
    paths = import_trajectories(_config([path] * 3), out, progress=None)
    np.testing.assert_allclose(read_h5md(paths[1]).virial_kJ_mol,
                               _expected_virial_kJ_mol(crystals), rtol=1e-12)


@pytest.mark.parametrize("keys, info", [
    ({}, lambda k, a: {"virial": -a.get_stress(voigt=False) * a.get_volume()}),
    ({"energy_key": "REF_energy", "force_key": "REF_forces"},
     lambda k, a: {"REF_energy": a.get_potential_energy(),
                   "REF_virials": -a.get_stress(voigt=False) * a.get_volume()}),
    ({"energy_key": "REF_energy", "force_key": "REF_forces"},
     lambda k, a: {"REF_energy": a.get_potential_energy(),
                   "REF_stress": a.get_stress(voigt=False)}),
], ids=["virial", "REF_virials", "REF_stress"])
def test_virial_and_prefixed_keys(crystals, tmp_path, keys, info):
    """A virial (W in eV, MACE's and NequIP's sign: W = −σV) in the comment line, and keys with
    the prefix of import.energy_key; no calculator stress in the file."""
    import ase.io

    frames = []
    for k, atoms in enumerate(crystals):
        frame = atoms.copy()
        frame.info.update(info(k, atoms))
        if keys:
            frame.arrays["REF_forces"] = atoms.get_forces()
        else:
            from ase.calculators.singlepoint import SinglePointCalculator

            frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                               forces=atoms.get_forces())
        frames.append(frame)
    path = tmp_path / "virial.xyz"
    ase.io.write(path, frames, format="extxyz")
    imported = read_parts(_config([path] * 3, **keys), progress=None)[0][0]
    expected = _expected_virial_kJ_mol(crystals)
    np.testing.assert_allclose(imported.virial_kJ_mol, expected, rtol=1e-12,
                               atol=1e-12 * np.abs(expected).max())


def test_virial_and_stress_must_agree(crystals, tmp_path):
    """Both in a frame: −σV and the virial agree, or the file is refused (here a virial of the
    other sign from frame 2 on)."""
    agree = tmp_path / "agree.xyz"
    _write(agree, crystals,
           info=lambda k, a: {"virial": -a.get_stress(voigt=False) * a.get_volume()})
    frames, record = read_parts(_config([agree] * 3), progress=None)[0]
    np.testing.assert_allclose(frames.virial_kJ_mol, _expected_virial_kJ_mol(crystals),
                               rtol=1e-12)
    assert record["virial_from"] == "'virial'"
    flipped = tmp_path / "flipped.xyz"
    _write(flipped, crystals, info=lambda k, a: {
        "virial": (1 if k < 2 else -1) * -a.get_stress(voigt=False) * a.get_volume()})
    message = _refusal(_config([flipped] * 3))
    assert f"{flipped}: frame 2: 'virial'" in message and "−σV from 'stress'" in message
    assert "sign convention" in message


def test_stress_on_some_frames_is_refused(crystals, tmp_path):
    path = tmp_path / "some.xyz"
    _write(path, crystals, stress=[True, True, False, True, False, True])
    message = _refusal(_config([path] * 3))
    assert f"{path}: frame 2 holds no stress or virial" in message
    assert "4 of 6 frames" in message and "every frame or in none" in message


def test_files_with_and_without_a_virial(crystals, tmp_path):
    with_stress, without = tmp_path / "with.xyz", tmp_path / "without.xyz"
    _write(with_stress, crystals)
    _write(without, crystals, stress=False)
    message = _refusal(_config([with_stress, without, with_stress]))
    assert f"{with_stress} holds a virial and {without} none" in message


def test_no_stress_no_virial(crystals, tmp_path):
    """One file (3 blocks of 2 frames): virial None, and the log says so once."""
    path = tmp_path / "plain.xyz"
    _write(path, crystals, stress=False)
    lines = []
    parts = read_parts(_config([path], blocks=3, gap_frames=0), progress=lines.append)
    assert len(parts) == 3 and all(p[0].virial_kJ_mol is None for p in parts)
    assert parts[0][1]["virial_from"] is None
    message = (f"no virial in {path}: the stress loss (train.stress_weight) cannot be used with "
               "these data")
    assert lines.count(message) == 1


# ----------------------------------------------------------------------------------- physics


def _strained_energy_eV(atoms, strain: np.ndarray) -> float:
    """ASE's LennardJones energy with cell and positions deformed by 1 + strain."""
    deformed = atoms.copy()
    deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    deformed.calc = _calculator()
    return deformed.get_potential_energy()


def test_virial_sign_and_strain_derivative(crystals, tmp_path):
    """The compressed crystal pushes outwards: tr W > 0 (positive pressure); and W = −∂U/∂ε,
    each diagonal element and the trace against central differences of the calculator's own
    energy under a uniaxial and a uniform scaling of cell and positions, in kJ/mol."""
    path = tmp_path / "stress.xyz"
    _write(path, crystals)
    virial = read_parts(_config([path] * 3), progress=None)[0][0].virial_kJ_mol
    h = 1e-5
    for k in (0, N_FRAMES - 1):
        atoms, w = crystals[k], virial[k]
        assert np.trace(w) > 0
        pressure_bar = np.trace(w) / (3 * atoms.get_volume() * 1e-3) * 16.605390666
        assert 1e3 < pressure_bar < 1e5  # kJ/mol/nm³ -> bar: kilobars in a compressed solid
        for a in range(3):
            strain = np.zeros((3, 3))
            strain[a, a] = h
            fd = -(_strained_energy_eV(atoms, strain) - _strained_energy_eV(atoms, -strain))
            assert w[a, a] == pytest.approx(fd / (2 * h) * EV, rel=1e-6)
        uniform = np.eye(3) * h
        fd = -(_strained_energy_eV(atoms, uniform) - _strained_energy_eV(atoms, -uniform))
        assert np.trace(w) == pytest.approx(fd / (2 * h) * EV, rel=1e-6)
