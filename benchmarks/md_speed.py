"""MD with a learned model (`md.engine.ModelEngine`) against OpenMM: NVE steps/s on the same
liquid, and the cost per atom-step from 100 to 10,000 atoms.

The system is the config's (`--config`, default config/config.yaml: argon at 1.3137 g/cm³,
100 K, cutoff 0.8 nm, switch 0.7 nm, the md section's 5 fs step, 0.1 nm skin, records every 20
steps), at `--sizes` atoms at the same density. Each size starts from the fcc lattice
(`lattice_positions_nm`) melted by 10 ps of OpenMM NVT (friction 5/ps); every engine then runs
NVE from that same liquid through its `run(...)` (OpenMM: CPU platform), once to compile and
warm up and then timed, with `StabilityLimits(0, 1e9)` so that no check stops a run.

Models: each family of `--models` with initialised parameters (its config options,
`Normalisation()`), built as `load_model` builds a `Potential`; or the trained models of
`--model-dir`, run at each size as they are (the parameters do not depend on N; the engines
size their pair lists from the atoms; one-species models at other sizes). Speed does not
depend on the parameters, but the dynamics do: an untrained model's forces are tiny, its atoms
fly almost freely, and the ideal gas's density fluctuations overflow JAX MD's cell list
(1,000 atoms and up) within a few hundred steps; such a run is reported as skipped (the
engine's reallocation after an overflow is not timed). The size scan needs trained models.

Compilation inside `run()` is timed through `jax.monitoring` and kept apart: "steady" is the
wall time less compilation. Part 1 (the config's size) runs the engines as they are, the
stability check included, alternated `--repeats` times, then once from a new state (the end
of the last run, as the MD protocol's next run starts) to show what a run costs besides its
steps. The size scan runs the engines as they are too; it prints beside them what the
stability check's closest-pair search costs per record where the engine has no neighbour list
to take it from (OpenMM: a periodic k-d tree). "forces alone": energy and forces of the model
by itself (its own pair list within the cutoff, no integrator, no skin), chained calls in one
jitted scan. With `--threads 1` the process is pinned to one CPU (`--cpu`), so XLA's helper
thread and OpenMM count on that core.

The table MD runs for a pair family ("table(<label>)", for each `pair` or `spline` model):
`md.pair_table.PairTable` (cubic pieces of φ(r), each pair's force within 1e-6 of the force
RMS), driven by the same `ModelEngine`, walled below 0.9 × the start's closest pair.

OpenMM with an exported pair model ("openmm-export(<label>)", for each `pair` model): the
System of `forcematch export` (`calculators.export.openmm_system`: one CustomNonbondedForce of
tabulated pair functions, the default grids, r_min 0.9 × the start's closest pair) for the
same atoms in the same box, run by the same `OpenMMEngine` on the CPU platform: its "ratio to
OpenMM" is the tables' cost against OpenMM's own NonbondedForce LJ (switched, dispersion
correction). Like the model engines, it needs a trained model for realistic dynamics.

    python benchmarks/md_speed.py [--sizes 100 1000 10000] [--models pair atomic mpnn]
        [--steps 2000] [--atom-steps 600000] [--repeats 3] [--threads 1]
        [--model-dir results/train/pair-joint-nall/model ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import numpy as np

from forcematch.cli import limit_threads
from forcematch.config import load_config
from forcematch.data import pairs
from forcematch.md.neighbours import HalfShellPairs
from forcematch.md.record import StabilityLimits, min_pair_distance_nm
from forcematch.units import cubic_box_length_nm

# JAX (and everything that imports it) is imported in the functions below, after `--threads`.

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
NO_LIMITS = StabilityLimits(min_distance_nm=0.0, runaway_factor=1e9)
MELT_PS, MELT_FRICTION_PER_PS = 10.0, 5.0
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
COMPILE_S = [0.0]  # compilation seconds so far in this process (a jax.monitoring listener)


class ListOverflow(RuntimeError):
    """ModelEngine reported a neighbour-list overflow (it would reallocate and rerun)."""


def on_progress(message: str) -> None:
    if "overflow" in message:
        raise ListOverflow(message)


def lj_at(base, n_atoms: int, density_g_cm3: float):
    """The config's LJSystem with `n_atoms` atoms at the same density."""
    return dataclasses.replace(base, n_atoms=n_atoms, box_nm=cubic_box_length_nm(
        n_atoms, density_g_cm3, base.mass_amu))


