"""Model evaluation cost per atom (jitted energy + forces) against the number of atoms.

For each size the box holds the default liquid density (config/config.yaml: 1.3137 g/cm³,
0.8 nm cutoff); positions are a simple cubic lattice filling the box, a random subset of its
sites when it has more sites than atoms, with 0.05 nm Gaussian noise. No OpenMM needed. Each
model family gets the pair capacity that training would give it (`pairs.estimate_capacity`,
max pairs × 1.2) and its default hyper-parameters; `neighbour_pairs(method="auto")` picks the
dense or the cell list, and the dense list is timed too where it is affordable (the two must
give bit-identical energies and forces). Times are medians of `--repeats` calls after one
compiling call, with `block_until_ready`: wall time, and process CPU time (all threads), the
steadier one when other jobs share the cores. Atom indices are in random spatial order, as in
a liquid that has diffused.

    python benchmarks/model_scaling.py [--sizes 100 1000 10000] [--models pair atomic mpnn]
        [--repeats 7] [--dense-max-atoms 10000] [--cutoff-nm 0.8] [--threads 1]
    python benchmarks/model_scaling.py --lists [300 500 1000 ...]   # dense vs cell list alone
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

from forcematch.cli import limit_threads
from forcematch.config import validate_config
from forcematch.data import pairs
from forcematch.units import cubic_box_length_nm

# JAX is imported in the functions below, after `--threads` has set XLA's thread pool.


def lattice_frame(n_atoms: int, box_nm: float, rng: np.random.Generator, noise_nm: float):
    """[N, 3] positions (nm): N sites of the smallest simple cubic lattice with ≥ N sites
    filling a cubic box of edge `box_nm`, plus Gaussian noise, wrapped into the box."""
    k = math.ceil(n_atoms ** (1 / 3) - 1e-9)
    grid = (np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5)
    sites = grid[rng.choice(len(grid), n_atoms, replace=False)] * (box_nm / k)
    return np.mod(sites + rng.normal(0.0, noise_nm, sites.shape), box_nm)


def time_call(fn, args, repeats: int) -> tuple[float, float]:
    """(median wall time, median process CPU time), s, of `fn(*args)` over `repeats` calls
    after one compiling call. CPU time (all threads) is the steadier measure of cost on a
    shared machine: other jobs stretch the wall time, hardly the CPU time."""
    import jax

    jax.block_until_ready(fn(*args))
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def list_crossover(sizes, cutoffs_nm, system, rng, args) -> None:
    """The neighbour list alone, dense vs cell list (forced), CPU µs per atom: where the
    cell list starts to pay (`space.CELL_MIN_ATOMS`)."""
    import jax
    import jax.numpy as jnp

    from forcematch import space

    print(f"{'cutoff nm':>9s} {'atoms':>6s} {'cells/edge':>10s} {'per cell':>8s} "
          f"{'dense µs/atom':>13s} {'cell µs/atom':>12s}")
    for cutoff_nm in cutoffs_nm:
        for n in sizes:
            box_nm = cubic_box_length_nm(n, system["density_g_cm3"], system["mass_amu"])
            if cutoff_nm > box_nm / 2:
                continue
            pos = lattice_frame(n, box_nm, rng, args.noise_nm)
            box = np.full(3, box_nm)
            capacity = pairs.estimate_capacity(pos[None], box[None], cutoff_nm)
            p, b = jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32)
            row = {}
            for method in ("dense", "cell"):
                if method == "dense" and n > args.dense_max_atoms:
                    continue
                try:
                    space.cell_shape_for(n, cutoff_nm, capacity, method)
                except ValueError:
                    continue  # fewer than 3 cells per edge
                fn = jax.jit(space.neighbour_pairs, static_argnums=(2, 3, 4))
                t_cpu = time_call(fn, (p, b, cutoff_nm, capacity, method), args.repeats)[1]
                row[method] = t_cpu / n * 1e6
            shape = space.cell_list_shape(n, cutoff_nm, capacity, min_atoms=0)
            print(f"{cutoff_nm:9.4f} {n:6d} {math.floor(box_nm / cutoff_nm):10d} "
                  f"{shape[1] if shape else '—':>8} {row.get('dense', float('nan')):13.2f} "
                  f"{row.get('cell', float('nan')):12.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--models", nargs="+", default=["pair", "atomic", "mpnn"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dense-max-atoms", type=int, default=10000,
                        help="time the dense list only up to this many atoms (N² memory)")
    parser.add_argument("--cutoff-nm", type=float, default=None,
                        help="default: system.cutoff_nm of the default config")
    parser.add_argument("--noise-nm", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="XLA CPU threads (default 1, as each Snakemake job; 0: XLA's own)")
    parser.add_argument("--cpu", type=int, default=None,
                        help="pin the process to this CPU (with --threads 1 the default is the "
                        "last CPU; -1: no pinning). XLA keeps a helper thread busy even with "
                        "one compute thread, which pinning folds into the measured time")
    parser.add_argument("--lists", type=int, nargs="*", default=None, metavar="N",
                        help="instead: time the neighbour lists alone, dense vs cell, for these "
                        "sizes (default 300 … 10,000) at the default and the 3σ cutoff")
    args = parser.parse_args()
    if args.threads > 0:
        limit_threads(args.threads)
    cpu = args.cpu if args.cpu is not None else (-1 if args.threads != 1 else
                                                 max(os.sched_getaffinity(0)))
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import jax
    import jax.numpy as jnp

    from forcematch import space
    from forcematch.model_factory import build_model
    from forcematch.models import Normalisation, energy_and_forces_fn

    system = validate_config({})["system"]
    cutoff_nm = args.cutoff_nm or system["cutoff_nm"]
    rng = np.random.default_rng(args.seed)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{args.threads or 'default'} XLA thread(s), "
          f"{f'pinned to CPU {cpu}' if cpu >= 0 else 'not pinned'}, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"cutoff {cutoff_nm} nm, {system['density_g_cm3']} g/cm³, median of {args.repeats}")

    if args.lists is not None:
        list_crossover(args.lists or [300, 400, 500, 700, 1000, 2000, 10000],
                       [cutoff_nm, 3 * system["sigma_nm"]], system, rng, args)
        return

    frames = {}
    for n in args.sizes:
        box_nm = cubic_box_length_nm(n, system["density_g_cm3"], system["mass_amu"])
        if cutoff_nm > box_nm / 2:
            raise SystemExit(f"{n} atoms: box {box_nm:.3f} nm is under twice the cutoff")
        pos = lattice_frame(n, box_nm, rng, args.noise_nm)
        box = np.full(3, box_nm)
        capacity = pairs.estimate_capacity(pos[None], box[None], cutoff_nm)
        shape = space.cell_shape_for(n, cutoff_nm, capacity)
        frames[n] = (jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32), capacity)
        listing = "dense" if shape is None else f"cell (max_cells {shape[0]}, {shape[1]} per cell)"
        print(f"  {n:6d} atoms: box {box_nm:.3f} nm, pair capacity {capacity} "
              f"({capacity / n:.1f} per atom), {listing}")

    print(f"{'model':7s} {'atoms':>6s} {'list':5s} {'wall ms':>9s} {'µs/atom':>9s} {'× first':>8s} "
          f"{'CPU µs/atom':>11s} {'× first':>8s} {'dense µs/atom':>13s}")
    for name in args.models:
        first = first_cpu = None
        for n in args.sizes:
            pos, box, capacity = frames[n]
            species = jnp.zeros(n, jnp.int32)
            model = build_model(name, {}, cutoff_nm, capacity)
            params = model.init(jax.random.PRNGKey(0), pos, box, species)
            ef = jax.jit(energy_and_forces_fn(model, Normalisation()))
            e, f = ef(params, pos, box, species)
            if not (bool(jnp.isfinite(e)) and bool(jnp.all(jnp.isfinite(f)))):
                raise SystemExit(f"{name}, {n} atoms: non-finite energy or forces (overflow?)")
            t, t_cpu = time_call(ef, (params, pos, box, species), args.repeats)
            method = "dense" if space.cell_shape_for(n, cutoff_nm, capacity) is None else "cell"
            first, first_cpu = first or t / n, first_cpu or t_cpu / n
            dense = "same"
            if method == "cell" and n > args.dense_max_atoms:
                dense = "skipped"
            elif method == "cell":
                model.neighbour_method = "dense"
                ef_dense = jax.jit(energy_and_forces_fn(model, Normalisation()))
                e_dense, f_dense = ef_dense(params, pos, box, species)
                if not (np.array_equal(e_dense, e) and np.array_equal(f_dense, f)):
                    raise SystemExit(f"{name}, {n} atoms: dense and cell lists disagree")
                t_dense, _ = time_call(ef_dense, (params, pos, box, species), args.repeats)
                dense = f"{t_dense / n * 1e6:.2f}"
            print(f"{name:7s} {n:6d} {method:5s} {t * 1e3:9.2f} {t / n * 1e6:9.2f} "
                  f"{t / n / first:8.2f} {t_cpu / n * 1e6:11.2f} {t_cpu / n / first_cpu:8.2f} "
                  f"{dense:>13s}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
