"""A trained potential, loaded from disk: what every consumer of a model imports.

    potential = load_model("results/train/pair-joint-nall/model")
    E = potential.energy(positions_nm [N,3], box_nm [3])           # kJ/mol, jitted
    F = potential.forces(positions_nm, box_nm)                     # [N,3] kJ/mol/nm = -dE/dx
    E, F = potential.predict(positions_nm [B,N,3], box_nm [B,3])   # numpy float64, chunked

Validation, the collapse diagnostic, MD, calculators and export load models here, never
through the trainer. A model directory (written by `forcematch.training`) holds `config.json`
(model family, hyper-parameters, cutoff, neighbour capacity, species and their names,
normalisation, provenance: `model_files.model_info`) and `state.msgpack` (the parameters,
through `flax.serialization`: no pickle). Compiled code takes the parameters and the
normalisation as arguments (`params_as`, `with_state`), never as constants.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from forcematch.config import model_settings, train_settings
from forcematch.errors import ForcematchError
from forcematch.io.model_files import (
    check_model_info,
    check_params,
    read_json_object,
    read_regular_file,
    restore_msgpack,
    state_size_limit,
)
from forcematch.models import (
    EnergyModel,
    Normalisation,
    build,
    energy_fn,
    energy_forces_strain_fn,
    forces_fn,
)
from forcematch.models import predict_fn as batched_predict_fn

MODEL_FORMAT = "forcematch-checkpoint"  # `format` in config.json of a model or checkpoint
# Pair slots per jitted prediction call. A call's temporaries grow with frames x slots; beyond
# about 16k slots (8 frames of 100 argon atoms) they pass glibc's 32 MiB limit for reusing
# freed memory, and every call maps, faults in and zeroes fresh pages: 64 frames per call were
# 2.1-2.6x slower than 8 for all three network families, half of it kernel time
# (BENCHMARKS.md, "Prediction in chunks: page faults").
EVAL_PAIR_SLOTS = 16384
CAPACITY_GROWTH = 1.5  # pair slots tried after an overflow, per slot of the list that overflowed


def eval_chunk(capacity: int, n_frames: int | None = None) -> int:
    """Frames per jitted prediction call for a model of `capacity` pair slots per frame: as many
    as EVAL_PAIR_SLOTS allow, at least 1, at most `n_frames`."""
    chunk = max(1, EVAL_PAIR_SLOTS // max(1, int(capacity)))
    return chunk if n_frames is None else max(1, min(chunk, int(n_frames)))


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


def with_state(make, model):
    """`make(model, norm)` (`models.energy_fn`, `forces_fn`, `predict_fn`, ...: f(params, ...))
    as f(state, ...) with state = {"model": params, "energy_scale", "energy_shift_per_atom"}
    (`Potential.params_as`): the normalisation a traced argument, not a constant of the code."""

    def evaluate(state, *args):
        norm = Normalisation(state["energy_scale"], state["energy_shift_per_atom"])
        return make(model, norm)(state["model"], *args)

    return evaluate


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
        # names of species 0..S−1 where the training data named them (None: indices only)
        self.species_names: list[str] | None = info.get("species_names")
        self.stats: dict = info["stats"]
        self.norm = Normalisation.from_dict(info["norm"])
        self.model: EnergyModel = build(
            self.model_name, self.model_config, self.cutoff_nm, self.capacity)
        self.params = jax.tree.map(jnp.asarray, params)
        # The jitted functions take the parameters and the normalisation as arguments (`state`),
        # so that every model of one architecture shares their compilations (in JAX's
        # persistent cache too: the energy constant refitted per run is not a constant in them).
        self._state = jax.tree.map(jnp.asarray, self.params_as(np.float32))
        self._energy = jax.jit(with_state(energy_fn, self.model))
        self._forces = jax.jit(with_state(forces_fn, self.model))
        self._predict = jax.jit(with_state(batched_predict_fn, self.model))
        self._overflow = jax.jit(jax.vmap(self.model.overflow))
        self._state64 = None
        self._strain = None
        self._evaluators: dict = {}  # pair capacity -> jitted (energy_forces_strain, overflow)

    def describe(self) -> dict:
        """JSON-serialisable description: model, hyper-parameters, normalisation, provenance."""
        return {
            "model": self.model_name,
            "model_config": self.model_config,
            "train_config": self.train_config,
            "cutoff_nm": self.cutoff_nm,
            "neighbour_capacity": self.capacity,
            "n_atoms": self.n_atoms,
            "species_names": self.species_names,
            "norm": self.norm.to_dict(),
            "forcematch_version": self.info.get("forcematch_version"),
            "provenance": self.info.get("provenance"),
        }

    def _species(self, species):
        return jnp.asarray(self.species if species is None else species, jnp.int32)

    def energy(self, positions_nm, box_nm, species=None):
        """Total energy (kJ/mol, float32 scalar) of one frame: positions [N,3], box [3] (nm)."""
        return self._energy(self._state, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def forces(self, positions_nm, box_nm, species=None):
        """Forces [N,3] (kJ/mol/nm) of one frame: -∇E."""
        return self._forces(self._state, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def predict(self, positions_nm, box_nm, species=None, batch_size: int | None = None):
        """Energies [B] (kJ/mol) and forces [B,N,3] (kJ/mol/nm) of many frames, numpy float64.
        positions [B,N,3], box [B,3] or [3] (nm); `batch_size` frames per call (default:
        `eval_chunk` of the model's capacity)."""
        pos = np.asarray(positions_nm, np.float32)
        if pos.ndim != 3 or pos.shape[1:] != (self.n_atoms, 3):
            raise ForcematchError(f"positions must be [B, {self.n_atoms}, 3], got {pos.shape}")
        box = np.array(np.broadcast_to(np.asarray(box_nm, np.float32), (pos.shape[0], 3)))
        if pos.shape[0] == 0:
            return np.zeros(0), np.zeros((0, self.n_atoms, 3))
        e, f = predict_in_chunks(self._predict, self._state, pos, box, self._species(species),
                                 self._chunk(batch_size, pos.shape[0]))
        self._raise_on_overflow(pos, box, ~np.isfinite(e))
        return e, f

    def strain_derivative(self, positions_nm, box_nm, species=None, float64: bool = False,
                          batch_size: int | None = None) -> np.ndarray:
        """dU/dε [B,3,3] (kJ/mol) of frames [B,N,3] in a box [3] or [B,3] (edges, nm): the
        derivative of U(x·(1+ε), box·(1+ε)) with respect to a symmetric strain ε at ε = 0
        (`models.energy_forces_strain_fn`). Its trace is dU/dλ of a uniform scaling, which
        enters the pressure (`md.checks.pressure_bar`); divided by the volume, the stress.
        `float64`: evaluated in float64 (64-bit JAX must be on). Raises ForcematchError naming
        the frame when the pair list overflows."""
        dtype = self._float_dtype(float64)
        pos = np.asarray(positions_nm, dtype)
        box = np.array(np.broadcast_to(np.asarray(box_nm, dtype), (pos.shape[0], 3)))
        if pos.shape[0] == 0:
            return np.zeros((0, 3, 3))
        if self._strain is None:
            evaluate = with_state(energy_forces_strain_fn, self.model)
            self._strain = jax.jit(jax.vmap(lambda *args: evaluate(*args)[2],
                                            in_axes=(None, 0, 0, None)))
        params = self._state_float64() if float64 else self._state
        derivative = predict_in_chunks(self._strain, params, pos, box, self._species(species),
                                       self._chunk(batch_size, pos.shape[0]))[0]
        self._raise_on_overflow(pos, box, ~np.isfinite(derivative).all(axis=(1, 2)))
        return derivative

    def _chunk(self, batch_size: int | None, n_frames: int) -> int:
        if batch_size is None:
            return eval_chunk(self.capacity, n_frames)
        return max(1, min(int(batch_size), n_frames))

    def _float_dtype(self, float64: bool):
        if float64 and jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
            raise ForcematchError(
                "float64 evaluation needs 64-bit JAX: jax.config.update('jax_enable_x64', "
                "True) or `with jax.enable_x64(True):`")
        return np.float64 if float64 else np.float32

    def _state_float64(self):
        if self._state64 is None:  # numpy casts: safe even when called under jit/vmap tracing
            self._state64 = self.params_as(np.float64)
        return self._state64

    def capacity_for(self, n_atoms: int) -> int:
        """Pair slots for a frame of `n_atoms` atoms: the trained capacity scaled by
        n_atoms / N (pairs within the cutoff grow as N at a given density), all N(N−1)/2 at
        most."""
        all_pairs = max(1, n_atoms * (n_atoms - 1) // 2)
        if self.capacity is None:
            return all_pairs
        return min(all_pairs, math.ceil(self.capacity * n_atoms / self.n_atoms))

    def evaluate(self, positions_nm, box_nm, species=None, float64: bool = False
                 ) -> tuple[float, np.ndarray, np.ndarray]:
        """(E kJ/mol, F [N,3] kJ/mol/nm, dE/dε [3,3] kJ/mol) of one frame of any number of
        atoms N: positions [N,3] in a box of edges [3] or a cell [3,3] (rows: vectors; nm),
        species [N] (default: the training frames' when N is theirs, else species 0; a model of
        several species needs them given). dE/dε: `models.energy_forces_strain_fn`. float64
        numpy out; `float64` evaluates in float64 (64-bit JAX must be on).

        The pair capacity is sized from N (`capacity_for`); a frame that overflows it is
        evaluated again with 1.5× the slots (compiled once per size, kept), up to all pairs:
        a pair is never dropped. A non-finite energy otherwise raises ForcematchError.
        """
        dtype = self._float_dtype(float64)
        pos = jnp.asarray(positions_nm, dtype)
        box = jnp.asarray(box_nm, dtype)
        n = pos.shape[0]
        if species is None and n != self.n_atoms and self.n_species > 1:
            raise ForcematchError(
                f"this model knows {self.n_species} species: give the species of the {n} "
                f"atoms (indices 0..{self.n_species - 1})")
        sp = self._species(species if species is not None or n == self.n_atoms
                           else np.zeros(n, np.int32))
        params = self._state_float64() if float64 else self._state
        capacity, all_pairs = self.capacity_for(n), max(1, n * (n - 1) // 2)
        while True:
            evaluate, overflow = self._evaluator(capacity)
            energy, forces, strain = evaluate(params, pos, box, sp)
            if math.isfinite(float(energy)):
                return _finite_results(float(energy), np.asarray(forces, np.float64),
                                       np.asarray(strain, np.float64))
            if not bool(overflow(pos, box)):
                raise ForcematchError(
                    f"the model's energy is {float(energy)} at this configuration (no "
                    "neighbour-list overflow): atoms too close, or far outside the training data")
            if capacity >= all_pairs:  # cannot happen: all pairs never overflow
                raise ForcematchError(f"the pair list overflows with all {all_pairs} pairs")
            capacity = min(all_pairs, math.ceil(CAPACITY_GROWTH * capacity))

    def energy_function(self, n_atoms: int | None = None):
        """The pure f(state, positions [N,3], box [3], species [N], pairs=None) -> E (kJ/mol)
        behind `energy`, for code that compiles its own loop around it (MD); `state` is
        `params_as(dtype)`; `pairs` as in `models.EnergyModel.energy` (a list with a skin: i,
        j [P], N on padding). Without `pairs` the model finds its own, in `capacity_for(
        n_atoms)` slots (default: the training frames' N and capacity)."""
        if n_atoms is None or n_atoms == self.n_atoms:
            return with_state(energy_fn, self.model)
        return with_state(energy_fn, build(self.model_name, self.model_config, self.cutoff_nm,
                                           self.capacity_for(n_atoms)))

    def params_as(self, dtype) -> dict:
        """The state that `energy_function` and `pair_energy_function` take: {"model": the
        parameters, "energy_scale", "energy_shift_per_atom": the normalisation}, every floating
        leaf cast to `dtype` (numpy arrays; np.float64 stays float64 only where 64-bit JAX is on
        when they are used)."""
        state = {"model": self.params, "energy_scale": self.norm.energy_scale,
                 "energy_shift_per_atom": self.norm.energy_shift_per_atom}
        return jax.tree.map(lambda p: np.asarray(p, dtype) if np.issubdtype(
            np.asarray(p).dtype, np.floating) else np.asarray(p), state)

    def pair_energy_function(self):
        """For a pair family (`pair`, `spline`): the pure φ(state, r [M] nm, pair_type [M] or
        None) -> [M] kJ/mol of one pair at each distance, envelope included (`state`:
        `params_as(dtype)`; pair_type: the index of the unordered species pair; None for one
        species). ForcematchError for any other family."""
        if not hasattr(self.model, "pair_potential"):
            raise ForcematchError(
                f"the {self.model_name} model in {self.path} is not a pair potential")
        model = self.model

        def phi(state, r_nm, pair_type=None):
            return state["energy_scale"] * model.pair_potential(state["model"], r_nm, pair_type)

        return phi

    def atom_offsets_kJ_mol(self) -> np.ndarray:
        """A pair family's energy per atom of each species [S] (kJ/mol): the learnt constant
        b_s in physical units plus the normalisation's shift, energy_scale · b_s + shift."""
        b = np.asarray(self.params["atom_energy"], np.float64)
        return self.norm.energy_scale * b + self.norm.energy_shift_per_atom

    def force_scale_kJ_mol_nm(self) -> float:
        """The training forces' RMS (kJ/mol/nm), else the normalisation's energy scale per nm:
        the scale against which errors of this model are stated."""
        value = self.stats.get("force_rms_kJ_mol_nm") if self.stats else None
        return float(value) if value and math.isfinite(value) else self.norm.energy_scale

    @property
    def n_species(self) -> int:
        """The number of species S the model distinguishes (indices 0..S−1)."""
        return int(self.model_config.get("n_species", 1))

    def _evaluator(self, capacity: int):
        """Jitted (energy_forces_strain, overflow) of the model with `capacity` pair slots."""
        if capacity not in self._evaluators:
            model = build(self.model_name, self.model_config, self.cutoff_nm, capacity)
            self._evaluators[capacity] = (
                jax.jit(with_state(energy_forces_strain_fn, model)), jax.jit(model.overflow))
        return self._evaluators[capacity]

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
        self._float_dtype(True)
        return self._energy(self._state_float64(), jnp.asarray(positions_nm, jnp.float64),
                            jnp.asarray(box_nm, jnp.float64), self._species(species))


def _finite_results(energy: float, forces: np.ndarray, strain: np.ndarray):
    """(energy, forces, strain) when the derivatives are finite too; else ForcematchError naming
    the atoms (a finite energy with non-finite forces: atoms on top of each other)."""
    bad = np.flatnonzero(~np.isfinite(forces).all(axis=1))
    if bad.size:
        raise ForcematchError(
            f"the model's forces are not finite on atoms {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''} (energy {energy:g} kJ/mol): atoms at the same "
            "place, or far outside the training data")
    if not np.isfinite(strain).all():
        raise ForcematchError(f"the model's strain derivative (stress) is not finite (energy "
                              f"{energy:g} kJ/mol)")
    return energy, forces, strain


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
    try:  # the stored options checked once, and resolved: the Potential builds from them
        info = info | {"model_config": model_settings(info["model"], info["model_config"],
                                                      source="model_config")}
        model = build(info["model"], info["model_config"], info["cutoff_nm"], info["capacity"])
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
