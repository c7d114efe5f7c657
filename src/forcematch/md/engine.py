"""MD with a trained model: JAX MD's integrators and neighbour lists driving `potential.Potential`
(or `md.pair_table.PairTable`, a pair family's table, which offers the same methods).

    engine = ModelEngine(load_model(path), masses_amu, box_nm, skin_nm=0.1)
    segment = engine.run("nve", positions_nm, None, 100.0, 5.0, n_steps=20_000,
                         record_every=20, seed=0, friction_per_ps=1.0, limits=limits)

JAX MD's integrators are used as they are, not re-written: `simulate.nve` (velocity Verlet)
and `simulate.nvt_langevin` (the BAOAB splitting of Leimkuhler & Matthews). The pair list is
`md.neighbours.HalfShellPairs` (JAX MD's `OrderedSparse` format, each pair once, padding = N,
built from half the candidates JAX MD's `partition.neighbor_list` computes): it holds the pairs
within cutoff + skin and is rebuilt inside the compiled loop when any atom has moved half the
skin since the last build. The model masks its pairs to the cutoff
(`models.base.pairs_within`), so the skin never changes the energy.

Steps run compiled: a `fori_loop` over `record_every` steps inside a `lax.scan` over the
records of a chunk; Python sees only whole chunks. Between chunks the list's overflow flag is
read: an overflowing chunk is thrown away and rerun from its start with a list of 1.5× the
capacity (pairs and cells; never a silently missing pair). One list serves all of an engine's
runs (rebuilt in place at each start), and the time step, temperature, record interval and
parameters are traced arguments: one compilation per ensemble and chunk length, shared through
JAX's persistent cache by every model of one architecture. Each record carries the closest pair
(from the list: every pair within cutoff + skin is in it) for the stability check.

Units are consistent without conversion: nm, ps, amu, kJ/mol (1 kJ/mol = 1 amu nm²/ps²), kT in
kJ/mol. Float32 by default; `float64=True` needs 64-bit JAX switched on before any array exists.
"""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from forcematch import jax_md_modules, space
from forcematch.errors import ForcematchError
from forcematch.md.neighbours import HalfShellPairs
from forcematch.md.record import Segment, StabilityLimits, find_failure, remove_net_momentum
from forcematch.progress import bar as progress_bar
from forcematch.units import BOLTZMANN_KJ_MOL_K

RECORDS_PER_CHUNK = 50  # records between overflow and stability checks (host round trips)
CAPACITY_MULTIPLIER = 1.25  # neighbour-list slots per pair found at allocation
MAX_REALLOCATIONS = 8  # larger lists tried for one chunk before giving up

jax_md_space, simulate = jax_md_modules.load("space", "simulate")


def _records_per_chunk(n_records: int, largest: int = RECORDS_PER_CHUNK) -> int:
    """The largest divisor of `n_records` not above `largest`: one compiled chunk length."""
    return max(d for d in range(1, min(largest, n_records) + 1) if n_records % d == 0)


