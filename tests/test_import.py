"""`forcematch import` on files made by the real tools: ASE (extended XYZ, also gzipped), LAMMPS
(a `units real` dump and a fix print energy file) and MDAnalysis (TRR + GRO).

The data are an argon-like Lennard-Jones liquid of 64 atoms (σ = 3.405 Å, ε = 0.0103 eV, a
smooth 7-8 Å cutoff) in a 14.792 Å cubic box (19.8 atoms/nm³), run for a few hundred 5 fs steps.
"""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from engines import lammps_lj_md

from forcematch import cli
from forcematch.config import config_hash, stage_config, validate_config
from forcematch.errors import ForcematchError
from forcematch.imports import block_slices, read_parts
from forcematch.io.h5md import read_h5md, read_parameters
from forcematch.units import BOHR_NM, KJ_MOL_PER_EV_SI, KJ_MOL_PER_HARTREE

BOX_A = 14.792  # 64 atoms at 1.3137 g/cm3
N_FRAMES = 80
EV = KJ_MOL_PER_EV_SI  # kJ/mol


# ------------------------------------------------------------------------------------ the data


def _lattice(n: int = 4) -> np.ndarray:
    grid = np.arange(n) * BOX_A / n
    return np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)


def _ase_frames() -> list:
    """N_FRAMES consecutive frames of ASE VelocityVerlet MD (5 fs) with their results."""
    from ase import Atoms, units
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.verlet import VelocityVerlet

    atoms = Atoms("Ar64", positions=_lattice(), cell=[BOX_A] * 3, pbc=True)
    atoms.calc = LennardJones(sigma=3.405, epsilon=0.0103, rc=8.0, ro=7.0, smooth=True)
    masses = atoms.get_masses()[:, None]  # Maxwell-Boltzmann at 200 K, no net momentum
    momenta = np.sqrt(masses * units.kB * 200) * np.random.default_rng(1).normal(size=(64, 3))
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    dyn = VelocityVerlet(atoms, timestep=5 * units.fs)
    dyn.run(100)  # melt the lattice
    frames = []
    for _ in range(N_FRAMES):
        dyn.run(1)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces())
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def ase_data(tmp_path_factory):
    """(extxyz path, its gzipped copy, the frames ASE wrote)."""
    import ase.io

    root = tmp_path_factory.mktemp("ase")
    frames = _ase_frames()
    path = root / "lj.xyz"
    ase.io.write(path, frames, format="extxyz")
    gz = root / "lj.xyz.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    return path, gz, frames


@pytest.fixture(scope="module")
def lammps_data(tmp_path_factory):
    """The directory of a real LAMMPS run of 64 atoms: lj.dump, energy.txt, lj.data."""
    try:
        return lammps_lj_md(tmp_path_factory.mktemp("lammps"), n_frames=80, stride=2, cells=4)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"`lmp` cannot run: {exc}")


