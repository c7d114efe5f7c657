"""One MD protocol for every potential, model or reference, and the summary it gives.

    protocol = Protocol.from_config(config)             # the `md` section and the system's T
    segments = run_protocol(engine, positions_nm, protocol, limits)
    summary = summarise(segments, protocol, epsilon_kJ_mol, strain_derivative)
    summary["against_reference"] = compare(summary, reference_summary)

The runs, from one test-split frame: NVT equilibration at T (velocities drawn with the seed);
from its last state NVE at each time step of `timesteps_fs` (the first is the production step);
NVT at T (structure, energy, pressure, stability) and at `stress_factor` × T (stability).
A failed run is reported, never raised: later runs that need its state are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from forcematch.errors import ForcematchError
from forcematch.md import checks
from forcematch.md.record import Segment, StabilityLimits

NVE_PREFIX = "nve_"


@dataclass(frozen=True)
class Protocol:
    """The MD runs' settings (units in names); see the config schema's `md` section."""

    temperature_K: float
    equilibration_ps: float
    nve_ps: float
    timesteps_fs: tuple[float, ...]
    nvt_ps: float
    stress_factor: float
    friction_per_ps: float
    record_every: int
    seed: int

    @classmethod
    def from_config(cls, config: dict) -> Protocol:
        md = config["md"]
        return cls(temperature_K=float(config["system"]["temperature_K"]),
                   equilibration_ps=float(md["equilibration_ps"]), nve_ps=float(md["nve_ps"]),
                   timesteps_fs=tuple(float(t) for t in md["timesteps_fs"]),
                   nvt_ps=float(md["nvt_ps"]), stress_factor=float(md["stress_factor"]),
                   friction_per_ps=float(md["friction_per_ps"]),
                   record_every=int(md["record_every"]), seed=int(md["seed"]))

    @property
    def timestep_fs(self) -> float:
        """The production time step: the first of `timesteps_fs`."""
        return self.timesteps_fs[0]

    def steps(self, duration_ps: float, timestep_fs: float) -> tuple[int, int]:
        """(steps, record_every) for `duration_ps` at `timestep_fs`: records keep the
        production step's interval, and the steps are a whole number of records."""
        every = max(1, round(self.record_every * self.timestep_fs / timestep_fs))
        records = max(1, round(duration_ps * 1e3 / (timestep_fs * every)))
        return records * every, every


def limits_from_data(closest_pair_nm: float, margin: float, runaway_factor: float
                     ) -> StabilityLimits:
    """Stability limits: a pair closer than the reference data's closest pair shrunk by
    `margin` (a fraction), or a temperature above `runaway_factor` × the target, fails a run."""
    if not 0.0 <= margin < 1.0:
        raise ForcematchError(f"md.close_pair_margin must lie in [0, 1), got {margin}")
    return StabilityLimits(min_distance_nm=closest_pair_nm * (1.0 - margin),
                           runaway_factor=runaway_factor)


def run_protocol(engine, positions_nm, protocol: Protocol, limits: StabilityLimits,
                 ) -> dict[str, Segment]:
    """The protocol's runs (see the module docstring) by `engine`, keyed "equilibration",
    "nve_<dt>fs" ..., "nvt", "nvt_stress"; runs after a failed equilibration are skipped."""
    p = protocol

    def run(ensemble, x, v, temperature_K, duration_ps, timestep_fs, seed):
        steps, every = p.steps(duration_ps, timestep_fs)
        return engine.run(ensemble, x, v, temperature_K, timestep_fs, steps, every, seed,
                          p.friction_per_ps, limits)

    # Seeds seed+1.. (never 0: OpenMM's Langevin integrator takes 0 as "pick one at random").
    segments = {"equilibration": run("nvt", positions_nm, None, p.temperature_K,
                                     p.equilibration_ps, p.timestep_fs, p.seed + 1)}
    if segments["equilibration"].failure is not None:
        return segments
    x, v = segments["equilibration"].final_state()
    for dt in p.timesteps_fs:
        segments[f"{NVE_PREFIX}{dt:g}fs"] = run("nve", x, v, p.temperature_K, p.nve_ps, dt, 0)
    segments["nvt"] = run("nvt", x, v, p.temperature_K, p.nvt_ps, p.timestep_fs, p.seed + 2)
    segments["nvt_stress"] = run("nvt", x, v, p.stress_factor * p.temperature_K, p.nvt_ps,
                                 p.timestep_fs, p.seed + 3)
    return segments


def _stability(segment: Segment) -> dict:
    return {"temperature_K": segment.temperature_K, "duration_ps": segment.duration_ps,
            "stable": segment.failure is None, "failure": segment.failure,
            "time_to_failure_ps": segment.time_to_failure_ps}


