"""Catalogue cases: training, models and the command line (docs/explanation/refusals.md).

Each case breaks one thing of the tiny run (its dataset, its trained model directory, the
command line, the output directory) and returns the argv of a real subcommand.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import flax.serialization
import h5py
import numpy as np
from catalogue import Case, config_with

# Lock files held open by `checkpoint_in_use` for the rest of the session (closing one would
# release its lock).
_HELD: list = []


def train_args(tiny, tmp, *extra, config=None):
    return ["train", "--config", config or tiny.config, "--dataset-dir", tiny.dataset,
            "--out-dir", tmp / "train", *extra]


def validate_model(tiny, tmp, model):
    return ["validate", "--config", tiny.config, "--dataset-dir", tiny.dataset, "--model",
            model, "--out-dir", tmp / "validate"]


def model_copy(tiny, tmp) -> Path:
    return Path(shutil.copytree(tiny.model, tmp / "model"))


def edit_model_config(tiny, tmp, **values):
    model = model_copy(tiny, tmp)
    info = json.loads((model / "config.json").read_text())
    for key, value in values.items():
        if value is None:
            del info[key]
        else:
            info[key] = value
    (model / "config.json").write_text(json.dumps(info))
    return validate_model(tiny, tmp, model)


def edit_params(tiny, tmp, change):
    """The model with `change(params)` applied to its parameters (a dict of arrays)."""
    model = model_copy(tiny, tmp)
    state = flax.serialization.msgpack_restore((model / "state.msgpack").read_bytes())
    change(state["params"])
    (model / "state.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))
    return validate_model(tiny, tmp, model)


def first_kernel(params) -> tuple[dict, str]:
    """(the dict holding the first 2-D parameter, its key)."""
    stack = [params]
    while stack:
        node = stack.pop(0)
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append(value)
            elif np.ndim(value) == 2:
                return node, key
    raise AssertionError("no 2-D parameter")


def drop_a_column(params):
    node, key = first_kernel(params)
    node[key] = node[key][:, :-1]


def poison(params):
    node, key = first_kernel(params)
    node[key] = np.full_like(node[key], np.nan)


def state_is_a_fifo(tiny, tmp):
    model = model_copy(tiny, tmp)
    (model / "state.msgpack").unlink()
    os.mkfifo(model / "state.msgpack")  # a plain read would wait for a writer forever
    return validate_model(tiny, tmp, model)


def config_is_dev_zero(tiny, tmp):
    model = model_copy(tiny, tmp)
    (model / "config.json").unlink()
    (model / "config.json").symlink_to("/dev/zero")  # a plain read would never end
    return validate_model(tiny, tmp, model)


def state_not_msgpack(tiny, tmp):
    model = model_copy(tiny, tmp)
    (model / "state.msgpack").write_bytes(b"\xc1 not msgpack")
    return validate_model(tiny, tmp, model)


def checkpoint_as_model(tiny, tmp):
    run = Path(shutil.copytree(tiny.model.parent, tmp / "train"))
    return validate_model(tiny, tmp, run / "checkpoint")


def checkpoint_in_use(tiny, tmp):
    """Another live trainer holds the run's checkpoint (here: this process, through another
    open file; `tests/test_train.py` has two real processes)."""
    ckpt = tmp / "train" / "checkpoint"
    ckpt.mkdir(parents=True)
    handle = open(ckpt / "lock", "w")  # noqa: SIM115 - held open, see _HELD
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write(f"{os.getpid()}@{socket.gethostname()}\n")
    handle.flush()
    _HELD.append(handle)
    return train_args(tiny, tmp)


def seed_too_large(tiny, tmp):
    return train_args(tiny, tmp, config=config_with(tmp, train={"seed": 2**64}))


def cutoff_without_neighbours(tiny, tmp):
    config = config_with(tmp, model={"graph_network": {"cutoff_nm": 0.25, "mlp_sizes": [8]}})
    return train_args(tiny, tmp, "--model", "graph_network", "--loss", "force", config=config)


def flipped_force_labels(tiny, tmp):
    dataset = tiny.copy_dataset(tmp)
    with h5py.File(dataset / "train.h5", "r+") as f:
        forces = f["particles/all/force/value"]
        forces[...] = -forces[...]
    return ["train", "--config", tiny.config, "--dataset-dir", dataset, "--out-dir",
            tmp / "train"]


def constant_test_forces(tiny, tmp):
    dataset = tiny.copy_dataset(tmp)
    with h5py.File(dataset / "test.h5", "r+") as f:
        forces = f["particles/all/force/value"]
        forces[...] = np.ones(forces.shape)
    return ["validate", "--config", tiny.config, "--dataset-dir", dataset, "--model", tiny.model,
            "--out-dir", tmp / "validate"]


def out_dir_not_ours(tiny, tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("not validation output")
    return ["validate", "--config", tiny.config, "--dataset-dir", tiny.dataset, "--out-dir",
            tmp / "mine"]


def figures_of(validate_dirs, train_dirs, tmp):
    return ["figures", "--validate-dirs", *validate_dirs, "--train-dirs", *train_dirs,
            "--out-dir", tmp / "figures"]


def figures_dir_missing(tiny, tmp):
    return figures_of([tmp / "validate" / "nope"], [tiny.model.parent], tmp)


def figures_dir_empty(tiny, tmp):
    (tmp / "validate" / "pair-joint-nall").mkdir(parents=True)
    return figures_of([tmp / "validate" / "pair-joint-nall"], [tiny.model.parent], tmp)


def md_args(tiny, tmp, *extra, config=None):
    return ["md", "--config", config or tiny.config, "--dataset-dir", tiny.dataset,
            "--model", tiny.model, "--out-dir", tmp / "md", *extra]


def reference_md(tiny, tmp) -> Path:
    """The reference's MD output for the tiny config (OpenMM, about a second)."""
    from forcematch.config import load_config
    from forcematch.md.run import run_reference_md

    run_reference_md(load_config(tiny.config), tiny.dataset, tmp / "md-reference")
    return tmp / "md-reference"