def _dump_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(positions, forces) of every frame of the dump, parsed here in float64 (sorted by id)."""
    lines = path.read_text().splitlines()
    frames = []
    for i, line in enumerate(lines):
        if line.startswith("ITEM: ATOMS"):
            n = int(lines[i - 5])
            rows = np.array([row.split() for row in lines[i + 1:i + 1 + n]], float)
            frames.append(rows[np.argsort(rows[:, 0])])
    data = np.array(frames)
    return data[:, :, 2:5], data[:, :, 5:8]


def _config(files, units, **extra) -> dict:
    return validate_config({"import": {"files": [str(f) for f in files], "units": units,
                                       **extra}})


def _refusal(config: dict) -> str:
    with pytest.raises(ForcematchError) as info:
        read_parts(config, progress=None)
    return str(info.value)


# ----------------------------------------------------------------------------------- extxyz


def test_decompressed_size_is_bounded(ase_data, monkeypatch):
    """A compressed file is refused once its text passes the bound (here set to one byte less
    than the real file's text), before ASE parses any of it."""
    from forcematch.imports import extxyz

    path, gz, _ = ase_data
    text_bytes = path.stat().st_size
    monkeypatch.setattr(extxyz, "MAX_DECOMPRESSED_BYTES", text_bytes - 1)
    monkeypatch.setattr(extxyz, "_CHUNK_BYTES", 4096)
    with pytest.raises(ForcematchError, match=rf"{gz}: decompresses to more than 0 MiB "
                       r"\([\d,]+ bytes compressed\): decompress it yourself"):
        extxyz._text_source(gz)
    monkeypatch.setattr(extxyz, "MAX_DECOMPRESSED_BYTES", text_bytes)
    assert extxyz._text_source(gz).getvalue() == path.read_text()


def test_extxyz_equals_ase_converted(ase_data):
    path, gz, frames = ase_data
    lines = []
    parts = read_parts(_config([path, gz, path], "ase"), progress=lines.append)
    assert len(parts) == 3
    imported, record = parts[0]
    x = np.array([a.positions for a in frames])
    f = np.array([a.get_forces() for a in frames])
    u = np.array([a.get_potential_energy() for a in frames])
    assert imported.positions_nm.dtype == np.float64
    np.testing.assert_allclose(imported.positions_nm, x * 0.1, rtol=0, atol=1e-9)  # %.8f Å
    np.testing.assert_allclose(imported.forces_kJ_mol_nm, f * EV * 10, rtol=0, atol=1e-5)
    np.testing.assert_allclose(imported.potential_energy_kJ_mol, u * EV, rtol=1e-12)
    np.testing.assert_allclose(imported.box_nm, 1.4792)
    np.testing.assert_allclose(imported.masses_amu, frames[0].get_masses())
    assert np.all(imported.species == 0) and record["species"] == ["Ar"]
    assert record["units"]["energy_to_kJ_mol"] == pytest.approx(96.48533212, rel=1e-9)
    assert record["frames_read"] == N_FRAMES
    # the gzipped copy reads the same
    np.testing.assert_array_equal(parts[1][0].positions_nm, imported.positions_nm)
    np.testing.assert_array_equal(parts[1][0].forces_kJ_mol_nm, imported.forces_kJ_mol_nm)
    # the work check passed, on numbers that say so
    checks = record["checks"]
    assert checks["close"] and abs(checks["slope"] - 1) < 0.01 and checks["r2"] > 0.999
    assert checks["interval_ps"] == pytest.approx(0.005, rel=0.02)
    assert sum(line.startswith("read ") for line in lines) == 3  # one line per file
    assert any(line.startswith(f"read {gz}: 80 frames of 64 atoms") for line in lines)
    assert any("energies and forces agree" in line for line in lines)
    # no stress in the file: no virial, said once per file
    assert imported.virial_kJ_mol is None and record["virial_from"] is None
    assert sum(line.startswith("no virial in ") and "train.stress_weight" in line
               for line in lines) == 3


def test_extxyz_other_keys(ase_data, tmp_path):
    """Energies and forces under other names (atoms.info / atoms.arrays)."""
    import ase.io

    frames = []
    for atoms in ase_data[2][:12]:
        frame = atoms.copy()
        frame.info["REF_energy"] = atoms.get_potential_energy()
        frame.arrays["REF_forces"] = atoms.get_forces()
        frames.append(frame)
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, frames, format="extxyz")
    parts = read_parts(_config([path, path, path], "ase", energy_key="REF_energy",
                               force_key="REF_forces"), progress=None)
    np.testing.assert_allclose(parts[0][0].potential_energy_kJ_mol,
                               [a.info["REF_energy"] * EV for a in frames], rtol=1e-12)
    np.testing.assert_allclose(parts[0][0].forces_kJ_mol_nm[3],
                               frames[3].arrays["REF_forces"] * EV * 10, atol=1e-5)


@pytest.mark.parametrize("change, expected", [
    (lambda a: a.set_pbc(False), "frame 3 is not periodic"),
    (lambda a: a.set_cell([[BOX_A, 0, 0], [2.0, BOX_A, 0], [0, 0, BOX_A]]),
     "frame 3: the cell is not orthorhombic"),
])
def test_extxyz_refuses_other_boxes(ase_data, tmp_path, change, expected):
    import ase.io

    frames = [a.copy() for a in ase_data[2][:6]]
    for a, b in zip(frames, ase_data[2], strict=False):
        a.calc = b.calc
    change(frames[3])
    path = tmp_path / "box.xyz"
    ase.io.write(path, frames, format="extxyz")
    message = _refusal(_config([path] * 3, "ase"))
    assert str(path) in message and expected in message