class ModelEngine:
    """MD with a trained model (see the module docstring); implements `record.Engine`."""

    name = "model"

    def __init__(self, potential, masses_amu, box_nm, species=None, skin_nm: float = 0.1,
                 float64: bool = False, friction_per_ps: float = 1.0, progress=None,
                 capacity_multiplier: float = CAPACITY_MULTIPLIER):
        self.dtype = jnp.float64 if float64 else jnp.float32
        if float64 and jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
            raise ForcematchError("float64 MD needs 64-bit JAX: jax.config.update("
                                  "'jax_enable_x64', True) before any array is made")
        self.potential = potential
        self.masses_amu = np.asarray(masses_amu, np.float64)
        self.box_nm = np.asarray(box_nm, np.float64).reshape(3)
        self.skin_nm = float(skin_nm)
        self.friction_per_ps = float(friction_per_ps)
        self.progress = progress or (lambda message: print(message, file=sys.stderr))
        species = engine_species(potential, self.masses_amu.shape[0], species)
        box = jnp.asarray(self.box_nm, self.dtype)
        # Parameters are an argument of the compiled chunk, not a constant in it: models of one
        # architecture share one compilation (and JAX's persistent cache across processes).
        self._params = potential.params_as(self.dtype)
        total = potential.energy_function()
        sp = jnp.asarray(species, jnp.int32)

        def energy(positions_nm, neighbor, params, **unused):
            return total(params, positions_nm, box, sp, (neighbor.idx[0], neighbor.idx[1]))

        self._energy = energy
        self._box = box
        _, self._shift = jax_md_space.periodic(box)
        self._capacity_multiplier = float(capacity_multiplier)
        self._pair_lists = HalfShellPairs(self.box_nm, potential.cutoff_nm, self.skin_nm)
        self._nbrs = None  # the list of the last run: later runs keep its capacity (shape)
        self._mass = jnp.asarray(self.masses_amu, self.dtype)[:, None]
        self._integrators = {
            "nve": simulate.nve(energy, self._shift, 1e-3),
            "nvt": simulate.nvt_langevin(energy, self._shift, 1e-3, 1.0,
                                         gamma=self.friction_per_ps),
        }
        self._chunks: dict = {}
        self._update = jax.jit(self._pair_lists.update)
        self._observe = jax.jit(lambda state, nbrs, params: observe(
            state, nbrs, energy, params, box))

    # -- compiled pieces -------------------------------------------------------------------
    def _chunk_fn(self, ensemble: str, n_records: int):
        """Jitted (state, nbrs, dt, kT, record_every, params) -> (state, nbrs, records) over
        n_records records; record_every is traced (a while loop), so it costs no compile."""
        key = (ensemble, n_records)
        if key in self._chunks:
            return self._chunks[key]
        _, step_fn = self._integrators[ensemble]
        energy, box, pair_lists = self._energy, self._box, self._pair_lists

        def chunk(state, nbrs, dt, kT, record_every, params):
            def one_step(_, carry):
                state, nbrs = carry
                state = step_fn(state, neighbor=nbrs, dt=dt, kT=kT, params=params)
                return state, pair_lists.update(state.position, nbrs)

            def one_record(carry, _):
                carry = jax.lax.fori_loop(0, record_every, one_step, carry)
                return carry, observe(*carry, energy, params, box)

            (state, nbrs), records = jax.lax.scan(one_record, (state, nbrs), None,
                                                  length=n_records)
            return state, nbrs, records

        self._chunks[key] = jax.jit(chunk)
        return self._chunks[key]

    def _list_at(self, positions):
        """A neighbour list at `positions`: the last run's, rebuilt in place (same capacity,
        no new compilation) unless it is too small, then a new allocation."""
        if self._nbrs is not None:
            nbrs = self._update(positions, self._nbrs)
            if not bool(nbrs.overflow):
                return nbrs
        return self._pair_lists.allocate(positions, self._capacity_multiplier)

    def _grow_list(self, positions):
        """A list with 1.5× the capacity multiplier (pairs and cells), allocated at
        `positions`: after an overflow."""
        self._capacity_multiplier *= 1.5
        return self._pair_lists.allocate(positions, self._capacity_multiplier)

    def _start(self, ensemble, positions_nm, velocities_nm_ps, temperature_K, seed):
        """(state, nbrs) at the given positions (wrapped into the box) and velocities."""
        pos = jnp.asarray(np.mod(positions_nm, self.box_nm), self.dtype)
        nbrs = self._list_at(pos)
        init_fn, _ = self._integrators[ensemble]
        kT = jnp.asarray(BOLTZMANN_KJ_MOL_K * temperature_K, self.dtype)
        momenta = None  # None: drawn by JAX MD at kT, with zero total momentum
        if velocities_nm_ps is not None:
            if ensemble == "nve":  # NVE conserves the total momentum: it starts at zero
                velocities_nm_ps = remove_net_momentum(velocities_nm_ps, self.masses_amu)
            momenta = jnp.asarray(velocities_nm_ps, self.dtype) * self._mass
        key = jax.random.PRNGKey(seed)
        kwargs = {"mass": self._mass, "momenta": momenta, "neighbor": nbrs,
                  "params": self._params}
        if ensemble == "nve":
            state = init_fn(key, pos, kT, **kwargs)
        else:
            state = init_fn(key, pos, kT=kT, **kwargs)
        return state, nbrs

    # -- the Engine interface --------------------------------------------------------------
    def run(self, ensemble, positions_nm, velocities_nm_ps, temperature_K, timestep_fs,
            n_steps, record_every, seed, friction_per_ps, limits: StabilityLimits) -> Segment:
        """See `record.Engine.run`. `friction_per_ps` must equal the engine's (fixed at build:
        JAX MD closes over it)."""
        if ensemble not in self._integrators:
            raise ForcematchError(f"unknown ensemble {ensemble!r}: 'nve' or 'nvt'")
        if n_steps % record_every:
            raise ForcematchError(f"{n_steps} steps is not a multiple of record_every "
                                  f"{record_every}")
        if not math.isclose(friction_per_ps, self.friction_per_ps):
            raise ForcematchError(f"friction {friction_per_ps}/ps, but this engine was built "
                                  f"for {self.friction_per_ps}/ps")
        state, nbrs = self._start(ensemble, positions_nm, velocities_nm_ps, temperature_K, seed)
        records = [_to_numpy(self._observe(state, nbrs, self._params), first=True)]
        n_records = n_steps // record_every
        per_chunk = _records_per_chunk(n_records)
        dt = jnp.asarray(timestep_fs * 1e-3, self.dtype)
        kT = jnp.asarray(BOLTZMANN_KJ_MOL_K * temperature_K, self.dtype)
        failure = None
        what = f"{ensemble} {temperature_K:g} K, dt {timestep_fs:g} fs"
        with progress_bar(n_records * record_every, what, "step") as steps:
            for done in range(0, n_records, per_chunk):
                state, nbrs, chunk = self._run_chunk(ensemble, state, nbrs, dt, kT, per_chunk,
                                                     record_every)
                records.append(chunk)
                steps.update(per_chunk * record_every)
                failure = find_failure(chunk["positions"], chunk["velocities"],
                                       chunk["potential"], chunk["kinetic"], self.box_nm,
                                       temperature_K, limits, ensemble,
                                       closest_nm=chunk["closest_pair"])
                if failure is not None:
                    records[-1] = {k: v[: failure[0] + 1] for k, v in chunk.items()}
                    break
                self._report(what, done + per_chunk, n_records, per_chunk,
                             record_every * timestep_fs * 1e-3)
        self._nbrs = nbrs
        return _segment(ensemble, temperature_K, timestep_fs, record_every, n_steps, self,
                        records, None if failure is None else failure[1])

    def _run_chunk(self, ensemble, state, nbrs, dt, kT, per_chunk, record_every):
        """One chunk, rerun from its start with a larger list while the list overflows."""
        fn = self._chunk_fn(ensemble, per_chunk)
        every = jnp.asarray(record_every, jnp.int32)
        for _ in range(MAX_REALLOCATIONS):
            new_state, new_nbrs, records = fn(state, nbrs, dt, kT, every, self._params)
            records = _to_numpy(records)
            # A run gone non-finite overflows any list: the stability check reports it.
            if not bool(new_nbrs.overflow) or not np.isfinite(
                    records["potential"]).all():
                return new_state, new_nbrs, records
            slots = nbrs.idx.shape[-1]
            nbrs = self._grow_list(state.position)
            self.progress(f"neighbour list overflow (pairs or cells) at {slots} pair slots: "
                          f"reallocated with {nbrs.idx.shape[-1]}, rerunning the chunk")
        raise ForcematchError(f"the neighbour list still overflows after {MAX_REALLOCATIONS} "
                              "reallocations: the system keeps getting denser")

    def _report(self, what: str, done: int, total: int, per_chunk: int, record_ps: float):
        """A progress line every ten chunks and at the end (`done` of `total` records)."""
        if done == total or done % (10 * per_chunk) == 0:
            self.progress(f"{what}: {done * record_ps:.1f} / {total * record_ps:.1f} ps")


