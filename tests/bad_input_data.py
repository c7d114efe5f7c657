"""Catalogue cases: data files, datasets and the OpenMM side (docs/explanation/refusals.md).

Each case breaks one thing in copies of the tiny run's real replica files (or in a real partial
replica) and runs the real subcommand. Warnings that do not stop a stage (coordinates wrapped
into the box) are tested in tests/test_data_checks.py.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from bad_input_training import md_args, reference_md
from catalogue import Case, config_with, other_system_dataset, run

from forcematch.config import load_config
from forcematch.reference import run_replica

POS, FRC = "particles/all/position/value", "particles/all/force/value"
ENERGY = "observables/potential_energy/value"


def dataset_args(tiny, tmp, replicas, out=None) -> list:
    return ["dataset", "--config", tiny.config, "--inputs", *replicas, "--out-dir",
            out or tmp / "dataset"]


def edited(tiny, tmp, replica: int, edit) -> list:
    """The dataset command on copies of the replicas, `edit(h5py.File)` applied to one."""
    replicas = tiny.copy_replicas(tmp)
    with h5py.File(replicas[replica], "r+") as f:
        edit(f)
    return dataset_args(tiny, tmp, replicas)


def restore(f: h5py.File, item: str, values: np.ndarray, dtype=None) -> None:
    """Replace the dataset `item` by `values` (stored as `dtype`), keeping its unit."""
    unit = f[item].attrs["unit"]
    del f[item]
    f.create_dataset(item, data=values, dtype=dtype or values.dtype)
    f[item].attrs["unit"] = unit


def change(item: str, fn, dtype=None):
    """An edit that replaces `item` by fn(its values)."""
    return lambda f: restore(f, item, fn(f[item][()]), dtype)


def test_holds_train_frames(tiny, tmp):
    """The test replica holds the training replica's frames, translated and stored as float32:
    near-identical to them, not equal."""
    with h5py.File(tiny.replicas[0], "r") as f:
        pos, frc, energy = f[POS][()], f[FRC][()], f[ENERGY][()]
        box = f["particles/all/box/edges/value"][0]

    def edit(f):
        restore(f, POS, np.mod(pos + [0.3, 0.1, 0.2], box).astype(np.float32))
        restore(f, FRC, frc)
        restore(f, ENERGY, energy)

    return edited(tiny, tmp, 2, edit)


def frame_copied(item_names, source: int, target: int):
    def fn(values):
        values[target] = values[source]
        return values
    return lambda f: [restore(f, item, fn(f[item][()])) for item in item_names]


def huge_declared(tiny, tmp):
    """An H5MD file whose headers declare 1e8 frames (~72 GiB as float64), holding nothing."""
    replicas = tiny.copy_replicas(tmp)
    t, n = 10**8, 32
    with h5py.File(replicas[1], "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        part = f.create_group("particles/all")
        for group, shape, unit in (("position", (t, n, 3), "nm"), ("force", (t, n, 3),
                                   "kJ mol-1 nm-1"), ("box/edges", (t, 3), "nm")):
            g = part.create_group(group)
            g.create_dataset("value", shape=shape, dtype="f8", chunks=(1, *shape[1:]))
            g["value"].attrs["unit"] = unit
            g.create_dataset("step", shape=(t,), dtype="i8", chunks=(1024,))
            g.create_dataset("time", shape=(t,), dtype="f8", chunks=(1024,))
            g["time"].attrs["unit"] = "ps"
        e = f.create_group("observables/potential_energy")
        e.create_dataset("value", shape=(t,), dtype="f8", chunks=(1024,))
        e["value"].attrs["unit"] = "kJ mol-1"
    return dataset_args(tiny, tmp, replicas)


def fifo_input(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    replicas[1].unlink()
    os.mkfifo(replicas[1])
    return dataset_args(tiny, tmp, replicas)


def empty_replica(tiny, tmp):
    def edit(f):
        for item in (POS, FRC):
            restore(f, item, np.zeros((0, 32, 3)))
        restore(f, ENERGY, np.zeros(0))
        restore(f, "observables/virial/value", np.zeros((0, 3, 3)))
        for group in ("particles/all/position", "observables/potential_energy"):
            del f[f"{group}/step"], f[f"{group}/time"]
            f[f"{group}/step"] = np.zeros(0, np.int64)
            f[f"{group}/time"] = np.zeros(0)
            f[f"{group}/time"].attrs["unit"] = "ps"
        restore(f, "particles/all/box/edges/value", np.zeros((0, 3)))
    return edited(tiny, tmp, 1, edit)


def zero_frame_3(values):
    values[3] = 0.0
    return values


def thermostat_forces(values):
    """Random forces of 5 kJ/mol/nm added, as a Langevin thermostat's would be."""
    return values + np.random.default_rng(0).normal(scale=5.0, size=values.shape)