def test_extxyz_without_energies(ase_data, tmp_path):
    import ase.io

    frames = []
    for atoms in ase_data[2][:5]:
        frame = atoms.copy()
        frame.arrays["forces"] = atoms.get_forces()
        frames.append(frame)
    path = tmp_path / "no_energy.xyz"
    ase.io.write(path, frames, format="extxyz")
    message = _refusal(_config([path] * 3, "ase"))
    assert f"{path}: frame 0 holds no energy" in message
    assert "import.energy_key" in message and "import.energy_files" in message


def test_gromacs_units_for_an_ase_file(ase_data):
    message = _refusal(_config([ase_data[0]] * 3, "gromacs"))
    # lengths in Å read as nm: 0.0198 atoms/nm³ instead of 19.8
    assert f"{ase_data[0]}: frame 0" in message and "0.01977 atoms/nm³" in message
    assert "import.units" in message and "gromacs" in message


def test_energy_and_force_units_disagree(ase_data):
    units = {"length": "angstrom", "energy": "eV", "force": "kcal/mol/angstrom"}
    message = _refusal(_config([ase_data[0]] * 3, units))
    assert "23.06 (eV per kcal/mol)" in message and "import.units" in message


def test_temperature_check_against_system(ase_data):
    """The data (~140 K) against a system.temperature_K 4.184 times too low: a kcal-for-kJ
    confusion of both energies and forces would look the same."""
    config = _config([ase_data[0]] * 3, "ase")
    config["system"]["temperature_K"] = 140 / 4.184
    message = _refusal(config)
    assert "system.temperature_K" in message and "import.units" in message
    assert "4.184 (kcal/mol per kJ/mol)" in message


# ---------------------------------------------------------------------------------- LAMMPS


