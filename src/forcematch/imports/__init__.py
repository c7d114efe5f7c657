"""Trajectories with forces from other engines, in place of the simulate stage.

`forcematch import` reads the files of the config's `import` section, converts them from the
declared units (`import.units`; never guessed) to the project's, checks them and writes one
H5MD file per part, in the layout the simulate stage writes: part k is file k when several
files are given, else block k of the one file (contiguous blocks with `import.gap_frames`
dropped between them). The dataset stage treats the parts like replicas.

    common.py   settings, a trajectory in its file's units, energy side files, to_frames
    extxyz.py   extended XYZ through ASE (with the virial, from a stress or virial per frame)
    mda.py      LAMMPS dumps and other trajectories through MDAnalysis
    checks.py   energies against the work of the forces, the temperature, positions
    run.py      read, check, cut into parts, write

Every message of a refusal names the file, the frame and the config key to fix.
"""

from forcematch.imports.common import ImportSettings, RawTrajectory
from forcematch.imports.run import (
    block_slices,
    check_trajectory,
    import_trajectories,
    part_name,
    read_parts,
    read_trajectory,
)

__all__ = [
    "ImportSettings",
    "RawTrajectory",
    "block_slices",
    "check_trajectory",
    "import_trajectories",
    "part_name",
    "read_parts",
    "read_trajectory",
]
