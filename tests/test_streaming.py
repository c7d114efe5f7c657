"""Training streamed from HDF5 equals training in memory; read errors reach the training thread.

Real data: the tiny config simulated with OpenMM (3 replicas of 40 frames of 32 atoms) and
split by `forcematch.dataset`. Streamed and in-memory training must give the same parameters
bit for bit (same batches, same float32 inputs, the dataset stage's statistics); the final
metrics over all validation frames are the same running sums in both modes.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import flax.serialization
import h5py
import jax
import numpy as np
import pytest

from forcematch import cli
from forcematch.data.pairs import closest_by_species_pair
from forcematch.data.sources import H5MDSource, as_source
from forcematch.data.stats import scan, statistics
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md
from forcematch.training import train
from forcematch.training.batches import Prefetcher

CFG = {"epochs": 3, "batch_size": 8, "val_frames": 16, "n_train": 32,
       "checkpoint_every_steps": 3}
MODEL_CFG = {"n_basis": 8, "hidden": [8, 8]}
RUN_KEYS = ("wall_s", "train_s", "frames_per_s", "provenance", "streamed")


@pytest.fixture(scope="module")
def dataset(tiny_data) -> Path:
    return tiny_data.dataset


@pytest.fixture(scope="module")
def stats(dataset) -> dict:
    """The training split's statistics, computed once by the dataset stage."""
    return json.loads((dataset / "stats.json").read_text())["train"]


def params_of(model_dir: Path):
    state = flax.serialization.msgpack_restore((model_dir / "state.msgpack").read_bytes())
    return jax.tree.leaves(state["params"])


def assert_same_params(a: Path, b: Path) -> None:
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_array_equal(x, y)


def rows_without_wall_time(run: Path) -> list[str]:
    return [row.rsplit(",", 1)[0] for row in (run / "metrics.csv").read_text().splitlines()]


def test_scan_equals_in_memory_fingerprint_and_stats_are_the_dataset_stages(dataset, stats):
    data = read_h5md(dataset / "train.h5")
    frames = np.array([1, 2, 3, 10, 17, 33, 39])
    with H5MDSource(dataset / "train.h5") as source:
        for src, ref in ((source, data), (source.subset(frames), data.select(frames))):
            assert scan(src, "training") == ref.fingerprint()
        np.testing.assert_array_equal(source.read(frames[::-1]).forces_kJ_mol_nm,
                                      data.forces_kJ_mol_nm[frames[::-1]])
    # computed once, by the dataset stage, from the same frames
    assert {k: v for k, v in stats.items()
            if k not in ("replicas", "closest_pair_nm")} == statistics(data)
    assert stats["closest_pair_nm"] == closest_by_species_pair(as_source(data))