def make_potential(name: str | None, lj, positions_nm, model_config: dict | None,
                   model_dir: Path | None = None, seed: int = 0):
    """The `Potential` a ModelEngine drives, for `lj.n_atoms` atoms: `load_model(model_dir)`
    as it is (at another size single-species models only), or family `name` with initialised
    parameters for `lj.n_atoms` atoms, built as `load_model` builds one: Potential(path, info,
    params)."""
    import jax
    import jax.numpy as jnp

    from forcematch.config import model_settings, train_settings
    from forcematch.errors import ForcematchError
    from forcematch.model_factory import build_model
    from forcematch.models import Normalisation
    from forcematch.potential import Potential, load_model

    n, box = lj.n_atoms, np.full(3, lj.box_nm)
    capacity = pairs.estimate_capacity(np.asarray(positions_nm)[None], box[None], lj.cutoff_nm)
    if model_dir is not None:  # any N: the engines size their pair lists from the atoms
        loaded = load_model(model_dir)
        if loaded.n_atoms != n and loaded.n_species > 1:
            raise ForcematchError("a model of several species runs only at its own size here")
        return loaded
    config = model_settings(name, model_config, source=f"{name} model")
    model = build_model(name, config, lj.cutoff_nm, capacity)
    params = model.init(jax.random.PRNGKey(seed), jnp.asarray(positions_nm, jnp.float32),
                        jnp.asarray(box, jnp.float32), jnp.zeros(n, jnp.int32))
    info = {"model": name, "model_config": config, "train_config": dict(train_settings(None)),
            "cutoff_nm": lj.cutoff_nm, "capacity": capacity, "n_atoms": n, "species": [0] * n,
            "stats": {}, "norm": Normalisation().to_dict()}
    return Potential(Path(f"<initialised {name}>"), info, params)


def melted_start(lj, threads: int, md: dict, temperature_K: float, seed: int):
    """(positions, velocities, RMS displacement from the lattice nm): the lattice after
    MELT_PS of OpenMM NVT."""
    from forcematch.md.reference import OpenMMEngine
    from forcematch.reference.system import lattice_positions_nm

    lattice = lattice_positions_nm(lj, np.random.default_rng(seed))
    steps = round(MELT_PS / (md["timesteps_fs"][0] * 1e-3))
    segment = OpenMMEngine(lj, "CPU", threads).run(
        "nvt", lattice, None, temperature_K, md["timesteps_fs"][0], steps, steps,
        seed + 1, MELT_FRICTION_PER_PS, NO_LIMITS)
    if segment.failure is not None:
        raise SystemExit(f"{lj.n_atoms} atoms: the melt failed: {segment.failure}")
    d = segment.positions_nm[-1] - lattice
    d -= lj.box_nm * np.round(d / lj.box_nm)
    return (*segment.final_state(), float(np.sqrt(np.mean(np.sum(d * d, axis=1)))))


def nve_run(engine, start, n_steps: int, record_every: int, md: dict, temperature_K: float):
    """One NVE run from `start`: (wall s, CPU s, compile s inside the run, final state)."""
    compile_before = COMPILE_S[0]
    t0, c0 = time.perf_counter(), time.process_time()
    segment = engine.run("nve", start[0], start[1], temperature_K, md["timesteps_fs"][0],
                         n_steps, record_every, md["seed"] + 1, md["friction_per_ps"],
                         NO_LIMITS)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if segment.failure is not None:
        raise RuntimeError(f"{engine.name} run failed: {segment.failure}")
    return wall, cpu, COMPILE_S[0] - compile_before, segment.final_state()


