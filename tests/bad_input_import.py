"""Catalogue cases: your own trajectories (`forcematch import`, docs/explanation/
refusals.md). The data are a real ASE run (tests/engines.py: its Lennard-Jones calculator driving
its own MD, written as extended XYZ), broken one way per case."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
from catalogue import Case, config_with
from engines import ase_lj_md

N_FRAMES = 30


@functools.cache
def ase_file() -> Path:
    """32 argon atoms, 30 frames 5 fs apart, made once per test session."""
    root = Path(tempfile.mkdtemp(prefix="forcematch_import_cases_"))
    return ase_lj_md(root / "ase.xyz", n_frames=N_FRAMES, stride=1, seed=5, cells=2)


def import_args(tmp, **section) -> list:
    """`forcematch import` of the ASE file (3 blocks) with `section` in the import config."""
    config = config_with(tmp, system={"temperature_K": 120.0},
                         **{"import": {"files": [str(ase_file())], "units": "ase", "blocks": 3,
                                       "gap_frames": 0} | section})
    return ["import", "--config", config, "--out-dir", tmp / "import"]


def rewritten(tmp, edit) -> Path:
    """A copy of the ASE file with `edit(list of Atoms)` applied."""
    import ase.io

    frames = ase.io.read(ase_file(), index=":", format="extxyz")
    frames = edit(frames) or frames
    path = tmp / "edited.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def units_missing(tiny, tmp):
    config = config_with(tmp, **{"import": {"files": [str(ase_file())]}})
    return ["check-config", config]


def units_wrong(tiny, tmp):
    return import_args(tmp, units="gromacs")


def forces_zero(tiny, tmp):
    def zero(frames):
        frames[4].calc.results["forces"] = np.zeros((len(frames[4]), 3))
    return import_args(tmp, files=[str(rewritten(tmp, zero))])


def energies_and_side_file(tmp, rows: slice, columns: int) -> list:
    """The file without energies in it, and a side file with `rows` of its (step, energy)."""
    energies = []

    def strip(frames):
        energies.extend(a.get_potential_energy() for a in frames)
        for atoms in frames:
            atoms.calc.results.pop("energy")
            atoms.calc.results.pop("free_energy", None)
    path = rewritten(tmp, strip)
    table = np.column_stack([np.arange(N_FRAMES), energies])[rows, :columns]
    side = tmp / "energy.txt"
    np.savetxt(side, table, header="step pe")
    return import_args(tmp, files=[str(path)], energy_files=[str(side)])


def energy_missing(tiny, tmp):
    def strip(frames):
        frames[7].calc.results.pop("energy")
        frames[7].calc.results.pop("free_energy", None)
    return import_args(tmp, files=[str(rewritten(tmp, strip))])


def one_frame_overlapping(tiny, tmp):
    def overlap(frames):  # frame 17 of 30: atom 5 placed 0.001 nm from atom 4
        positions = frames[17].get_positions()
        positions[5] = positions[4] + [0.01, 0.0, 0.0]  # Å
        frames[17].set_positions(positions)
    return import_args(tmp, files=[str(rewritten(tmp, overlap))])


CASES = [
    Case("import-units-missing", "`import` without `units` (never guessed)", units_missing,
         r"config key 'import': 'units' is a required property"),
    Case("import-units-wrong", "ASE's eV and Å declared as `units: gromacs`", units_wrong,
         r"ase.xyz: frame 0: 32 atoms in 1616 nm³ are 0.0198 atoms/nm³, outside 1..300 .*"
         r"Fix import.units"),
    Case("import-forces-zero", "forces of a frame all zero", forces_zero,
         r"edited.xyz: forces of frame 4 are all zero \(1 of 30 frames\)"),
    Case("import-energy-missing", "a frame without an energy", energy_missing,
         r"edited.xyz: frame 7 holds no energy: 'energy' is neither a calculator result nor "
         r"in the comment line"),
    Case("import-energy-column-missing", "an energy file without its energy column",
         lambda tiny, tmp: energies_and_side_file(tmp, slice(None), 1),
         r"energy.txt \(import.energy_files\[0\]\), line 2: has no energy column"),
    Case("import-energy-count-mismatch", "an energy file with fewer rows than frames",
         lambda tiny, tmp: energies_and_side_file(tmp, slice(0, 20), 2),
         r"energy.txt \(import.energy_files\[0\]\) has 20 energy rows \(steps 0..19\) for "
         r"30 frames of .*edited.xyz: frame 20 \(step 20\) has no energy"),
    Case("import-species-repeated", "a species name given twice in `import.species` (it "
         "would make an empty species, its untrained table exported)",
         lambda tiny, tmp: ["check-config", config_with(tmp, **{"import": {
             "files": [str(ase_file())], "units": "ase", "species": ["Ar", "Ar"]}})],
         r"bad.yaml: config key 'import.species': \['Ar', 'Ar'\] has non-unique elements"),
    Case("import-overlapping-atoms", "two atoms 0.001 nm apart in one frame of 30 (every frame "
         "is checked)", one_frame_overlapping,
         r"edited.xyz: frame 17: atoms 4 and 5 are 0.001 nm apart, outside 0.05..0.6 nm \(1 of "
         r"30 frames\), where the other frames' closest pairs lie in 0.3\d+..0.3\d+ nm: "
         r"overlapping or misplaced atoms; remove the frame"),
]