def test_streamed_training_equals_in_memory(dataset, stats, tmp_path):
    """Same parameters and per-epoch metrics bit for bit; also across a kill and a resume in
    the other mode (the prefetch thread stops when training is interrupted)."""
    train_mem, val_mem = read_h5md(dataset / "train.h5"), read_h5md(dataset / "val.h5")
    lines = []
    final_mem = train(train_mem, val_mem, CFG, MODEL_CFG, 0.55, tmp_path / "memory",
                      stats=stats, progress=lines.append)
    assert "in memory" in lines[0]

    class Killed(Exception):
        pass

    def kill_after_epoch_1(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 1/"):
            raise Killed

    threads = threading.active_count()
    with H5MDSource(dataset / "train.h5") as tr, H5MDSource(dataset / "val.h5") as va:
        streamed_lines = []
        final_stream = train(tr, va, CFG, MODEL_CFG, 0.55, tmp_path / "streamed",
                             stats=stats, progress=streamed_lines.append)
        assert f"streamed from {dataset / 'train.h5'}" in streamed_lines[0]
        with pytest.raises(Killed):
            train(tr, va, CFG, MODEL_CFG, 0.55, tmp_path / "resumed",
                  stats=stats, progress=kill_after_epoch_1)
    assert threading.active_count() == threads  # no prefetch thread left behind
    lines.clear()
    final_resumed = train(train_mem, val_mem, CFG, MODEL_CFG, 0.55, tmp_path / "resumed",
                          stats=stats, progress=lines.append)
    assert lines[0].startswith("resuming") and "step 4/" in lines[0]

    for run, final in (("streamed", final_stream), ("resumed", final_resumed)):
        assert_same_params(tmp_path / "memory" / "model", tmp_path / run / "model")
        assert rows_without_wall_time(tmp_path / "memory") == rows_without_wall_time(
            tmp_path / run)
        assert final["n_train_frames"] == 32 and final["devices"] == 1
        for key, value in final_mem.items():
            if key.startswith("val_"):  # the same chunked running sums in both modes
                assert final[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
                assert final[key] == value, key
            elif key not in RUN_KEYS:
                assert final[key] == value, key
    assert final_stream["streamed"] and not final_mem["streamed"]


def test_cli_stream_from_hdf5_trains_the_same_model(tiny_data, dataset, tmp_path):
    config = tiny_data.config
    for extra, out in (([], "memory"), (["--stream-from-hdf5"], "streamed"),
                       (["--stream-from-hdf5", "1", "--devices", "0"], "streamed_1")):
        assert cli.main(["train", "--config", str(config), "--dataset-dir", str(dataset),
                         "--out-dir", str(tmp_path / out), *extra]) == 0
    assert_same_params(tmp_path / "memory" / "model", tmp_path / "streamed" / "model")
    assert_same_params(tmp_path / "memory" / "model", tmp_path / "streamed_1" / "model")
    final = json.loads((tmp_path / "streamed" / "final_metrics.json").read_text())
    assert final["streamed"] is True


def corrupt_copy(src: Path, dst: Path, frame: int) -> Path:
    """`src` with positions stored gzip-compressed, one frame per chunk, and the bytes of the
    chunk of `frame` overwritten: a file that opens but fails to decompress that frame."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        grp = f["particles/all/position"]
        value = grp["value"][()]
        unit = grp["value"].attrs["unit"]
        del grp["value"]
        ds = grp.create_dataset("value", data=value, chunks=(1, *value.shape[1:]),
                                compression="gzip")
        ds.attrs["unit"] = unit
        info = ds.id.get_chunk_info_by_coord((frame, 0, 0))
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    return dst


def test_read_error_in_the_prefetch_thread_names_the_file(dataset, stats, tmp_path):
    bad = corrupt_copy(dataset / "train.h5", tmp_path / "corrupt.h5", frame=21)
    threads = threading.active_count()
    with H5MDSource(bad) as source:
        batches = [np.array([3, 1]), np.array([5, 7]), np.array([30, 21]), np.array([0, 2])]
        prefetch = Prefetcher(source.read, batches, depth=2)
        assert prefetch.__next__().positions_nm.shape == (2, 32, 3)
        next(prefetch)
        with pytest.raises(ForcematchError, match=r"corrupt\.h5: HDF5 read error in "
                                                  r"/particles/all/position/value at frames "
                                                  r"21\.\.30"):
            next(prefetch)
        with pytest.raises(StopIteration):  # finished: the thread is gone
            next(prefetch)
    assert threading.active_count() == threads
    # In training the first chunked read meets it, before any step.
    with H5MDSource(bad) as tr, H5MDSource(dataset / "val.h5") as va:
        with pytest.raises(ForcematchError, match=r"corrupt\.h5: HDF5 read error"):
            train(tr, va, dict(CFG, n_train=None), MODEL_CFG, 0.55, tmp_path / "run",
                  stats=stats, progress=lambda _: None)


def test_prefetcher_order_errors_and_early_close():
    with Prefetcher(lambda x: x * x, range(100), depth=3) as prefetch:
        assert list(prefetch) == [x * x for x in range(100)]

    def load(x):
        if x == 5:
            raise ValueError("bad item 5")
        return x

    prefetch = Prefetcher(load, range(10), depth=2)
    assert [next(prefetch) for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match="bad item 5"):
        next(prefetch)
    prefetch = Prefetcher(lambda x: x, iter(range(10**9)), depth=2)  # stopped early
    next(prefetch)
    prefetch.close()
    assert not prefetch._thread.is_alive()