def exported_openmm(potential, lj, start, threads: int):
    """An OpenMMEngine (CPU platform) whose System is the exported tables of the pair model
    `potential` for `lj`'s atoms and box (see the module docstring)."""
    from forcematch.calculators.export import openmm_system
    from forcematch.calculators.tables import PairFunctions, automatic_grids
    from forcematch.md.engine import engine_species
    from forcematch.md.reference import OpenMMEngine

    box = np.full(3, lj.box_nm)
    r_min = 0.9 * float(min_pair_distance_nm(np.asarray(start[0])[None], box)[0])
    tables = automatic_grids(PairFunctions(potential), r_min, None, None)[0]
    engine = OpenMMEngine(lj, "CPU", threads)
    engine._system = openmm_system(tables, lj.masses_amu, engine_species(potential, lj.n_atoms),
                                   box)  # its System
    return engine


def table_of(potential, lj, start):
    """The pair table MD runs for a pair family (`md.pair_table.PairTable`, the default bound),
    walled below 0.9 × the start's closest pair (as the export here)."""
    from forcematch.md.pair_table import PairTable

    box = np.full(3, lj.box_nm)
    r_min = 0.9 * float(min_pair_distance_nm(np.asarray(start[0])[None], box)[0])
    return PairTable.build(potential, [r_min])


def build_engines(lj, start, specs, args, config) -> tuple[dict, dict]:
    """({label: engine}, {label: why it was skipped}) for OpenMM, each model of `specs`
    ([(label, family, model_dir or None)]) and, for a pair model, OpenMM with its export."""
    from forcematch.md.engine import ModelEngine
    from forcematch.md.reference import OpenMMEngine

    engines, skipped = {"openmm": OpenMMEngine(lj, "CPU", args.threads)}, {}
    masses, box = np.full(lj.n_atoms, lj.mass_amu), np.full(3, lj.box_nm)
    for label, name, model_dir in specs:
        try:
            potential = make_potential(name, lj, start[0], config["model"].get(name or ""),
                                       model_dir)
            if potential.model_name == "pair":
                engines[f"openmm-export({label})"] = exported_openmm(potential, lj, start,
                                                                     args.threads)
            if potential.model_name in ("pair", "spline"):
                engines[f"table({label})"] = ModelEngine(
                    table_of(potential, lj, start), masses, box,
                    skin_nm=config["md"]["skin_nm"],
                    friction_per_ps=config["md"]["friction_per_ps"], progress=on_progress)
            engines[label] = ModelEngine(potential, masses, box, skin_nm=config["md"]["skin_nm"],
                                        friction_per_ps=config["md"]["friction_per_ps"],
                                        progress=on_progress)
        except Exception as exc:  # noqa: BLE001 - MemoryError, XLA's RESOURCE_EXHAUSTED, ...
            skipped[label] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return engines, skipped


def measure(engine, start, n_steps, record_every, md, temperature_K, warm: bool):
    """Time one NVE run after a warm-up run (when `warm` is false): a result row."""
    if not warm:
        nve_run(engine, start, n_steps, record_every, md, temperature_K)
    wall, cpu, compile_s, end = nve_run(engine, start, n_steps, record_every, md, temperature_K)
    steady = max(wall - compile_s, 1e-9)
    return {"steps": n_steps, "wall": wall, "cpu": cpu, "compile": compile_s,
            "steady_steps_s": n_steps / steady, "end": end}