def far_from_origin_float32(tiny, tmp):
    def edit(f):
        box = f["particles/all/box/edges/value"][0]
        restore(f, POS, (f[POS][()] + 2000 * box).astype(np.float32))
    return edited(tiny, tmp, 1, edit)


def partial_replica_with_bad_chunk(tiny, tmp):
    """A replica stopped after 20 frames (checkpoints every 10), its first chunk overwritten."""
    config = config_with(tmp, simulate={"checkpoint_every_frames": 10})
    out = tmp / "replica_0.h5"
    run_replica(load_config(config), 0, out, progress=None, stop_after_frames=20)
    (tmp / ".replica_0.h5.partial" / "frames_00000000_00000010.npz").write_bytes(
        b"PK\x03\x04 not a zip archive any more")
    return ["simulate", "--config", config, "--replica", 0, "--out", out]


def out_dir_with_other_files(tiny, tmp):
    out = tmp / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    return dataset_args(tiny, tmp, tiny.replicas, out)


def simulate_with(**simulate):
    def argv(tiny, tmp):
        config = config_with(tmp, **simulate)
        return ["simulate", "--config", config, "--replica", 0, "--out", tmp / "r.h5"]
    return argv


def md_out_is_reference(tiny, tmp):
    """`md` with a model, its --out-dir a symlink to the --reference-dir (a real reference)."""
    reference = reference_md(tiny, tmp)
    (tmp / "md-new").symlink_to(reference, target_is_directory=True)
    return ["md", "--config", tiny.config, "--dataset-dir", tiny.dataset, "--model", tiny.model,
            "--reference-dir", reference, "--out-dir", tmp / "md-new"]


def md_reference_of_other_system(tiny, tmp):
    """`md` with the tiny model and dataset against the reference MD of a 30-atom system (its
    own config, replicas and dataset; the same md settings)."""
    config, dataset = other_system_dataset(tmp, 30)
    assert run(["md", "--config", config, "--dataset-dir", dataset, "--out-dir",
                tmp / "md-reference"]) == 0
    return md_args(tiny, tmp, "--reference-dir", tmp / "md-reference")


