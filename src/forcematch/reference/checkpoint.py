"""The resumable state of one replica: frames sampled so far and OpenMM's own checkpoint.

Frames are stored in OpenMM units: positions nm, forces kJ/mol/nm, potential energies kJ/mol.
Every file is written atomically (`forcematch.provenance` helpers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openmm

from forcematch.atomic import atomic_open, atomic_write_bytes, write_json
from forcematch.errors import ForcematchError
from forcematch.reference.progress import Progress, emit


class ReplicaCheckpoint:
    """Resumable state of one replica: `.<out>.partial/` beside the output file.

    Holds the frames sampled so far in chunk files (`frames_<a>_<b>.npz`, plain arrays, read
    with allow_pickle=False), OpenMM's own checkpoint of the context (positions, velocities,
    step count and the integrator's random-number state: `openmm_<frames>.chk`) and
    `state.json`, the commit record naming both; it is written last, so a kill at any moment
    leaves the previous consistent state. A resumed replica on the CPU platform continues the
    same trajectory bit for bit. Removed once the output file is complete.
    """

    def __init__(self, out_path: Path, identity: dict):
        self.dir = out_path.with_name(f".{out_path.name}.partial")
        self.identity = identity  # config hash, replica, platform: must match to resume
        self.state: dict = {"identity": identity, "frames_done": 0, "chunks": [],
                            "openmm_checkpoint": None, "resumes": []}

    def load(self, progress: Progress) -> bytes | None:
        """OpenMM checkpoint bytes of a matching partial replica (frames in `self.state`), or
        None (and a fresh directory) when there is none or it belongs to another config."""
        state_path = self.dir / "state.json"
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text())
                chk = (self.dir / state["openmm_checkpoint"]).read_bytes()
                ok = state["identity"] == self.identity
            except (OSError, ValueError, KeyError, TypeError) as exc:
                emit(progress, f"ignoring unreadable partial replica {self.dir}: {exc}")
                ok = False
            if ok:
                self.state = state
                return chk
            emit(progress, f"discarding {self.dir}: written under another config or platform")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return None

    def frames(self, n_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions [F,N,3], forces [F,N,3] and energies [F] of the committed chunks."""
        parts = []
        for name in self.state["chunks"]:
            try:
                with np.load(self.dir / name, allow_pickle=False) as chunk:
                    parts.append((chunk["positions_nm"], chunk["forces_kJ_mol_nm"],
                                  chunk["energy_kJ_mol"]))
            except (OSError, ValueError, KeyError) as exc:
                raise ForcematchError(f"{self.dir / name}: unreadable checkpoint chunk ({exc}); "
                                      f"delete {self.dir} to start the replica afresh") from exc
        if not parts:
            return np.empty((0, n_atoms, 3)), np.empty((0, n_atoms, 3)), np.empty(0)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore

    def commit(self, context: openmm.Context, positions, forces, energies,
               frames_done: int) -> bytes:
        """Save the frames since the last commit and the context after frame `frames_done`;
        returns the OpenMM checkpoint."""
        start = self.state["frames_done"]
        chunks = list(self.state["chunks"])
        if frames_done > start:
            name = f"frames_{start:08d}_{frames_done:08d}.npz"
            with atomic_open(self.dir / name) as handle:
                np.savez(handle, positions_nm=positions[start:frames_done],
                         forces_kJ_mol_nm=forces[start:frames_done],
                         energy_kJ_mol=energies[start:frames_done])
            chunks.append(name)
        chk_name = f"openmm_{frames_done:08d}.chk"
        saved = context.createCheckpoint()
        atomic_write_bytes(self.dir / chk_name, saved)
        old_chk = self.state["openmm_checkpoint"]
        self.state = dict(self.state, frames_done=frames_done, chunks=chunks,
                          openmm_checkpoint=chk_name)
        write_json(self.dir / "state.json", self.state)  # the commit point
        if old_chk and old_chk != chk_name:
            (self.dir / old_chk).unlink(missing_ok=True)
        return saved

    def remove(self) -> None:
        """Delete the partial replica (its output is complete, or it cannot be resumed)."""
        shutil.rmtree(self.dir, ignore_errors=True)