def engine_species(potential, n_atoms: int, species=None) -> np.ndarray:
    """Species [N] of the atoms MD moves: `species` where given (checked against the model's
    S species), else the training frames' when N is theirs, else all species 0 for a model of
    one species. The engine's pair list is its own, so any N the box holds runs; a model of
    several species needs the species of a system of another size given."""
    n_species = potential.n_species
    if species is None:
        if n_atoms == potential.n_atoms:
            return np.asarray(potential.species, np.int32)
        if n_species > 1:
            raise ForcematchError(
                f"{n_atoms} atoms for a model of {n_species} species trained on "
                f"{potential.n_atoms}: give the species of the {n_atoms} atoms")
        return np.zeros(n_atoms, np.int32)
    species = np.asarray(species)
    if species.shape != (n_atoms,) or not np.issubdtype(species.dtype, np.integer):
        raise ForcematchError(f"species must be [{n_atoms}] integers (one per mass), got "
                              f"{species.dtype} {species.shape}")
    if species.size and (species.min() < 0 or species.max() >= n_species):
        raise ForcematchError(f"species must lie in 0..{n_species - 1} (the model's), got "
                              f"{int(species.min())}..{int(species.max())}")
    return species.astype(np.int32)


def observe(state, nbrs, energy, params, box_nm) -> dict:
    """One record of the state: positions, velocities, forces, energies, total momentum, the
    closest pair."""
    momentum = state.momentum
    return {
        "positions": state.position,
        "velocities": momentum / state.mass,
        "forces": state.force,
        "potential": energy(state.position, neighbor=nbrs, params=params),
        "kinetic": 0.5 * jnp.sum(momentum * momentum / state.mass),
        "momentum": jnp.sum(momentum, axis=0),
        "closest_pair": closest_pair_nm(state.position, nbrs, box_nm),
    }


