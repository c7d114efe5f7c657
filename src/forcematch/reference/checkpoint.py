"""The resumable state of one replica: frames sampled so far and OpenMM's own checkpoint.

Frames are stored in OpenMM units: positions nm, forces kJ/mol/nm, potential energies kJ/mol.
Every file is written atomically (`forcematch.io.provenance` helpers).
"""

from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np
import openmm

from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_open, atomic_write_bytes, write_json
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
                _check_state(state)
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
        try:
            self.dir.mkdir(parents=True)
        except OSError as exc:
            raise ForcematchError(f"cannot create the replica checkpoint {self.dir}: "
                                  f"{exc.strerror or exc}") from exc
        return None

    def describe(self) -> str:
        """Where the checkpoint is and what it holds, for messages."""
        return f"{self.dir} ({self.state['frames_done']} frames committed)"

    def frames(self, n_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions [F,N,3], forces [F,N,3] and energies [F] of the committed chunks; an
        unreadable or inconsistent chunk raises ForcematchError naming it."""
        parts, done = [], 0
        for name in self.state["chunks"]:
            try:
                with np.load(self.dir / name, allow_pickle=False) as chunk:
                    part = (np.asarray(chunk["positions_nm"], np.float64),
                            np.asarray(chunk["forces_kJ_mol_nm"], np.float64),
                            np.asarray(chunk["energy_kJ_mol"], np.float64))
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                    zlib.error) as exc:
                raise ForcematchError(
                    f"{self.dir / name}: unreadable checkpoint chunk ({_one_line(exc)}); "
                    f"delete {self.dir} to start the replica afresh") from exc
            f = part[2].shape[0]
            if part[0].shape != (f, n_atoms, 3) or part[1].shape != (f, n_atoms, 3):
                raise ForcematchError(
                    f"{self.dir / name}: checkpoint chunk holds arrays of shapes "
                    f"{part[0].shape}, {part[1].shape}, {part[2].shape}, expected (F, "
                    f"{n_atoms}, 3) and (F,); delete {self.dir} to start the replica afresh")
            parts.append(part)
            done += f
        if done != self.state["frames_done"]:
            raise ForcematchError(
                f"{self.dir}: checkpoint chunks hold {done} frames, state.json says "
                f"{self.state['frames_done']}; delete {self.dir} to start the replica afresh")
        if not parts:
            return np.empty((0, n_atoms, 3)), np.empty((0, n_atoms, 3)), np.empty(0)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore

    def commit(self, context: openmm.Context, positions, forces, energies,
               frames_done: int) -> bytes:
        """Save the frames since the last commit and the context after frame `frames_done`;
        returns the OpenMM checkpoint."""
        start = self.state["frames_done"]
        chunks = list(self.state["chunks"])
        target = self.dir
        try:
            if frames_done > start:
                name = f"frames_{start:08d}_{frames_done:08d}.npz"
                target = self.dir / name
                with atomic_open(target) as handle:
                    np.savez(handle, positions_nm=positions[start:frames_done],
                             forces_kJ_mol_nm=forces[start:frames_done],
                             energy_kJ_mol=energies[start:frames_done])
                chunks.append(name)
            chk_name = f"openmm_{frames_done:08d}.chk"
            saved = context.createCheckpoint()
            target = self.dir / chk_name
            atomic_write_bytes(target, saved)
            old_chk = self.state["openmm_checkpoint"]
            state = dict(self.state, frames_done=frames_done, chunks=chunks,
                         openmm_checkpoint=chk_name)
            target = self.dir / "state.json"
            write_json(target, state)  # the commit point
        except OSError as exc:  # what the atomic writes do not turn into ForcematchError
            raise ForcematchError(f"cannot write {target}: {exc.strerror or exc}") from exc
        self.state = state
        if old_chk and old_chk != chk_name:
            (self.dir / old_chk).unlink(missing_ok=True)
        return saved

    def remove(self) -> None:
        """Delete the partial replica (its output is complete, or it cannot be resumed)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_state(state: object) -> None:
    """Raise ValueError unless `state` has the fields and types `commit` writes."""
    ok = (isinstance(state, dict) and isinstance(state.get("identity"), dict)
          and isinstance(state.get("frames_done"), int) and state["frames_done"] >= 0
          and isinstance(state.get("chunks"), list)
          and all(isinstance(c, str) and "/" not in c for c in state["chunks"])
          and isinstance(state.get("openmm_checkpoint"), str)
          and "/" not in state["openmm_checkpoint"]
          and isinstance(state.get("resumes"), list))
    if not ok:
        raise ValueError("state.json lacks the fields of a committed checkpoint")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
