"""A trained potential, loaded from disk: what every consumer of a model imports.

    potential = load_model("results/train/pair-joint-nall/model")
    E = potential.energy(positions_nm [N,3], box_nm [3])           # kJ/mol, jitted
    F = potential.forces(positions_nm, box_nm)                     # [N,3] kJ/mol/nm = -dE/dx
    E, F = potential.predict(positions_nm [B,N,3], box_nm [B,3])   # numpy float64, chunked

Validation, the collapse diagnostic and, later, MD, calculators and export load models here,
never through the trainer. A model directory (written by `forcematch.training`) holds
`config.json` (model family, hyper-parameters, cutoff, neighbour capacity, normalisation,
provenance) and `state.msgpack` (the parameters, through `flax.serialization`: no pickle).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from forcematch.config import train_settings
from forcematch.errors import ForcematchError
from forcematch.model_files import (
    check_model_info,
    check_params,
    read_json_object,
    read_regular_file,
    restore_msgpack,
    state_size_limit,
)
from forcematch.models import EnergyModel, Normalisation, build_model, energy_fn, forces_fn
from forcematch.models import predict_fn as batched_predict_fn

MODEL_FORMAT = "forcematch-checkpoint"  # `format` in config.json of a model or checkpoint
EVAL_CHUNK = 64  # frames per jitted prediction call


def pad_frames(positions, box, chunk: int):
    """positions [k,N,3] and box [k,3] padded to `chunk` frames by repeating the last frame."""
    k = positions.shape[0]
    if k == chunk:
        return positions, box
    return (np.concatenate([positions, np.repeat(positions[-1:], chunk - k, axis=0)]),
            np.concatenate([box, np.repeat(box[-1:], chunk - k, axis=0)]))


def predict_in_chunks(fn, params, positions, box, species, chunk: int) -> tuple[np.ndarray, ...]:
    """A jitted batched `fn(params, positions [B,N,3], box [B,3], species)` (returning an array
    or a tuple of arrays with leading axis B) over [T] frames in chunks of `chunk` frames, the
    last chunk padded so that one compiled shape serves all; outputs float64 numpy."""
    t = positions.shape[0]
    parts = []
    for start in range(0, t, chunk):
        pos, bx = pad_frames(positions[start : start + chunk], box[start : start + chunk], chunk)
        res = fn(params, pos, bx, species)
        res = res if isinstance(res, tuple) else (res,)
        parts.append([np.asarray(r, np.float64)[: min(chunk, t - start)] for r in res])
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


class Potential:
    """A trained model with its normalisation; see the module docstring.

    energy / forces take one frame (float32, jitted, usable inside other jitted code; NaN when
    the neighbour list overflows); predict takes many frames and raises ForcematchError naming
    the frame on overflow; energy_float64 evaluates in float64 (64-bit JAX must be on).
    """

    def __init__(self, path: Path, info: dict, params):
        self.path = Path(path)
        self.info = info
        self.model_name: str = info["model"]
        self.model_config: dict = info["model_config"]
        self.train_config: dict = info["train_config"]
        self.cutoff_nm: float = info["cutoff_nm"]
        self.capacity: int = info["capacity"]
        self.n_atoms: int = info["n_atoms"]
        self.species = np.asarray(info["species"], np.int32)
        self.stats: dict = info["stats"]
        self.norm = Normalisation.from_dict(info["norm"])
        self.model: EnergyModel = build_model(
            self.model_name, self.model_config, self.cutoff_nm, self.capacity)
        self.params = jax.tree.map(jnp.asarray, params)
        self._energy = jax.jit(energy_fn(self.model, self.norm))
        self._forces = jax.jit(forces_fn(self.model, self.norm))
        self._predict = jax.jit(batched_predict_fn(self.model, self.norm))
        self._overflow = jax.jit(jax.vmap(self.model.overflow))
        self._params64 = None
        self._strain = None

    def describe(self) -> dict:
        """JSON-serialisable description: model, hyper-parameters, normalisation, provenance."""
        return {
            "model": self.model_name,
            "model_config": self.model_config,
            "train_config": self.train_config,
            "cutoff_nm": self.cutoff_nm,
            "neighbour_capacity": self.capacity,
            "n_atoms": self.n_atoms,
            "norm": self.norm.to_dict(),
            "forcematch_version": self.info.get("forcematch_version"),
            "provenance": self.info.get("provenance"),
        }

    def _species(self, species):
        return jnp.asarray(self.species if species is None else species, jnp.int32)

    def energy(self, positions_nm, box_nm, species=None):
        """Total energy (kJ/mol, float32 scalar) of one frame: positions [N,3], box [3] (nm)."""
        return self._energy(self.params, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def forces(self, positions_nm, box_nm, species=None):
        """Forces [N,3] (kJ/mol/nm) of one frame: -∇E."""
        return self._forces(self.params, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def predict(self, positions_nm, box_nm, species=None, batch_size: int = EVAL_CHUNK):
        """Energies [B] (kJ/mol) and forces [B,N,3] (kJ/mol/nm) of many frames, numpy float64.
        positions [B,N,3], box [B,3] or [3] (nm)."""
        pos = np.asarray(positions_nm, np.float32)
        if pos.ndim != 3 or pos.shape[1:] != (self.n_atoms, 3):
            raise ForcematchError(f"positions must be [B, {self.n_atoms}, 3], got {pos.shape}")
        box = np.array(np.broadcast_to(np.asarray(box_nm, np.float32), (pos.shape[0], 3)))
        if pos.shape[0] == 0:
            return np.zeros(0), np.zeros((0, self.n_atoms, 3))
        e, f = predict_in_chunks(self._predict, self.params, pos, box, self._species(species),
                                 min(batch_size, pos.shape[0]))
        self._raise_on_overflow(pos, box, ~np.isfinite(e))
        return e, f

    def strain_derivative(self, positions_nm, box_nm, species=None,
                          batch_size: int = EVAL_CHUNK) -> np.ndarray:
        """dU/dλ (kJ/mol) at λ = 1 of U(λ·positions, λ·box) for frames [B,N,3] in box [3] or
        [B,3] nm: the virial of a uniform strain, by autodiff. −dU/dλ / 3V = −∂U/∂V enters
        the pressure (`md.checks.pressure_bar`) and the stress."""
        pos = np.asarray(positions_nm, np.float32)
        box = np.array(np.broadcast_to(np.asarray(box_nm, np.float32), (pos.shape[0], 3)))
        if self._strain is None:
            total = energy_fn(self.model, self.norm)

            def derivative(params, positions, box, species):
                def strained(lam):
                    return total(params, lam * positions, lam * box, species)

                return jax.grad(strained)(jnp.asarray(1.0, positions.dtype))

            self._strain = jax.jit(jax.vmap(derivative, in_axes=(None, 0, 0, None)))
        return predict_in_chunks(self._strain, self.params, pos, box, self._species(species),
                                 min(batch_size, pos.shape[0]))[0]

    def _raise_on_overflow(self, pos, box, bad) -> None:
        if not bad.any():
            return
        over = np.asarray(self._overflow(pos[bad], box[bad]))
        if over.any():
            frame = int(np.flatnonzero(bad)[int(np.argmax(over))])
            raise ForcematchError(
                f"neighbour list overflow (capacity {self.capacity}) in frame {frame}: "
                "the frame is denser than any the model was trained on")

    def energy_float64(self, positions_nm, box_nm, species=None):
        """Total energy (kJ/mol) in float64, for finite differences; needs 64-bit JAX
        (`with jax.enable_x64(True):`)."""
        if jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
            raise ForcematchError(
                "energy_float64 needs 64-bit JAX: jax.config.update('jax_enable_x64', True) "
                "or `with jax.enable_x64(True):`")
        if self._params64 is None:  # numpy casts: safe even when called under jit/vmap tracing
            self._params64 = jax.tree.map(lambda p: np.asarray(p, np.float64), self.params)
        return self._energy(self._params64, jnp.asarray(positions_nm, jnp.float64),
                            jnp.asarray(box_nm, jnp.float64), self._species(species))


def expected_params(model: EnergyModel, n_atoms: int):
    """The shapes of `model`'s parameters (a pytree of ShapeDtypeStructs), without computing
    them: what a state file of the model must hold."""
    positions = jax.ShapeDtypeStruct((n_atoms, 3), jnp.float32)
    box = jax.ShapeDtypeStruct((3,), jnp.float32)
    species = jax.ShapeDtypeStruct((n_atoms,), jnp.int32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), positions, box, species)


def load_model(path) -> Potential:
    """The model in a model/ or checkpoint/ directory (config.json + state.msgpack, no pickle).

    Nothing in the directory is trusted: non-regular or oversized files, invalid JSON, missing
    keys or values of the wrong type, model options the schema refuses, and parameters of
    other shapes than the model described (or NaN) raise ForcematchError naming the file.
    """
    path = Path(path)
    config_path, state_path = path / "config.json", path / "state.msgpack"
    if not os.path.lexists(config_path) or not os.path.lexists(state_path):
        raise ForcematchError(f"{path} is not a forcematch model (config.json, state.msgpack)")
    info = read_json_object(config_path)
    check_model_info(info, config_path, MODEL_FORMAT)
    try:
        model = build_model(info["model"], info["model_config"], info["cutoff_nm"],
                            info["capacity"])
        train_settings(info["train_config"], source="train_config")
    except ForcematchError as err:
        raise ForcematchError(f"{config_path}: {err}") from None
    expected = expected_params(model, info["n_atoms"])
    state = restore_msgpack(read_regular_file(state_path, state_size_limit(expected, 4)),
                            state_path)
    if not isinstance(state, dict) or "params" not in state:
        raise ForcematchError(f"{state_path}: no 'params' in the state (not a forcematch model)")
    check_params(state["params"], expected, state_path)
    return Potential(path, info, state["params"])