def closest_pair_nm(positions, nbrs, box_nm):
    """The closest pair distance (nm) among the list's pairs: every pair within cutoff + skin
    is in the list, so this is the frame's closest pair whenever it is that close."""
    n = positions.shape[0]
    real = (nbrs.idx[0] < n) & (nbrs.idx[1] < n)
    i, j = (jnp.where(real, k, 0) for k in nbrs.idx)
    return jnp.min(space.pair_distances(positions, box_nm, i, j, real, fill_nm=jnp.inf))


def _to_numpy(records: dict, first: bool = False) -> dict:
    """Records as float64 numpy arrays with a leading record axis."""
    return {k: np.asarray(v, np.float64)[None] if first else np.asarray(v, np.float64)
            for k, v in records.items()}


def _segment(ensemble, temperature_K, timestep_fs, record_every, n_steps, engine, records,
             failure) -> Segment:
    cat = {k: np.concatenate([r[k] for r in records]) for k in records[0]}
    n = cat["potential"].shape[0]
    return Segment(
        ensemble=ensemble, temperature_K=float(temperature_K), timestep_fs=float(timestep_fs),
        record_every=int(record_every), box_nm=engine.box_nm, masses_amu=engine.masses_amu,
        time_ps=np.arange(n) * record_every * timestep_fs * 1e-3,
        positions_nm=cat["positions"], velocities_nm_ps=cat["velocities"],
        forces_kJ_mol_nm=cat["forces"], potential_kJ_mol=cat["potential"],
        kinetic_kJ_mol=cat["kinetic"], momentum_amu_nm_ps=cat["momentum"],
        planned_steps=int(n_steps), failure=failure)