CASES: list[Case] = [
    Case("test-holds-train-frames", "the test replica holds the training replica's frames "
         "(here translated and stored as float32)", test_holds_train_frames,
         r"replica_2.h5 \(test\) frame 0 repeats .*replica_0.h5 \(train\) frame 0: positions "
         r"differ by [\d.e+-]+ nm RMS after the minimum image and a common shift .*; 40 frames "
         r"repeat frames of another split: a held-out set that holds training frames"),
    Case("frame-duplicated", "a frame stored twice in a replica",
         lambda t, p: edited(t, p, 1, frame_copied((POS, FRC, ENERGY), 6, 7)),
         r"replica_1.h5 \(val\) frame 7 repeats frame 6: positions differ by 0 nm RMS .*; "
         r"1 frame repeats earlier frames of the same replica"),
    Case("forces-repeated", "one frame's forces stored again at other positions (stale labels)",
         lambda t, p: edited(t, p, 1, frame_copied((FRC,), 4, 5)),
         r"replica_1.h5: forces of frame 5 are identical to those of frame 4, though the "
         r"positions differ: stale labels"),
    Case("forces-zero", "all-zero forces in a frame",
         lambda t, p: edited(t, p, 1, change(FRC, zero_frame_3)),
         r"replica_1.h5: forces of frame 3 are all zero \(1 of 40 frames\)"),
    Case("energy-constant", "one potential energy for every frame",
         lambda t, p: edited(t, p, 1, change(ENERGY, lambda e: np.full_like(e, -150.0))),
         r"replica_1.h5: potential energy is -150.0 kJ/mol in all 40 frames"),
    Case("net-force", "forces that do not sum to zero (a thermostat's forces mixed in)",
         lambda t, p: edited(t, p, 1, change(FRC, thermostat_forces)),
         r"replica_1.h5: net force [\d.e+-]+ kJ/mol/nm in frame 0 \(40 of 40 frames above "
         r"[\d.e+-]+ = 0.001 x sqrt\(N\) x force RMS"),
    Case("position-float16", "positions stored as float16",
         lambda t, p: edited(t, p, 1, change(POS, lambda x: x, np.float16)),
         r"replica_1.h5: /particles/all/position/value is stored as float16 \(11 significant "
         r"bits, about 3 decimal digits\); forcematch reads float64 or float32 only"),
    Case("position-float16-values", "float16 positions stored as float64",
         lambda t, p: edited(t, p, 1, change(POS, lambda x: x.astype(np.float16).astype(
             np.float64))),
         r"replica_1.h5: positions hold only float16 values: rounded by up to 0.00049 nm "
         r"\(RMS 0.0001\d nm\), which moves the force labels off them by about 1.\d % of the "
         r"force std \(limit 0.1 %"),
    Case("position-decimals", "positions rounded to 0.001 nm (as in a .gro file; 0.0001 nm "
         "is refused too)",
         lambda t, p: edited(t, p, 1, change(POS, lambda x: np.round(x, 3))),
         r"replica_1.h5: positions hold only multiples of 0.001 nm: rounded by up to "
         r"0.0005 nm \(RMS 0.00029 nm\), which moves the force labels off them by about 2.5 %"),
    Case("far-from-origin-float32", "coordinates 2,000 boxes from the origin, stored as "
         "float32 (stored as float64 they are wrapped into the box, with a note: the physics is "
         "unchanged)", far_from_origin_float32,
         r"replica_1.h5: positions lie up to 200[01] boxes from the origin and hold only float32 "
         r"values: rounded by up to 0.00012 nm \(RMS 7(.\d)?e-05 nm\), .* about 0.6\d? %.*; store "
         r"float64"),
    Case("replica-empty", "a replica without frames", empty_replica,
         r"replica_1.h5: holds 0 frames of 32 atoms"),
    Case("h5-huge-declared", "HDF5 headers that declare arrays of tens of GiB", huge_declared,
         r"replica_1.h5: reading /particles/all/position/value \(100000000 x 32 x 3 values\) "
         r"and \d more arrays would take [\d.]+ GiB as float64, more than the 8 GiB bound"),
    Case("input-fifo", "a FIFO (or a device, a directory) given as an input", fifo_input,
         r"(is not a file: .*replica_1.h5|replica_1.h5: is a FIFO)"),
    Case("dataset-dir-not-ours", "a dataset --out-dir that holds other files",
         out_dir_with_other_files,
         r"output directory .*mine holds files this stage did not write \(notes.txt\)"),
    Case("checkpoint-chunk-corrupt", "an unreadable chunk of a partial replica's checkpoint",
         partial_replica_with_bad_chunk,
         r"frames_00000000_00000010.npz: unreadable checkpoint chunk \(.*\); delete "
         r".*\.replica_0\.h5\.partial to start the replica afresh"),
    Case("seed-overflow", "simulate.seed beyond OpenMM's 32-bit seeds",
         simulate_with(simulate={"seed": 2**31}),
         r"simulate.seed.*2147483648.*2147483647"),
    Case("minimiser-fails", "energy minimisation on parameters that overflow (ε = 1e300)",
         simulate_with(system={"epsilon_kJ_mol": 1e300}),
         r"replica 0: energy minimisation failed at MD step 0: .*(NaN|infinite)"),
    Case("md-out-is-reference", "`md` with an `--out-dir` that is the `--reference-dir` (here "
         "through a symlink; `..` paths, the `--dataset-dir` and the `--model` directory are "
         "refused too)", md_out_is_reference,
         r"--out-dir .*md-new is the --reference-dir directory .*md-reference \(both are "
         r".*md-reference\): its files would be overwritten; choose another --out-dir"),
    Case("md-reference-other-system", "a reference MD of another system (another atom count; "
         "another box or other species are refused too)", md_reference_of_other_system,
         r"--reference-dir .*md-reference: its md.json is of 30 atoms, this run's system has "
         r"32$"),
]
