"""A model directory is untrusted input: every defect is refused by name, nothing hangs.

One real model (trained for one epoch on synthetic Lennard-Jones frames) is copied and broken
one way per case; `load_model` must raise ForcematchError naming the file, never a traceback
of another type, never block on a FIFO or read /dev/zero forever, never load parameters that
do not fit the model or hold NaN.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import flax.serialization
import numpy as np
import pytest
from test_train import CUTOFF, MODEL_CFG, lj_frames

from forcematch.errors import ForcematchError
from forcematch.io.model_files import read_json_object, read_regular_file
from forcematch.potential import load_model
from forcematch.training import train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(lj_frames(16, 0), lj_frames(8, 1), {"epochs": 1, "batch_size": 8, "val_frames": 8},
          MODEL_CFG, CUTOFF, out, progress=lambda _: None)
    return out / "model"


@pytest.fixture(autouse=True)
def _no_hang():
    """A read that blocks (a FIFO opened without O_NONBLOCK) fails the test instead."""
    def alarm(*_):
        raise TimeoutError("blocked reading a model file")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def edit_info(path: Path, **values) -> None:
    info = json.loads((path / "config.json").read_text())
    for key, value in values.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = value
    (path / "config.json").write_text(json.dumps(info))


def edit_state(path: Path, change) -> None:
    state = flax.serialization.msgpack_restore((path / "state.msgpack").read_bytes())
    change(state)
    (path / "state.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))


def kernel(state) -> dict:
    """The dict holding the first layer's kernel of the pair model's MLP."""
    node = state["params"]
    while "kernel" not in node:
        node = next(v for _, v in sorted(node.items()) if isinstance(v, dict))
    return node


def replace(path: Path, name: str, make) -> None:
    (path / name).unlink()
    make(path / name)


BREAKAGES = {
    "config-fifo": (lambda p: replace(p, "config.json", os.mkfifo),
                    r"config.json is a FIFO \(named pipe\), not a regular file"),
    "state-fifo": (lambda p: replace(p, "state.msgpack", os.mkfifo),
                   r"state.msgpack is a FIFO \(named pipe\), not a regular file"),
    "config-dev-zero": (lambda p: replace(p, "config.json", lambda q: q.symlink_to("/dev/zero")),
                        r"config.json is a character device, not a regular file"),
    "state-dev-zero": (lambda p: replace(p, "state.msgpack",
                                         lambda q: q.symlink_to("/dev/zero")),
                       r"state.msgpack is a character device"),
    "config-directory": (lambda p: replace(p, "config.json", Path.mkdir),
                         r"config.json is a directory, not a regular file|cannot read"),
    "state-huge": (lambda p: os.truncate(p / "state.msgpack", 2**26),
                   r"state.msgpack holds 67108864 bytes, more than the \d+ it can hold"),
    "config-dangling-link": (lambda p: replace(p, "config.json",
                                               lambda q: q.symlink_to(p / "nowhere")),
                             r"config.json not found"),
    "config-not-json": (lambda p: (p / "config.json").write_text("{model: pair"),
                        r"config.json: not valid JSON"),
    "config-nan": (lambda p: (p / "config.json").write_text('{"cutoff_nm": NaN}'),
                   r"config.json: not valid JSON: NaN is not a JSON number"),
    "config-list": (lambda p: (p / "config.json").write_text("[1, 2]"),
                    r"config.json: expected a JSON object \{...\}, got list"),
    "config-binary": (lambda p: (p / "config.json").write_bytes(b"\xff\xfe\x00"),
                      r"config.json: not valid JSON"),
    "format": (lambda p: edit_info(p, format="something-else"),
               r"config.json: not a forcematch model description \(format 'something-else'"),
    "cutoff-text": (lambda p: edit_info(p, cutoff_nm="0.55"),
                    r"'cutoff_nm' must be a positive number \(nm\), got '0.55'"),
    "cutoff-negative": (lambda p: edit_info(p, cutoff_nm=-1),
                        r"'cutoff_nm' must be a positive number"),
    "capacity-zero": (lambda p: edit_info(p, capacity=0),
                      r"'capacity' must be a positive integer or null, got 0"),
    "species-strings": (lambda p: edit_info(p, species=["Ar"] * 32),
                        r"'species' must be a list of non-negative integers"),
    "species-count": (lambda p: edit_info(p, species=[0] * 31),
                      r"'species' lists 31 atoms but 'n_atoms' is 32"),
    "species-names-count": (lambda p: edit_info(p, species_names=["Ar", "Kr"]),
                            r"'species_names' names 2 species but the model knows 1"),
    "species-names-repeated": (lambda p: edit_info(p, species_names=["Ar", "Ar"]),
                               r"'species_names' must be a list of distinct non-empty names"),
    "norm-missing-scale": (lambda p: edit_info(p, norm={"energy_shift_per_atom": 0.0}),
                           r"'norm' must be an object with numbers energy_scale"),
    "model-unknown": (lambda p: edit_info(p, model="mace"), r"config.json: .*unknown model 'mace'"),
    "model-option-unknown": (lambda p: edit_info(p, model_config={"hiden": [16]}),
                             r"config.json: .*hiden"),
    "model-option-wrong-type": (lambda p: edit_info(p, model_config={"hidden": "16"}),
                                r"config.json: .*hidden"),
    "train-option-wrong-type": (lambda p: edit_info(p, train_config={"epochs": "3"}),
                                r"config.json: .*train.epochs"),
    "state-garbage": (lambda p: (p / "state.msgpack").write_bytes(b"\xc1\xc1\xc1"),
                      r"state.msgpack: not a readable msgpack state"),
    "state-empty": (lambda p: (p / "state.msgpack").write_bytes(b""),
                    r"state.msgpack: not a readable msgpack state"),
    "state-no-params": (lambda p: edit_state(p, lambda s: s.pop("params")),
                        r"state.msgpack: no 'params' in the state"),
    "params-other-shape": (lambda p: edit_state(p, lambda s: kernel(s).update(
        kernel=kernel(s)["kernel"][:-1])),
        r"state.msgpack: the parameters do not match the model described in config.json: "
        r"\S+kernel has shape \(\d+, 16\) where \(\d+, 16\) is needed"),
    "params-missing": (lambda p: edit_state(p, lambda s: kernel(s).pop("bias")),
                       r"the parameters do not match .*: missing \S+bias"),
    "params-extra": (lambda p: edit_state(p, lambda s: kernel(s).update(extra=np.zeros(3))),
                     r"the parameters do not match .*: unexpected \S+extra"),
    "params-nan": (lambda p: edit_state(p, lambda s: kernel(s).update(
        kernel=np.where(np.arange(kernel(s)["kernel"].size).reshape(kernel(s)["kernel"].shape)
                        == 0, np.nan, kernel(s)["kernel"]))),
        r"state.msgpack: parameter \S+kernel holds NaN or infinite values"),
    "params-integers": (lambda p: edit_state(p, lambda s: kernel(s).update(
        kernel=kernel(s)["kernel"].astype(np.int32))),
        r"state.msgpack: parameter \S+kernel is not an array of floats"),
}
KEYS = ("format", "model", "model_config", "train_config", "cutoff_nm", "capacity", "n_atoms",
        "species", "stats", "norm")


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_a_broken_model_is_refused_by_name(model_dir, tmp_path, name):
    breakage, message = BREAKAGES[name]
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    breakage(copy)
    with pytest.raises(ForcematchError, match=message):
        load_model(copy)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_required(model_dir, tmp_path, key):
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    edit_info(copy, **{key: None})
    pattern = "not a forcematch model description" if key == "format" else f"missing key '{key}'"
    with pytest.raises(ForcematchError, match=pattern):
        load_model(copy)


def test_the_intact_model_loads_and_predicts(model_dir):
    model = load_model(model_dir)
    frames = lj_frames(2, 3)
    energies, forces = model.predict(frames.positions_nm, frames.box_nm)
    assert np.isfinite(energies).all() and forces.shape == (2, 32, 3)


def test_regular_file_reads(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
    assert read_regular_file(path, 8) == b'{"a": 1}'
    with pytest.raises(ForcematchError, match="holds 8 bytes, more than the 7"):
        read_regular_file(path, 7)
    with pytest.raises(ForcematchError, match="nope not found"):
        read_regular_file(tmp_path / "nope", 10)
