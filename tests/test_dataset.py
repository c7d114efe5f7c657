"""Dataset stage: checks against the config, split by replica, statistics."""

import dataclasses
import json

import numpy as np
import pytest

from forcematch.config import box_length_nm, validate_config
from forcematch.data.frames import Frames
from forcematch.dataset import build_dataset, split_replicas
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md, read_parameters, write_h5md
from forcematch.md.run import training_closest_pairs_nm

N_ATOMS = 32


@pytest.fixture
def config():
    return validate_config({
        "system": {"n_atoms": N_ATOMS, "cutoff_nm": 0.55, "switch_nm": 0.45},
        "simulate": {"replicas": 4, "frames_per_replica": 5},
        "split": {"val_replicas": 1, "test_replicas": 1},
        "train": {"batch_size": 2},
    })


def synthetic_replica(config, replica, n_frames=5, n_atoms=N_ATOMS):
    rng = np.random.default_rng(replica)
    box = box_length_nm(config)
    steps = np.arange(1, n_frames + 1, dtype=np.int64)
    forces = rng.normal(scale=100, size=(n_frames, n_atoms, 3))
    return Frames(
        positions_nm=rng.uniform(0, box, size=(n_frames, n_atoms, 3)),
        forces_kJ_mol_nm=forces - forces.mean(axis=1, keepdims=True),  # no net force
        potential_energy_kJ_mol=-5.6 * n_atoms + rng.normal(size=n_frames),
        box_nm=np.full((n_frames, 3), box),
        step=steps,
        time_ps=0.1 * steps,
        species=np.zeros(n_atoms, dtype=np.int32),
        masses_amu=np.full(n_atoms, 39.948),
    )


def write_replicas(tmp_path, config, overrides=None):
    overrides = overrides or {}
    paths = []
    for k in range(config["simulate"]["replicas"]):
        traj = overrides.get(k) or synthetic_replica(config, k)
        path = tmp_path / f"replica_{k}.h5"
        write_h5md(path, traj, {"replica": k})
        paths.append(path)
    return paths


def test_split_is_by_whole_replica():
    assert split_replicas(5, 1, 1) == {"train": [0, 1, 2], "val": [3], "test": [4]}
    with pytest.raises(ForcematchError, match="too few"):
        split_replicas(2, 1, 1)


def test_build_dataset_writes_splits_and_stats(tmp_path, config):
    paths = write_replicas(tmp_path, config)
    stats = build_dataset(config, paths, tmp_path / "dataset", progress=lambda _: None)
    train = read_h5md(tmp_path / "dataset" / "train.h5")
    assert train.n_frames == 10
    assert np.array_equal(train.positions_nm[5:], read_h5md(paths[1]).positions_nm)
    assert read_parameters(tmp_path / "dataset" / "test.h5")["replicas"] == [3]
    on_disk = json.loads((tmp_path / "dataset" / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    forces = train.forces_kJ_mol_nm
    assert on_disk["train"]["force_std_kJ_mol_nm"] == pytest.approx(forces.std())
    assert on_disk["train"]["energy_per_atom_mean_kJ_mol"] == pytest.approx(
        np.mean(train.potential_energy_kJ_mol) / N_ATOMS)
    # the closest pair of the split (one species: one pair), all minimum-image distances
    d = train.positions_nm[:, :, None, :] - train.positions_nm[:, None, :, :]
    d -= train.box_nm[:, None, None, :] * np.round(d / train.box_nm[:, None, None, :])
    r = np.sqrt(np.sum(d * d, axis=-1))[:, *np.triu_indices(N_ATOMS, k=1)]
    assert on_disk["train"]["closest_pair_nm"] == [pytest.approx(r.min(), rel=1e-12)]
    assert training_closest_pairs_nm(tmp_path / "dataset").tolist() == on_disk["train"][
        "closest_pair_nm"]


def test_atom_count_mismatch_names_the_file(tmp_path, config):
    paths = write_replicas(tmp_path, config, {2: synthetic_replica(config, 2, n_atoms=30)})
    with pytest.raises(ForcematchError, match=r"replica_2\.h5: holds 30 atoms but system\.n_atoms"):
        build_dataset(config, paths, tmp_path / "dataset", progress=lambda _: None)
    assert not (tmp_path / "dataset" / "train.h5").exists()


def test_wrong_box_names_file_and_frame(tmp_path, config):
    traj = synthetic_replica(config, 1)
    box = traj.box_nm.copy()
    box[3] *= 1.1
    bad = dataclasses.replace(traj, box_nm=box)
    paths = write_replicas(tmp_path, config, {1: bad})
    with pytest.raises(ForcematchError, match=r"replica_1\.h5: frame 3 has box"):
        build_dataset(config, paths, tmp_path / "dataset", progress=lambda _: None)


def test_wrong_number_of_replicas(tmp_path, config):
    paths = write_replicas(tmp_path, config)[:3]
    with pytest.raises(ForcematchError, match="got 3 replica files but simulate.replicas is 4"):
        build_dataset(config, paths, tmp_path / "dataset", progress=lambda _: None)


def test_a_failed_write_leaves_the_previous_dataset_whole(tmp_path, config, monkeypatch):
    """Splits are written into a new directory that replaces the old one only when complete:
    a failure after train.h5 leaves every old file as it was, and no temporaries."""
    import forcematch.dataset as dataset_module

    paths = write_replicas(tmp_path, config)
    out = tmp_path / "dataset"
    build_dataset(config, paths, out, progress=lambda _: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["stats.json", "test.h5", "train.h5", "val.h5"]
    other = {k: synthetic_replica(config, 10 + k) for k in range(4)}
    paths = write_replicas(tmp_path, config, other)
    real_write, calls = dataset_module.write_h5md, []

    def write_then_fail(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise ForcematchError(f"cannot write {path}: No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "write_h5md", write_then_fail)
    with pytest.raises(ForcematchError, match=r"^cannot write .*/dataset/val.h5: No space left "
                       r"on device; .*/dataset was left as it was$"):
        build_dataset(config, paths, out, progress=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    build_dataset(config, paths, out, progress=lambda _: None)
    assert np.array_equal(read_h5md(out / "train.h5").positions_nm[:5],
                          other[0].positions_nm)


def test_an_out_dir_holding_other_files_is_refused(tmp_path, config):
    paths = write_replicas(tmp_path, config)
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ForcematchError, match=r"holds files this stage did not write "
                       r"\(notes.txt\)"):
        build_dataset(config, paths, out, progress=lambda _: None)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_replicas_repeating_each_other_are_refused(tmp_path, config):
    """Training replicas 0 and 1 run with the same seed (both train): not independent."""
    paths = write_replicas(tmp_path, config, {1: synthetic_replica(config, 0)})
    with pytest.raises(ForcematchError, match=r"replica_1.h5 \(train\) frame 0 repeats "
                       r".*replica_0.h5 \(train\) frame 0: .*5 frames repeat frames of another "
                       r"replica of the train split"):
        build_dataset(config, paths, tmp_path / "dataset", progress=lambda _: None)
    assert not (tmp_path / "dataset").exists()