def test_lammps_dump_equals_lammps_converted(lammps_data):
    dump, energy_file = lammps_data / "lj.dump", lammps_data / "energy.txt"
    config = _config([dump], "lammps_real", energy_files=[str(energy_file)],
                     masses_amu={"1": 39.948}, blocks=3, gap_frames=0)
    lines = []
    parts = read_parts(config, progress=lines.append)
    positions, forces = _dump_columns(dump)
    energies = np.loadtxt(energy_file)
    frames = parts[0][0].concatenate([p[0] for p in parts])
    t = frames.n_frames
    assert t == 78  # 80 frames in 3 blocks of 26, 2 left over
    np.testing.assert_allclose(frames.forces_kJ_mol_nm, forces[:t] * 41.84, rtol=1e-6,
                               atol=1e-6)  # MDAnalysis reads float32
    np.testing.assert_allclose(frames.positions_nm, positions[:t] * 0.1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(frames.potential_energy_kJ_mol, energies[:t, 1] * 4.184,
                               rtol=1e-12)
    np.testing.assert_array_equal(frames.step, energies[:t, 0])
    np.testing.assert_allclose(frames.box_nm, 1.4792)
    np.testing.assert_array_equal(frames.masses_amu, 39.948)
    record = parts[0][1]
    assert record["species"] == ["1"] and record["coordinates"] == "unwrapped"
    assert record["checks"]["close"] and abs(record["checks"]["slope"] - 1) < 0.01
    # ~100 K by Nosé-Hoover; 2 steps of 5 fs between frames
    assert 60 < record["checks"]["temperature_K"] < 150
    assert record["checks"]["interval_ps"] == pytest.approx(0.010, rel=0.03)
    # a dump holds no virial: said once
    assert all(p[0].virial_kJ_mol is None for p in parts)
    assert lines.count(f"no virial in {dump}: the stress loss (train.stress_weight) cannot be "
                       "used with these data") == 1


def _dump_edited(lammps_data, tmp_path, edit) -> Path:
    """A copy of the real dump with `edit(lines)` applied to its lines."""
    lines = (lammps_data / "lj.dump").read_text().splitlines(keepends=True)
    path = tmp_path / "edited.dump"
    path.write_text("".join(edit(lines)))
    return path


def _frame_starts(lines) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")]


def test_a_dump_whose_atom_count_changes_is_refused(lammps_data, tmp_path):
    def drop_an_atom(lines):  # frame 40 of 80 loses its last atom line (63 of 64 atoms)
        start, end = _frame_starts(lines)[40], _frame_starts(lines)[41]
        lines[start + 3] = "63\n"
        return lines[:end - 1] + lines[end:]
    config = _config([_dump_edited(lammps_data, tmp_path, drop_an_atom)], "lammps_real",
                     masses_amu={"1": 39.948}, gap_frames=0)
    assert _refusal(config) == (f"{tmp_path / 'edited.dump'}: frame 40 holds 63 atoms, frame 0 "
                                "64: forcematch imports a fixed set of atoms")


def test_a_dump_cut_short_is_refused_not_shortened(lammps_data, tmp_path):
    def cut(lines):  # killed while writing: the last frame has 10 of its 64 atom lines
        return lines[:_frame_starts(lines)[-1] + 9 + 10]
    config = _config([_dump_edited(lammps_data, tmp_path, cut)], "lammps_real",
                     masses_amu={"1": 39.948}, gap_frames=0)
    assert _refusal(config) == (f"{tmp_path / 'edited.dump'}: frame 79 has 10 of its 64 atom "
                                "lines (a file cut short, or written by two runs at once)")


def test_a_dump_with_two_runs_appended_is_refused(lammps_data, tmp_path):
    def appended(lines):  # the same run written twice into one file: steps go back at frame 80
        return lines + lines
    config = _config([_dump_edited(lammps_data, tmp_path, appended)], "lammps_real",
                     energy_files=[str(lammps_data / "energy.txt")], masses_amu={"1": 39.948},
                     gap_frames=0)
    message = _refusal(config)
    assert message.startswith(f"{tmp_path / 'edited.dump'}: frame 80 has step 0, not after "
                              "frame 79's 158 (1 such frames): frames must be in time order")


def test_lammps_masses_from_the_data_file(lammps_data):
    config = _config([lammps_data / "lj.dump"], "lammps_real",
                     energy_files=[str(lammps_data / "energy.txt")],
                     topology=str(lammps_data / "lj.data"), gap_frames=2)
    parts = read_parts(config, progress=None)
    np.testing.assert_array_equal(parts[0][0].masses_amu, 39.948)


def test_lammps_metal_for_a_real_dump(lammps_data):
    config = _config([lammps_data / "lj.dump"], "lammps_metal",
                     energy_files=[str(lammps_data / "energy.txt")], masses_amu={"1": 39.948})
    message = _refusal(config)
    # energies and forces 23.06 times too large: the same slope, 23 times the temperature
    assert str(lammps_data / "lj.dump") in message and "system.temperature_K = 100 K" in message
    assert "23.06 (eV per kcal/mol)" in message and "import.units" in message
    assert "lammps_real would give" in message


def test_lammps_missing_mass(lammps_data):
    config = _config([lammps_data / "lj.dump"], "lammps_real",
                     energy_files=[str(lammps_data / "energy.txt")])
    message = _refusal(config)
    assert "no mass for species '1'" in message and "import.masses_amu" in message
    assert str(lammps_data / "lj.dump") in message


def test_energy_file_too_short(lammps_data, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("\n".join((lammps_data / "energy.txt").read_text().splitlines()[:71]))
    config = _config([lammps_data / "lj.dump"], "lammps_real", energy_files=[str(short)],
                     masses_amu={"1": 39.948})
    message = _refusal(config)
    assert f"{short} (import.energy_files[0]) has 70 energy rows" in message
    assert "for 80 frames" in message and "frame 70 (step 140) has no energy" in message


def test_energy_file_without_energy_column(lammps_data, tmp_path):
    steps = tmp_path / "steps.txt"
    steps.write_text("# step\n" + "\n".join(str(2 * k) for k in range(80)) + "\n")
    config = _config([lammps_data / "lj.dump"], "lammps_real", energy_files=[str(steps)],
                     masses_amu={"1": 39.948})
    message = _refusal(config)
    assert f"{steps} (import.energy_files[0]), line 2: has no energy column" in message


def test_dump_without_forces(lammps_data, tmp_path):
    rows = []
    for line in (lammps_data / "lj.dump").read_text().splitlines():
        parts = line.split()
        rows.append(" ".join(parts[:5]) if len(parts) == 8 and parts[0] != "ITEM:" else line)
    path = tmp_path / "no_forces.dump"
    path.write_text("\n".join(rows).replace(" fx fy fz", "") + "\n")
    config = _config([path], "lammps_real", energy_files=[str(lammps_data / "energy.txt")],
                     masses_amu={"1": 39.948})
    message = _refusal(config)
    assert f"{path}: frame 0 holds no forces" in message and "fx fy fz" in message


# ----------------------------------------------------------------------- MDAnalysis: TRR + GRO


@pytest.fixture(scope="module")
def trr_data(ase_data, tmp_path_factory):
    """The ASE frames as a GROMACS TRR (nm, kJ/mol/nm, 5 fs apart) with a GRO topology and an
    energy side file."""
    import MDAnalysis as mda

    root = tmp_path_factory.mktemp("trr")
    frames = ase_data[2]
    u = mda.Universe.empty(64, n_residues=64, atom_resindex=np.arange(64), trajectory=True,
                           forces=True)
    u.add_TopologyAttr("name", ["Ar"] * 64)
    u.add_TopologyAttr("resname", ["AR"] * 64)
    u.add_TopologyAttr("resid", np.arange(1, 65))
    u.dimensions = [BOX_A] * 3 + [90.0] * 3
    u.atoms.positions = frames[0].positions
    u.atoms.write(root / "lj.gro")
    with mda.Writer(str(root / "lj.trr"), 64) as writer:
        for k, atoms in enumerate(frames):
            u.atoms.positions = atoms.positions  # MDAnalysis: Å, kJ/(mol Å); TRR: nm
            u.atoms.forces = atoms.get_forces() * EV
            u.dimensions = [BOX_A] * 3 + [90.0] * 3
            u.trajectory.ts.data["step"] = 10 + k
            u.trajectory.ts.data["time"] = 0.005 * k
            writer.write(u.atoms)
    energy = np.array([[10 + k, a.get_potential_energy() * EV] for k, a in enumerate(frames)])
    np.savetxt(root / "energy.txt", energy, fmt=["%d", "%.17g"], header="step pe")
    return root


def test_trr_through_mdanalysis(trr_data, ase_data):
    config = _config([trr_data / "lj.trr"], "gromacs", topology=str(trr_data / "lj.gro"),
                     energy_files=[str(trr_data / "energy.txt")], masses_amu={"Ar": 39.948},
                     blocks=3, gap_frames=4)
    lines = []
    parts = read_parts(config, progress=lines.append)
    frames = ase_data[2]
    first = parts[0][0]
    np.testing.assert_allclose(first.positions_nm, [a.positions * 0.1 for a in frames[:24]],
                               atol=1e-6)  # TRR float32
    np.testing.assert_allclose(first.forces_kJ_mol_nm,
                               [a.get_forces() * EV * 10 for a in frames[:24]], rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_allclose(first.time_ps, 0.005 * np.arange(24), atol=1e-9)
    assert parts[0][1]["species"] == ["Ar"]
    assert any("frames 0.005 ps apart" in line for line in lines)
    assert any("4 frames dropped between blocks: 5 steps, 0.025 ps" in line for line in lines)
    assert first.virial_kJ_mol is None  # MDAnalysis reads no virial: the log says so, once
    assert lines.count(f"no virial in {trr_data / 'lj.trr'}: the stress loss "
                       "(train.stress_weight) cannot be used with these data") == 1


def test_trr_declared_in_angstrom(trr_data):
    config = _config([trr_data / "lj.trr"], "ase", topology=str(trr_data / "lj.gro"),
                     energy_files=[str(trr_data / "energy.txt")], masses_amu={"Ar": 39.948})
    message = _refusal(config)
    assert "reads this format's length in nm" in message and "import.units" in message


# ------------------------------------------------------------------------------ blocks, units


def test_block_slices():
    blocks = block_slices(80, 3, 5, "f")
    assert blocks == [slice(0, 23), slice(28, 51), slice(56, 79)]
    assert block_slices(10, 3, 0, "f") == [slice(0, 3), slice(3, 6), slice(6, 9)]
    with pytest.raises(ForcematchError, match="import.blocks = 3 .* import.gap_frames = 5"):
        block_slices(12, 3, 5, "f")


def test_blocks_of_one_file(ase_data):
    parts = read_parts(_config([ase_data[0]], "ase", blocks=3, gap_frames=5), progress=None)
    assert [p[1]["frame_range"] for p in parts] == [[0, 23], [28, 51], [56, 79]]
    assert [p[1]["block"] for p in parts] == [0, 1, 2]
    for frames, record in parts:  # contiguous frames, in order, never shuffled
        np.testing.assert_array_equal(frames.step, np.arange(*record["frame_range"]))
    ase_energy = [a.get_potential_energy() * EV for a in ase_data[2]]
    np.testing.assert_allclose(parts[1][0].potential_energy_kJ_mol, ase_energy[28:51])


def test_unit_constants():
    import scipy.constants as sc

    assert EV == pytest.approx(sc.e * sc.N_A / 1e3, rel=1e-12)
    assert KJ_MOL_PER_HARTREE == pytest.approx(
        sc.physical_constants["Hartree energy"][0] * sc.N_A / 1e3, rel=1e-9)
    assert BOHR_NM == pytest.approx(sc.physical_constants["Bohr radius"][0] * 1e9, rel=1e-9)


# ------------------------------------------------------------------------------------- the CLI


def test_cli_writes_parts(ase_data, tmp_path, capsys):
    config_path = tiny_config(tmp_path, **{"import": {
        "files": [str(ase_data[1])], "units": "ase", "blocks": 3, "gap_frames": 2}})
    out = tmp_path / "results" / "import"
    assert cli.main(["import", "--config", str(config_path), "--out-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert [line.split(":")[0] for line in stdout.splitlines() if line.startswith("part ")] \
        == ["part 0", "part 1", "part 2"]
    config = validate_config(yaml.safe_load(config_path.read_text()))
    expected_hash = config_hash(stage_config(config, "import"))
    for k in range(3):
        frames = read_h5md(out / f"part_{k}.h5")
        assert frames.n_frames == 25 and frames.n_atoms == 64
        np.testing.assert_array_equal(frames.species, 0)
        np.testing.assert_allclose(frames.masses_amu, 39.948)
        parameters = read_parameters(out / f"part_{k}.h5")
        assert parameters["replica"] == k and parameters["config_hash"] == expected_hash
        assert parameters["source"]["path"] == str(ase_data[1])
    assert sorted(p.name for p in out.iterdir()) == ["part_0.h5", "part_1.h5", "part_2.h5"]


def test_cli_refusal_is_one_line(ase_data, tmp_path, capsys):
    config_path = tiny_config(tmp_path, **{"import": {"files": [str(ase_data[0])],
                                                      "units": "gromacs"}})
    out = tmp_path / "out"
    assert cli.main(["import", "--config", str(config_path), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("forcematch import: error:") and "atoms/nm³" in err
    assert not out.exists()


def test_frames_too_far_for_the_work_check_are_judged_by_their_temperature(ase_data):
    """Frames 100 fs apart cannot test energies against forces, but their temperature estimate
    (biased high, within ×2) still refuses forces 23.06 times too large (eV declared for kcal/mol);
    correct units pass, and data with no estimate at all pass only with import.trust_units."""
    from forcematch.imports.checks import check_temperature, check_work, pair_statistics
    from forcematch.units import source_units

    frames = read_parts(_config([ase_data[0]] * 3, "ase"), progress=None)[0][0]
    far = frames.select(slice(None, None, 20))
    stats = pair_statistics(far)
    assert not stats.close
    units = source_units("ase")
    assert "too far apart (or too few)" in check_work(stats, "f", units)
    kinetic_K = 140.0  # the ASE run's kinetic temperature (module docstring of checks)
    assert "temperature" in check_temperature(stats, "f", units, kinetic_K)
    wrong = pair_statistics(dataclasses.replace(far, forces_kJ_mol_nm=far.forces_kJ_mol_nm * 23.06))
    with pytest.raises(ForcematchError, match=r"f: forces and displacements of consecutive "
                       r"frames put the data at \d+ K, (2\d|3\d)\.?\d* times"):
        check_temperature(wrong, "f", units, kinetic_K)
    none = dataclasses.replace(wrong, temperature_K=float("nan"))
    with pytest.raises(ForcematchError, match=r"f: no unit check can run on these data: frames "
                       r"too far apart .*set import.trust_units: true"):
        check_temperature(none, "f", units, kinetic_K)
    assert "import.trust_units" in check_temperature(none, "f", units, kinetic_K, True)


def test_energies_shifted_by_a_row_are_refused_unless_declared_loose(ase_data):
    from forcematch.imports.checks import check_work, pair_statistics
    from forcematch.units import source_units

    frames = read_parts(_config([ase_data[0]] * 3, "ase"), progress=None)[0][0]
    shifted = dataclasses.replace(frames, potential_energy_kJ_mol=np.roll(
        frames.potential_energy_kJ_mol, 1))
    stats = pair_statistics(shifted)
    assert stats.close and stats.r2 < 0.9
    with pytest.raises(ForcematchError, match=r"f: the energy changes between consecutive "
                       r"frames follow the work of the forces only loosely .*not shifted by a "
                       r"row.*set import.loose_energies: true"):
        check_work(stats, "f", source_units("ase"))
    assert "WARNING" in check_work(stats, "f", source_units("ase"), loose_energies=True)


def test_frame_times_against_forces(trr_data):
    """Forces and energies 4.184 times too large, with the file's frame times: the interval the
    forces' dynamics imply is 2.05 times shorter than the file's."""
    from forcematch.imports.checks import check_frame_times, pair_statistics
    from forcematch.units import source_units

    config = _config([trr_data / "lj.trr"], "gromacs", topology=str(trr_data / "lj.gro"),
                     energy_files=[str(trr_data / "energy.txt")], masses_amu={"Ar": 39.948},
                     blocks=3, gap_frames=4)
    frames = read_parts(config, progress=None)[0][0]
    scaled = dataclasses.replace(frames, forces_kJ_mol_nm=frames.forces_kJ_mol_nm * 4.184,
                                 potential_energy_kJ_mol=frames.potential_energy_kJ_mol * 4.184)
    with pytest.raises(ForcematchError, match=r"times too large, close to the factor 4.184 "
                                              r"\(kcal/mol per kJ/mol\).*import.units"):
        check_frame_times(pair_statistics(scaled), scaled, "f", source_units("gromacs"))


def test_species_order_and_unknown_species(ase_data):
    parts = read_parts(_config([ase_data[0]] * 3, "ase", species=["Ne", "Ar"]), progress=None)
    np.testing.assert_array_equal(parts[0][0].species, 1)
    assert parts[0][1]["species"] == ["Ne", "Ar"]
    message = _refusal(_config([ase_data[0]] * 3, "ase", species=["Ne"]))
    assert "atom 0 is of species 'Ar', which import.species ['Ne'] does not list" in message


def test_files_must_hold_the_same_atoms(ase_data, tmp_path):
    import ase.io

    frames = [a.copy() for a in ase_data[2][:20]]
    for frame, atoms in zip(frames, ase_data[2], strict=False):
        frame.calc = atoms.calc
        frame.symbols[5] = "Ne"
    path = tmp_path / "neon.xyz"
    ase.io.write(path, frames, format="extxyz")
    message = _refusal(_config([ase_data[0], path, ase_data[0]], "ase"))
    assert f"{path} and {ase_data[0]}: atom 5 has species Ne and Ar" in message
