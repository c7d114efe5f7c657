"""LAMMPS dumps and other trajectories with forces (TRR, H5MD, ...) through MDAnalysis.

Values are read as the file stores them (`convert_units=False`), in the units `import.units`
declares; where MDAnalysis knows a format's units (TRR: nm, kJ/(mol nm), ps) the declaration
must agree. A LAMMPS dump has no units, masses or energies: masses come from the Masses section
of a LAMMPS data file (`import.topology`) or `import.masses_amu`, energies from a side file.
Dumps may hold wrapped (x y z), unwrapped (xu yu zu) or scaled coordinates; MDAnalysis returns
them unscaled and they are kept as they are. MDAnalysis returns dump values as float32.
No virial is read (a dump holds none; the import log says so): these data cannot train the
stress term (train.stress_weight).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from forcematch.errors import ForcematchError
from forcematch.imports.common import ImportSettings, RawTrajectory, box_from_dimensions

# Project units in MDAnalysis's names.
_MDA_LENGTH = "nm"
_MDA_FORCE = "kJ/(mol*nm)"


def _universe(path: Path, topology: Path | None, **kwargs):
    import MDAnalysis as mda

    args = (str(topology), str(path)) if topology is not None else (str(path),)
    try:
        with warnings.catch_warnings():
            # "Guessed all Masses to 1.0", "Reader has no dt information": neither is used.
            warnings.simplefilter("ignore", UserWarning)
            return mda.Universe(*args, convert_units=False, **kwargs)
    except Exception as exc:  # MDAnalysis raises many kinds (ValueError, OSError, ...)
        what = f"{path} with topology {topology}" if topology else str(path)
        raise ForcematchError(f"MDAnalysis cannot read {what}: "
                              f"{type(exc).__name__}: {exc}") from exc


def _read_frames(universe, path: Path, missing_forces: str) -> dict:
    """positions, forces, box, steps, times (in the file's time unit) and the file's
    `potential_energy` observable where it has one, of every frame."""
    traj = universe.trajectory
    t, n = len(traj), universe.atoms.n_atoms
    out = {"positions": np.empty((t, n, 3)), "forces": np.empty((t, n, 3)),
           "box": np.empty((t, 3)), "step": np.empty(t, np.int64), "time": np.full(t, np.nan)}
    energies = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for k, ts in enumerate(traj):
            if not ts.has_forces:
                raise ForcematchError(f"{path}: frame {k} holds no forces; {missing_forces}")
            out["positions"][k] = ts.positions
            out["forces"][k] = ts.forces
            out["box"][k] = box_from_dimensions(ts.dimensions, f"{path}: frame {k}")
            out["step"][k] = int(ts.data.get("step", k))
            if "time" in ts.data and traj.units.get("time"):
                out["time"][k] = float(ts.data["time"])
            energies.append(ts.data.get("potential_energy"))
    out["energies"] = (np.asarray(energies, np.float64)
                       if energies and all(e is not None for e in energies) else None)
    if t == 0:
        raise ForcematchError(f"{path}: holds no frames")
    return out


def _check_declared_units(universe, path: Path, settings: ImportSettings) -> float | None:
    """Refuse a declaration that contradicts the units MDAnalysis knows for the format; returns
    the factor from the file's time unit to ps (None when the format gives no time unit)."""
    from MDAnalysis import units as mda_units

    known = universe.trajectory.units
    for quantity, target, declared in (("length", _MDA_LENGTH, settings.units.length_nm),
                                       ("force", _MDA_FORCE, settings.units.force_kJ_mol_nm)):
        unit = known.get(quantity)
        if not unit:
            continue
        try:
            factor = mda_units.get_conversion_factor(quantity, unit, target)
        except (KeyError, ValueError, TypeError):
            continue
        if abs(factor / declared - 1) > 1e-6:
            raise ForcematchError(
                f"{path}: MDAnalysis reads this format's {quantity} in {unit}, but import.units "
                f"declares {settings.units} (factor {declared:g} to project units, the file's "
                f"{factor:g}): fix import.units")
    unit = known.get("time")
    if not unit:
        return None
    try:
        return mda_units.get_conversion_factor("time", unit, "ps")
    except (KeyError, ValueError, TypeError):
        return None


def lammps_data_masses(path: Path) -> dict[str, float]:
    """Mass of each atom type (as a string) from the Masses section of a LAMMPS data file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ForcematchError(f"{path} (import.topology): cannot read it: {exc}") from exc
    masses: dict[str, float] = {}
    inside = False
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not inside:
            inside = text == "Masses"
            continue
        if not text:
            if masses:
                break
            continue
        columns = text.split()
        try:
            masses[columns[0]] = float(columns[1])
        except (IndexError, ValueError):
            break  # the next section's header
    if not masses:
        raise ForcematchError(f"{path} (import.topology): no Masses section; a LAMMPS dump "
                              "needs a LAMMPS data file (write_data) as its topology, or "
                              "import.masses_amu")
    return masses


def check_dump_frames(path: Path) -> int:
    """The number of frames of a LAMMPS dump, after refusing one whose atom count changes or
    whose frames (the last included: a run killed while writing) lack atom lines; MDAnalysis
    would fail with a traceback at the first and silently drop the second."""
    frame, n_atoms, first_n, in_atoms, rows = -1, None, None, False, 0

    def complete() -> None:
        if in_atoms and rows != n_atoms:
            raise ForcematchError(f"{path}: frame {frame} has {rows} of its {n_atoms} atom lines "
                                  "(a file cut short, or written by two runs at once)")

    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if line.startswith("ITEM:"):
                if line.startswith("ITEM: TIMESTEP"):
                    complete()
                    frame, in_atoms, rows = frame + 1, False, 0
                elif line.startswith("ITEM: NUMBER OF ATOMS"):
                    n_atoms = _int_line(next(lines, ""), path, number + 1)
                    first_n = n_atoms if first_n is None else first_n
                    if n_atoms != first_n:
                        raise ForcematchError(
                            f"{path}: frame {frame} holds {n_atoms} atoms, frame 0 {first_n}: "
                            "forcematch imports a fixed set of atoms")
                in_atoms = line.startswith("ITEM: ATOMS")
            elif in_atoms and line.strip():
                rows += 1
    complete()
    return frame + 1


def _int_line(line: str, path: Path, number: int) -> int:
    try:
        return int(line)
    except ValueError:
        raise ForcematchError(f"{path}: line {number}: expected the number of atoms, got "
                              f"{line.strip()[:40]!r}") from None


def read_lammps_dump(path: Path, settings: ImportSettings) -> RawTrajectory:
    """Every frame of a LAMMPS dump (`dump ... custom N file id type x y z fx fy fz`, or xu
    yu zu): types as species names, masses from a data file where `import.topology` names
    one."""
    check_dump_frames(path)
    universe = _universe(path, None, format="LAMMPSDUMP")
    out = _read_frames(universe, path, "the dump needs the columns fx fy fz (dump ... custom "
                                       "N file id type xu yu zu fx fy fz)")
    names = [str(t) for t in universe.atoms.types]
    masses = np.full(len(names), np.nan)
    if settings.topology is not None:
        by_type = lammps_data_masses(settings.topology)
        masses = np.array([by_type.get(name, np.nan) for name in names])
    convention = getattr(universe.trajectory, "lammps_coordinate_convention", None)
    return RawTrajectory(path=path, format="lammpsdump", positions=out["positions"],
                         forces=out["forces"], energies=None, box=out["box"],
                         step=out["step"], time_ps=np.full(len(out["step"]), np.nan),
                         names=names, masses_amu=masses,
                         notes={"coordinates": convention,
                                "masses_from": str(settings.topology or "import.masses_amu")})


def read_mdanalysis(path: Path, settings: ImportSettings) -> RawTrajectory:
    """Any trajectory with forces that MDAnalysis reads, with `import.topology`: atom types
    (else names) as species names, the topology's masses where it has them."""
    if settings.topology is None:
        raise ForcematchError(f"{path}: reading it through MDAnalysis needs a topology (GRO, "
                              "PDB, TPR, ...): set import.topology")
    universe = _universe(path, settings.topology, to_guess=())
    to_ps = _check_declared_units(universe, path, settings)
    out = _read_frames(universe, path, "import needs a trajectory with forces")
    atoms = universe.atoms
    names = [str(x) for x in (atoms.types if hasattr(atoms, "types") else atoms.names)]
    masses = (np.asarray(atoms.masses, np.float64) if hasattr(atoms, "masses")
              else np.full(len(names), np.nan))
    masses = np.where(masses > 0, masses, np.nan)
    time_ps = out["time"] * to_ps if to_ps is not None else np.full(len(out["step"]), np.nan)
    return RawTrajectory(path=path, format="mdanalysis", positions=out["positions"],
                         forces=out["forces"], energies=out["energies"], box=out["box"],
                         step=out["step"], time_ps=time_ps, names=names, masses_amu=masses,
                         notes={"reader": type(universe.trajectory).__name__,
                                "topology": str(settings.topology)})