def forces_alone_us_per_atom(potential, lj, positions_nm, repeats: int = 3) -> float:
    """µs per atom of one energy + forces evaluation of `potential` alone (its own pair list,
    no integrator): `calls` evaluations chained in one jitted scan, so that the per-call
    dispatch does not count; median of `repeats` after the compiling call."""
    import jax
    import jax.numpy as jnp

    from forcematch.md.engine import engine_species

    energy = potential.energy_function(lj.n_atoms)  # its own pair list, sized for N
    gradient, calls = jax.grad(energy, argnums=1), max(2, 20_000 // lj.n_atoms)

    def forces(params, positions, box, species):
        return -gradient(params, positions, box, species)

    def chained(params, positions, box, species):  # each call depends on the one before
        def body(x, _):
            return x + 1e-9 * forces(params, x, box, species), None

        return jax.lax.scan(body, positions, None, length=calls)[0]

    fn = jax.jit(chained)
    args = (potential.params_as(np.float32), jnp.asarray(positions_nm, jnp.float32),
            jnp.full(3, lj.box_nm, jnp.float32),
            jnp.asarray(engine_species(potential, lj.n_atoms)))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / calls / lj.n_atoms * 1e6


def part1(engines, skipped, start, args, config) -> dict:
    """The config's size, engines as they are (closest-pair check on), alternated; then one
    run per engine from the timed run's end (a new state, as the MD protocol's next run)."""
    md, temperature_K = config["md"], config["system"]["temperature_K"]
    runs: dict = {name: [] for name in engines}
    for repeat in range(args.repeats + 1):
        for name, engine in list(engines.items()):
            state = start if repeat < args.repeats else runs[name][-1]["end"]
            try:
                runs[name].append(measure(engine, state, args.steps, md["record_every"], md,
                                          temperature_K, warm=repeat > 0))
            except Exception as exc:  # noqa: BLE001 - a list overflow, a failed run
                skipped[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                del engines[name], runs[name]
    return runs


def print_part1(runs, skipped, n_atoms, args, config) -> None:
    print(f"\n### {n_atoms} atoms, NVE {args.steps} steps, record every "
          f"{config['md']['record_every']}, checks on; median of {args.repeats} alternated "
          "runs from the same liquid (the first after a warm-up run)\n")
    print("| engine | steady steps/s | ratio to OpenMM | µs/atom-step | run() from a new state: "
          "s (of it compilation) |")
    print("|---|---|---|---|---|")
    base = statistics.median(r["steady_steps_s"] for r in runs["openmm"][:-1])
    for name, rows in runs.items():
        steady = statistics.median(r["steady_steps_s"] for r in rows[:-1])
        print(f"| {name} | {steady:,.0f} | {steady / base:.4f} | {1e6 / steady / n_atoms:.2f} "
              f"| {rows[-1]['wall']:.2f} ({rows[-1]['compile']:.2f}) |")
    for name, why in skipped.items():
        print(f"| {name} | skipped: {why} | | | |")
    for name, rows in runs.items():
        if name.startswith("openmm-export"):
            steady = statistics.median(r["steady_steps_s"] for r in rows[:-1])
            print(f"\n{name}: {steady:,.0f} steps/s, {steady / base:.3f} x OpenMM's own "
                  f"NonbondedForce LJ ({base:,.0f} steps/s), same atoms and box, CPU platform")


def steps_for(n_atoms: int, args, config) -> int:
    """Timed steps at `n_atoms`: `--steps` at the config's size, else `--atom-steps` / N,
    a multiple of record_every, at least 2 records."""
    every = config["md"]["record_every"]
    if n_atoms == config["system"]["n_atoms"]:
        return args.steps
    return every * max(2, round(args.atom_steps / n_atoms / every))


def scan_size(n, base, specs, args, config, cache) -> list[dict]:
    """Result rows at `n` atoms: every engine as it is (stability check on)."""
    system, md = config["system"], config["md"]
    lj = lj_at(base, n, system["density_g_cm3"])
    if n in cache:
        start, engines, skipped = cache[n]
    else:
        start = melted_start(lj, args.threads, md, system["temperature_K"], args.seed)
        print(f"  {n} atoms melted: rms displacement from the lattice {start[2]:.3f} nm",
              flush=True)
        engines, skipped = build_engines(lj, start, specs, args, config)
    t0 = time.perf_counter()
    min_pair_distance_nm(start[0][None], np.full(3, lj.box_nm))
    check_ms = (time.perf_counter() - t0) * 1e3
    pair_list = HalfShellPairs(np.full(3, lj.box_nm), lj.cutoff_nm, md["skin_nm"])
    list_kind = "all pairs" if pair_list.all_pairs else "cells"
    rows = [{"name": name, "n": n, "skipped": why} for name, why in skipped.items()]
    steps = steps_for(n, args, config)
    for name, engine in engines.items():
        row = {"name": name, "n": n, "check_ms": check_ms, "list": list_kind}
        try:
            row |= measure(engine, start, steps, md["record_every"], md,
                           system["temperature_K"], warm=n in cache)
            if not name.startswith(("openmm", "table(")):  # a table needs MD's pair list
                row["forces_us"] = forces_alone_us_per_atom(engine.potential, lj, start[0])
        except Exception as exc:  # noqa: BLE001 - out of memory, a list overflow, ...
            row["skipped"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        rows.append(row)
        print(f"  {n} atoms, {name}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row.items() if k != "end"), flush=True)
    return rows


def print_scan(rows) -> None:
    print("\n### Cost per atom-step: wall time less compilation\n")
    print("| engine | atoms | list | steps | µs/atom-step | × first size | forces alone µs/atom "
          "| run() s | of it compilation s | CPU/wall | check ms/record |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    first: dict = {}
    for r in rows:
        if "skipped" in r:
            print(f"| {r['name']} | {r['n']:,} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        us = 1e6 / r["steady_steps_s"] / r["n"]
        first.setdefault(r["name"], us)
        forces = f"{r['forces_us']:.2f}" if "forces_us" in r else "–"
        kind = "OpenMM" if r["name"].startswith("openmm") else r["list"]
        print(f"| {r['name']} | {r['n']:,} | {kind} "
              f"| {r['steps']} | {us:.2f} | {us / first[r['name']]:.2f} | {forces} "
              f"| {r['wall']:.2f} | {r['compile']:.2f} | {r['cpu'] / r['wall']:.2f} "
              f"| {r['check_ms']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--models", nargs="+", default=["pair", "atomic", "mpnn"])
    parser.add_argument("--model-dir", type=Path, nargs="+", default=None,
                        help="trained models (model/ or checkpoint/ directories) instead of "
                        "--models, labelled by the directory above model/")
    parser.add_argument("--steps", type=int, default=2000,
                        help="timed NVE steps at the config's size (default 2000)")
    parser.add_argument("--atom-steps", type=int, default=600_000,
                        help="timed steps × atoms at the other sizes (default 600,000: "
                        "600 steps at 1,000 atoms, 60 at 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs in part 1")
    parser.add_argument("--threads", type=int, default=1, help="XLA and OpenMM threads")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin to this CPU (default with --threads 1: the last; -1: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    limit_threads(args.threads)
    cpu = args.cpu if args.cpu is not None else (-1 if args.threads != 1 else
                                                 max(os.sched_getaffinity(0)))
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import jax
    import openmm

    from forcematch.reference.system import lj_system_from_config

    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: event in COMPILE_EVENTS and COMPILE_S.__setitem__(
            0, COMPILE_S[0] + seconds))
    config = load_config(args.config)
    base = lj_system_from_config(config)
    specs = ([(d.parent.name if d.name in ("model", "checkpoint") else d.name, None, d)
              for d in args.model_dir] if args.model_dir else
             [(name, name, None) for name in args.models])
    print(f"jax {jax.__version__}, OpenMM {openmm.__version__}, {args.threads} thread(s), "
          f"{f'pinned to CPU {cpu}' if cpu >= 0 else 'not pinned'}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {config['system']['temperature_K']}"
          f" K, {config['system']['density_g_cm3']} g/cm³, cutoff {base.cutoff_nm} nm, skin "
          f"{config['md']['skin_nm']} nm, {config['md']['timesteps_fs'][0]} fs", flush=True)
    cache, n0 = {}, config["system"]["n_atoms"]
    lj0 = lj_at(base, n0, config["system"]["density_g_cm3"])
    start = melted_start(lj0, args.threads, config["md"], config["system"]["temperature_K"],
                         args.seed)
    print(f"  {n0} atoms melted: rms displacement from the lattice {start[2]:.3f} nm")
    engines, skipped = build_engines(lj0, start, specs, args, config)
    print_part1(part1(engines, skipped, start, args, config), skipped, n0, args, config)
    cache[n0] = (start, engines, skipped)
    rows = []
    for n in args.sizes:
        rows += scan_size(n, base, specs, args, config, cache)
    print_scan(rows)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