def _energy(segments: dict[str, Segment], protocol: Protocol, epsilon_kJ_mol: float) -> dict:
    nve = {dt: segments.get(f"{NVE_PREFIX}{dt:g}fs") for dt in protocol.timesteps_fs}
    rows = []
    for dt, seg in nve.items():
        if seg is None:
            continue
        row = {"timestep_fs": dt, "duration_ps": seg.duration_ps, **_stability(seg),
               "momentum_change_relative": checks.momentum_change(seg)}
        if seg.failure is None:
            row.update(checks.energy_drift(seg, epsilon_kJ_mol))
        rows.append(row)
    ok = [r for r in rows if r["stable"]]
    return {"nve": rows, "epsilon_kJ_mol": epsilon_kJ_mol,
            "drift_exponent": checks.power_law_exponent(
                [r["timestep_fs"] for r in ok], [r["drift_eps_per_atom_per_ns"] for r in ok]),
            "fluctuation_exponent": checks.power_law_exponent(
                [r["timestep_fs"] for r in ok], [r["fluctuation_eps_per_atom"] for r in ok])}


def _liquid(seg: Segment, epsilon_kJ_mol: float, strain_derivative) -> dict:
    """U/N, T, pressure and the RDF of a stable NVT run (records after the first)."""
    frames = slice(1, None)
    r_A, g = checks.rdf(seg.positions_nm[frames], seg.box_nm)
    peak_r, peak_g = checks.first_peak(r_A, g)
    dudl = strain_derivative(seg.positions_nm[frames])
    pressure = checks.pressure_bar(seg.kinetic_kJ_mol[frames], dudl, seg.box_nm)
    energy = seg.potential_kJ_mol[frames] / seg.n_atoms / epsilon_kJ_mol
    return {"n_frames": int(seg.positions_nm[frames].shape[0]),
            "potential_eps_per_atom": checks.block_mean(energy),
            "temperature_K": checks.block_mean(seg.temperature_inst_K[frames]),
            "pressure_bar": checks.block_mean(pressure),
            "rdf_first_peak_A": peak_r, "rdf_first_peak_g": peak_g,
            "rdf": {"r_A": r_A.tolist(), "g": g.tolist()}}


def summarise(segments: dict[str, Segment], protocol: Protocol, epsilon_kJ_mol: float,
              strain_derivative) -> dict:
    """The md.json content (before any comparison): settings, momentum, energy, stability and
    the liquid at T. `strain_derivative(positions [S,N,3]) -> dU/dλ [S] kJ/mol`."""
    eq = segments["equilibration"]
    out = {"protocol": asdict(protocol), "equilibration": _stability(eq)}
    if eq.failure is not None:
        out["stable"] = False
        return out
    out["energy"] = _energy(segments, protocol, epsilon_kJ_mol)
    out["momentum_change_relative"] = max(r["momentum_change_relative"]
                                          for r in out["energy"]["nve"])
    out["stability"] = {k: _stability(segments[k]) for k in ("nvt", "nvt_stress")}
    out["stable"] = all(s["stable"] for s in out["stability"].values()) and all(
        r["stable"] for r in out["energy"]["nve"])
    if segments["nvt"].failure is None:
        out["liquid"] = _liquid(segments["nvt"], epsilon_kJ_mol, strain_derivative)
    return out


def compare(summary: dict, reference: dict) -> dict:
    """The model's liquid against the reference's: RDF peak and max |Δg| against the
    reference's noise floor, U/N and pressure against their combined standard errors."""
    mine, ref = summary.get("liquid"), reference.get("liquid")
    if mine is None or ref is None:
        return {"available": False}
    delta_g = float(np.max(np.abs(np.asarray(mine["rdf"]["g"]) - np.asarray(ref["rdf"]["g"]))))
    out = {"available": True,
           "rdf_first_peak_shift_A": mine["rdf_first_peak_A"] - ref["rdf_first_peak_A"],
           "rdf_first_peak_g_difference": mine["rdf_first_peak_g"] - ref["rdf_first_peak_g"],
           "rdf_max_abs_delta_g": delta_g,
           "rdf_noise_floor": reference.get("rdf_noise_floor")}
    if out["rdf_noise_floor"] is not None:
        out["rdf_within_noise"] = delta_g <= out["rdf_noise_floor"]
    for key in ("pressure_bar", "potential_eps_per_atom"):
        if ref.get(key) is None:  # imported data hold no virial
            out[key] = None
            continue
        diff = mine[key]["mean"] - ref[key]["mean"]
        error = float(np.hypot(mine[key]["error"], ref[key]["error"]))
        out[key] = {"difference": diff, "combined_error": error,
                    "within_2_errors": abs(diff) <= 2.0 * error}
    return out