def md_reference_other_settings(tiny, tmp):
    reference = reference_md(tiny, tmp)
    return md_args(tiny, tmp, "--reference-dir", reference,
                   config=config_with(tmp, md={"nvt_ps": 2.0}))


def md_start_frame_past_end(tiny, tmp):
    reference = reference_md(tiny, tmp)
    return md_args(tiny, tmp, "--reference-dir", reference,
                   config=config_with(tmp, md={"start_frame": 999}))


def export_args(tiny, tmp, *extra):
    return ["export", "--model", tiny.model, "--dataset-dir", tiny.dataset, "--out-dir",
            tmp / "export", *extra]


CASES: list[Case] = [
    Case("n-train-not-a-number", "`--n-train` that is not a frame count",
         lambda tiny, tmp: train_args(tiny, tmp, "--n-train", "abc"),
         r"^forcematch train: error: argument --n-train: expected 'all' or a frame count >= 1, "
         r"got 'abc' \(see forcematch train --help\)$"),
    Case("n-train-zero", "`--n-train 0`", lambda tiny, tmp: train_args(tiny, tmp, "--n-train", 0),
         r"argument --n-train: expected 'all' or a frame count >= 1, got '0'"),
    Case("threads-negative", "`--threads` below 1",
         lambda tiny, tmp: train_args(tiny, tmp, "--threads", -2),
         r"argument --threads: expected an integer >= 1, got '-2'"),
    Case("replica-negative", "`--replica -1`",
         lambda tiny, tmp: ["simulate", "--config", tiny.config, "--replica", -1, "--out",
                            tmp / "r.h5"],
         r"argument --replica: expected an integer >= 0, got '-1'"),
    Case("seed-too-large", "a training seed JAX cannot hold", seed_too_large,
         r"train.seed = 18446744073709551616 is outside 0..4294967295: JAX's random keys hold "
         r"32 bits"),
    Case("cutoff-no-neighbours", "a model cutoff with no pair of atoms within it",
         cutoff_without_neighbours,
         r"refused before training: no pair of atoms lies within the model's cutoff of 0.25 nm "
         r"in \d+ frames \(the closest pair is [\d.]+ nm apart\): .* use a cutoff above"),
    Case("force-labels-flipped", "force labels of the wrong sign (+dE/dx)", flipped_force_labels,
         r"refused before training: energy change between adjacent frames against the work of "
         r"the force labels: correlation -[01]\.\d+, .*: the force labels have the wrong sign"),
    Case("checkpoint-in-use", "a second trainer on a checkpoint that a live one holds",
         checkpoint_in_use,
         r"train/checkpoint is in use by another training run: pid \d+ on host \S+ holds "
         r".*checkpoint/lock; two trainers on one checkpoint would interleave their steps"),
    Case("model-key-missing", "model `config.json` without a key it needs",
         lambda tiny, tmp: edit_model_config(tiny, tmp, cutoff_nm=None),
         r"model/config.json: missing key 'cutoff_nm' \(a positive number \(nm\)\)"),
    Case("model-key-wrong-type", "model `config.json` with a value of the wrong type",
         lambda tiny, tmp: edit_model_config(tiny, tmp, n_atoms="32"),
         r"model/config.json: 'n_atoms' must be a positive integer, got '32'"),
    Case("model-option-unknown", "model `config.json` with an option the model family lacks",
         lambda tiny, tmp: edit_model_config(tiny, tmp, model_config={"hiden": [8]}),
         r"model/config.json: .*hiden"),
    Case("model-params-wrong-shape", "parameters of another shape than the model's",
         lambda tiny, tmp: edit_params(tiny, tmp, drop_a_column),
         r"model/state.msgpack: the parameters do not match the model described in "
         r"config.json: \S+ has shape \(\d+, \d+\) where \(\d+, \d+\) is needed"),
    Case("model-params-nan", "parameters holding NaN",
         lambda tiny, tmp: edit_params(tiny, tmp, poison),
         r"model/state.msgpack: parameter \S+ holds NaN or infinite values"),
    Case("model-state-not-msgpack", "`state.msgpack` that is not msgpack", state_not_msgpack,
         r"model/state.msgpack: not a readable msgpack state"),
    Case("model-state-fifo", "`state.msgpack` that is a FIFO", state_is_a_fifo,
         r"model/state.msgpack is a FIFO \(named pipe\), not a regular file"),
    Case("model-config-device", "`config.json` that is `/dev/zero`", config_is_dev_zero,
         r"model/config.json is a character device, not a regular file"),
    Case("checkpoint-as-model", "a checkpoint directory validated as a model",
         checkpoint_as_model,
         r"checkpoint/config.json has no final_metrics.n_train_frames: not a finished model"),
    Case("test-forces-constant", "test frames whose reference forces are all equal",
         constant_test_forces,
         r"test.h5: the reference forces are all equal \(std 0 kJ/mol/nm\), so relative force "
         r"errors .* are undefined"),
    Case("out-dir-not-ours", "an output directory holding other files (replaced whole)",
         out_dir_not_ours,
         r"output directory .*mine holds files this stage did not write \(notes.txt\); it would "
         r"be replaced whole: choose a new or empty --out-dir"),
    Case("figures-dir-missing", "`figures` given a directory that does not exist",
         figures_dir_missing, r"--validate-dirs: directory not found: .*validate/nope"),
    Case("figures-dir-empty", "`figures` given an empty directory", figures_dir_empty,
         r"--validate-dirs: .*pair-joint-nall is empty: not the output of "
         r"forcematch validate \(run it first\)"),
    Case("md-no-reference", "`md` with a model but no `--reference-dir`",
         lambda tiny, tmp: md_args(tiny, tmp),
         r"MD with a model needs --reference-dir \(the reference's md output"),
    Case("md-reference-other-settings", "a reference MD made with other `md` settings",
         md_reference_other_settings,
         r"md-reference/md.json was made with other md settings: rerun the reference MD"),
    Case("md-start-frame-past-end", "`md.start_frame` past the test split's last frame",
         md_start_frame_past_end, r"md.start_frame 999 is past the last frame of .*test.h5 "
         r"\(40 frames\)"),
    Case("export-points-too-few", "`export --lammps-points` below 100 (a table of 1 point)",
         lambda tiny, tmp: export_args(tiny, tmp, "--lammps-points", 1),
         r"--lammps-points 1 is fewer than the 100 points a table needs \(.*\): choose "
         r"--lammps-points in 100..1000000$"),
    Case("export-points-too-many", "`export --lammps-points` above 1,000,000",
         lambda tiny, tmp: export_args(tiny, tmp, "--lammps-points", 10**7),
         r"--lammps-points 10000000 is more than the 1000000 points a table may hold \(memory "
         r"and time grow with them\): choose --lammps-points in 100..1000000$"),
    Case("export-grid-too-fine", "`export --dr-nm` giving over 1,000,000 points up to the cutoff",
         lambda tiny, tmp: export_args(tiny, tmp, "--dr-nm", 1e-8),
         r"--dr-nm 1e-08 gives 5.5e\+07 points up to the cutoff \(0.55 nm\), more than the "
         r"1000000 points a table may hold .*: choose --dr-nm in 5.5e-07..0.0055 nm$"),
    Case("export-grid-too-coarse", "`export --dr-nm` giving under 100 points up to the cutoff",
         lambda tiny, tmp: export_args(tiny, tmp, "--dr-nm", 0.01),
         r"--dr-nm 0.01 gives 55 points up to the cutoff \(0.55 nm\), fewer than the 100 "
         r"points a table needs .*: choose --dr-nm in 5.5e-07..0.0055 nm$"),
    Case("export-r-min-too-small", "`export --r-min-nm` below 0.05 nm",
         lambda tiny, tmp: export_args(tiny, tmp, "--r-min-nm", 1e-6),
         r"--r-min-nm 1e-06 is below 0.05 nm, closer than any two atoms come \(the shortest "
         r"bond, H-H, is 0.074 nm\): choose --r-min-nm in 0.05..0.495 nm, or omit it"),
    Case("export-r-min-too-large", "`export --r-min-nm` above 0.9 × the model's cutoff",
         lambda tiny, tmp: export_args(tiny, tmp, "--r-min-nm", 0.5),
         r"--r-min-nm 0.5 is above 0.9 x the cutoff \(0.55 nm\): the wall would replace the "
         r"model over most of its range; choose --r-min-nm in 0.05..0.495 nm, or omit it"),
]
