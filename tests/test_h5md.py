"""H5MD writer/reader: round trip, layout, MDAnalysis interoperability and error messages."""

import json

import h5py
import numpy as np
import pytest

from forcematch import __version__
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io.h5md import n_frames, read_h5md, read_parameters, write_h5md

T, N = 6, 5
PARAMS = {
    "config": {"system": {"n_atoms": N, "cutoff_nm": 0.8}, "list": [1, 2.5, "x", None, True]},
    "replica": 3,
    "openmm_version": "8.6.1",
}


def make_traj(velocities: bool = True, seed: int = 0) -> Frames:
    rng = np.random.default_rng(seed)
    step = 100 + 20 * np.arange(T)
    return Frames(
        positions_nm=rng.uniform(0, 2.0, (T, N, 3)),
        forces_kJ_mol_nm=rng.normal(0, 50, (T, N, 3)),
        potential_energy_kJ_mol=rng.normal(-500, 5, T),
        box_nm=np.tile([2.0, 2.1, 2.2], (T, 1)),
        step=step,
        time_ps=step * 0.005,
        species=np.arange(N) % 2,
        masses_amu=np.full(N, 39.948),
        velocities_nm_ps=rng.normal(0, 0.2, (T, N, 3)) if velocities else None,
    )


def assert_traj_equal(a: Frames, b: Frames) -> None:
    for name in [
        "positions_nm",
        "forces_kJ_mol_nm",
        "potential_energy_kJ_mol",
        "box_nm",
        "step",
        "time_ps",
        "species",
        "velocities_nm_ps",
    ]:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert np.array_equal(a.masses_amu, b.masses_amu, equal_nan=True)


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "traj.h5"
    traj = make_traj()
    write_h5md(path, traj, PARAMS)
    return path, traj


def test_round_trip_and_parameters(written):
    path, traj = written
    back = read_h5md(path)
    assert_traj_equal(back, traj)
    assert back.positions_nm.dtype == np.float64 and back.species.dtype == np.int32
    assert back.n_frames == T and back.n_atoms == N
    assert read_parameters(path) == json.loads(json.dumps(PARAMS))
    assert n_frames(path) == T
    assert [p.name for p in path.parent.iterdir()] == ["traj.h5"]  # no *.tmp* leftovers


def test_round_trip_without_velocities_and_nested_dir(tmp_path):
    path = tmp_path / "a" / "b" / "traj.h5"
    traj = make_traj(velocities=False)
    write_h5md(path, traj, {})
    back = read_h5md(path)
    assert back.velocities_nm_ps is None
    assert_traj_equal(back, traj)
    assert read_parameters(path) == {}


def test_layout(written):
    path, _ = written
    with h5py.File(path, "r") as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/author"].attrs["name"] == "forcematch"
        assert f["h5md/creator"].attrs["name"] == "forcematch"
        assert f["h5md/creator"].attrs["version"] == __version__
        part = f["particles/all"]
        assert part["position/value"].attrs["unit"] == "nm"
        assert part["position/time"].attrs["unit"] == "ps"
        assert part["force/value"].attrs["unit"] == "kJ mol-1 nm-1"
        assert part["velocity/value"].attrs["unit"] == "nm ps-1"
        assert part["position/value"].chunks == (1, N, 3)
        assert part["position/value"].dtype == np.float64
        assert part["position/step"].dtype == np.int64
        for grp in ["force", "velocity", "box/edges"]:  # hard links, not copies
            assert part[f"{grp}/step"] == part["position/step"]
            assert part[f"{grp}/time"] == part["position/time"]
        box = part["box"]
        assert box.attrs["dimension"] == 3
        assert box.attrs["boundary"].dtype == np.dtype("S8")
        assert list(box.attrs["boundary"]) == [b"periodic"] * 3
        assert box["edges/value"].shape == (T, 3) and box["edges/value"].attrs["unit"] == "nm"
        assert part["species"].dtype == np.int32 and part["species"].shape == (N,)
        assert part["mass"].attrs["unit"] == "u"
        energy = f["observables/potential_energy/value"]
        assert energy.shape == (T,) and energy.attrs["unit"] == "kJ mol-1"
        assert json.loads(f["parameters"].attrs["json"]) == json.loads(json.dumps(PARAMS))


def test_frame_subsets(written):
    path, traj = written
    assert_traj_equal(read_h5md(path, slice(1, 4)), traj.select(slice(1, 4)))
    assert_traj_equal(read_h5md(path, slice(None, None, 2)), traj.select(slice(None, None, 2)))
    idx = np.array([0, 2, 3, 5])
    assert_traj_equal(read_h5md(path, idx), traj.select(idx))
    unsorted = np.array([4, 1, 1, -1])
    assert_traj_equal(read_h5md(path, unsorted), traj.select(unsorted))
    assert read_h5md(path, np.array([], dtype=int)).n_frames == 0
    with pytest.raises(ForcematchError, match="frame 6 out of range"):
        read_h5md(path, [0, 6])


def test_select_and_concatenate():
    a, b = make_traj(seed=1), make_traj(seed=2)
    both = Frames.concatenate([a, b])
    assert both.n_frames == 2 * T
    assert_traj_equal(both.select(np.arange(T, 2 * T)), b)
    other = Frames(**{**a.__dict__, "species": np.zeros(N)})
    with pytest.raises(ForcematchError, match="species"):
        Frames.concatenate([a, other])
    with pytest.raises(ForcematchError, match="velocities"):
        Frames.concatenate([a, make_traj(velocities=False)])
    with pytest.raises(ForcematchError, match="forces_kJ_mol_nm"):
        Frames(**{**a.__dict__, "forces_kJ_mol_nm": np.zeros((T, N + 1, 3))})


def test_mdanalysis_reads_with_units(written):
    mda = pytest.importorskip("MDAnalysis")
    path, traj = written
    u = mda.Universe.empty(N, trajectory=True)
    u.load_new(str(path), format="H5MD")  # convert_units=True is the default
    assert u.trajectory.n_frames == T
    assert u.trajectory.units["length"] == "nm" and u.trajectory.units["force"] == "kJ/(mol*nm)"
    for i in [0, 4]:
        ts = u.trajectory[i]
        np.testing.assert_allclose(ts.positions, 10 * traj.positions_nm[i], rtol=1e-6)  # Å
        np.testing.assert_allclose(ts.forces, traj.forces_kJ_mol_nm[i] / 10, rtol=1e-6)
        np.testing.assert_allclose(ts.velocities, 10 * traj.velocities_nm_ps[i], rtol=1e-6)
        np.testing.assert_allclose(ts.dimensions[:3], 10 * traj.box_nm[i], rtol=1e-6)
        np.testing.assert_allclose(ts.dimensions[3:], 90.0)
        assert ts.time == pytest.approx(traj.time_ps[i])
        assert ts.data["potential_energy"] == pytest.approx(traj.potential_energy_kJ_mol[i])


def test_reads_file_from_another_tool(tmp_path):
    """Fixed [3] box edges, scalar H5MD step/time, no species/mass, another particle group."""
    path = tmp_path / "other.h5"
    rng = np.random.default_rng(3)
    pos, frc = rng.uniform(0, 3, (4, N, 3)), rng.normal(size=(4, N, 3))
    with h5py.File(path, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        part = f.create_group("particles/argon")
        for name, value, unit in [("position", pos, "nm"), ("force", frc, "kJ mol-1 nm-1")]:
            g = part.create_group(name)
            g["value"] = value.astype(np.float32)
            g["value"].attrs["unit"] = unit
            g["step"] = 10
            g["step"].attrs["offset"] = 5
            g["time"] = 0.5
            g["time"].attrs["unit"] = "ps"
        part.create_group("box").attrs["dimension"] = 3
        part["box/edges"] = [3.0, 3.0, 3.5]
        part["box/edges"].attrs["unit"] = "nm"
        e = f.create_group("observables/potential_energy")
        e["value"] = np.arange(4.0)
        e["value"].attrs["unit"] = "kJ mol-1"
    traj = read_h5md(path)
    assert traj.box_nm.shape == (4, 3) and np.all(traj.box_nm == [3.0, 3.0, 3.5])
    assert np.array_equal(traj.step, [5, 15, 25, 35])
    assert np.allclose(traj.time_ps, [0, 0.5, 1.0, 1.5])
    assert np.array_equal(traj.species, np.zeros(N)) and np.all(np.isnan(traj.masses_amu))
    assert np.array_equal(traj.positions_nm, pos.astype(np.float32).astype(np.float64))
    assert np.array_equal(read_h5md(path, [1, 3]).step, [15, 35])
    assert read_parameters(path) == {}


# ----------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    for fn in (read_h5md, read_parameters, n_frames):
        with pytest.raises(ForcematchError, match="nope.h5: file not found"):
            fn(path)


@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_truncated_file(written, fraction):
    path, _ = written
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ForcematchError, match="traj.h5.*(corrupt|truncated)"):
        read_h5md(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5\n")
    with pytest.raises(ForcematchError, match="text.h5: not a readable HDF5 file"):
        read_h5md(path)


def test_hdf5_without_h5md(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ForcematchError, match=r"plain.h5: not an H5MD file \(no /h5md group\)"):
        read_h5md(path)


def test_missing_dataset(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        del f["particles/all/force/value"]
    with pytest.raises(ForcematchError, match="traj.h5: missing .*/particles/all/force/value"):
        read_h5md(path)


def test_missing_unit(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        del f["particles/all/position/value"].attrs["unit"]
    with pytest.raises(ForcematchError, match="traj.h5: .*position/value has no 'unit'.*'nm'"):
        read_h5md(path)


def test_wrong_unit(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        f["particles/all/force/value"].attrs["unit"] = "kJ mol-1 Angstrom-1"
    msg = r"traj.h5: .*force/value has unit 'kJ mol-1 Angstrom-1', expected 'kJ mol-1 nm-1'"
    with pytest.raises(ForcematchError, match=msg):
        read_h5md(path)


def test_shape_mismatch(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        del f["observables/potential_energy/value"]
        f["observables/potential_energy/value"] = np.zeros(T - 1)
        f["observables/potential_energy/value"].attrs["unit"] = "kJ mol-1"
    with pytest.raises(ForcematchError, match="traj.h5: .*potential_energy/value has shape"):
        read_h5md(path)


def test_nan_force_names_frame(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        f["particles/all/force/value"][3, 2, 1] = np.nan
    with pytest.raises(ForcematchError, match="traj.h5: non-finite force at frame 3"):
        read_h5md(path)
    assert read_h5md(path, slice(0, 3)).n_frames == 3  # frames before the bad one still read


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.h5"
    bad = {"ok": 1, "not_json": {1, 2}}  # a set: fails after the arrays are written
    with pytest.raises(ForcematchError, match="out.h5: parameters are not JSON-serializable"):
        write_h5md(path, make_traj(), bad)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- layout variants and API


def test_low_level_readers_stay_importable_from_h5md():
    """`forcematch.data.sources` uses these through `forcematch.io.h5md`."""
    from forcematch.io import h5md, h5md_readers

    for name in ("open_checked", "particle_group", "read_box", "FrameSelection", "frame_runs",
                 "PARTICLE_GROUP"):
        assert getattr(h5md, name) is getattr(h5md_readers, name), name
    assert h5md.PARTICLE_GROUP == "all"


def test_time_dependent_species_and_mass_groups_and_diagonal_box(written):
    """species/mass as H5MD time-dependent groups (first row read) and [T, 3, 3] box edges."""
    path, traj = written
    with h5py.File(path, "r+") as f:
        part = f["particles/all"]
        del part["species"], part["mass"], part["box/edges/value"]
        part["species/value"] = np.tile(np.arange(N, dtype=np.int32)[::-1], (T, 1))
        part["mass/value"] = np.tile(np.linspace(1.0, 2.0, N), (T, 1))
        part["mass/value"].attrs["unit"] = "u"
        part["box/edges/value"] = np.stack([np.diag(b) for b in traj.box_nm])
        part["box/edges/value"].attrs["unit"] = "nm"
    got = read_h5md(path, [4, 1])
    assert np.array_equal(got.species, np.arange(N)[::-1]) and got.species.dtype == np.int32
    assert np.array_equal(got.masses_amu, np.linspace(1.0, 2.0, N))
    assert np.array_equal(got.box_nm, traj.box_nm[[4, 1]])


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda part: part["box/edges/value"].__setitem__((2, 0, 1), 0.3),
         "traj.h5: /particles/all/box/edges/value is a triclinic box; only orthorhombic"),
        (lambda part: part["box"].attrs.__setitem__("dimension", 2),
         "traj.h5: /particles/all/box has dimension != 3"),
        (lambda part: part["mass/value"].attrs.__delitem__("unit"),
         r"traj.h5: /particles/all/mass/value has no 'unit' attribute \(expected unit 'u'\)"),
        (lambda part: part["velocity/value"].__setitem__((5, 0, 2), np.inf),
         "traj.h5: non-finite velocity at frame 5"),
    ],
)
def test_layout_variant_errors(written, edit, msg):
    path, traj = written
    with h5py.File(path, "r+") as f:
        part = f["particles/all"]
        del part["mass"], part["box/edges/value"]
        part["mass/value"] = np.tile(traj.masses_amu, (T, 1))
        part["mass/value"].attrs["unit"] = "u"
        part["box/edges/value"] = np.stack([np.diag(b) for b in traj.box_nm])
        part["box/edges/value"].attrs["unit"] = "nm"
        edit(part)
    with pytest.raises(ForcematchError, match=msg):
        read_h5md(path)


def test_velocity_shape_mismatch(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        del f["particles/all/velocity/value"]
        f["particles/all/velocity/value"] = np.zeros((T - 1, N, 3))
        f["particles/all/velocity/value"].attrs["unit"] = "nm ps-1"
    msg = (r"traj.h5: /particles/all/velocity/value has shape \(5, 5, 3\), "
           r"expected \(6, 5, 3\) to match position")
    with pytest.raises(ForcematchError, match=msg):
        read_h5md(path)


def test_nan_box_names_frame(written):
    path, _ = written
    with h5py.File(path, "r+") as f:
        f["particles/all/box/edges/value"][1, 2] = np.nan
    with pytest.raises(ForcematchError, match="traj.h5: non-finite box/edges at frame 1"):
        read_h5md(path)


# ------------------------------------------- storage types, declared sizes, non-regular files


@pytest.mark.parametrize("item, dtype", [
    ("particles/all/position/value", np.float16),
    ("particles/all/force/value", np.float16),
    ("particles/all/velocity/value", np.float16),
    ("observables/potential_energy/value", np.float16),
    ("particles/all/box/edges/value", np.float16),
    ("particles/all/position/value", np.int32),
    ("observables/potential_energy/value", np.int64),
])
def test_storage_types_other_than_float32_and_float64_are_refused(written, item, dtype):
    path, _ = written
    with h5py.File(path, "r+") as f:
        values, unit = f[item][()], f[item].attrs["unit"]
        del f[item]
        f.create_dataset(item, data=values, dtype=dtype)
        f[item].attrs["unit"] = unit
    kind = np.dtype(dtype).name
    with pytest.raises(ForcematchError, match=f"traj.h5: /{item} is stored as {kind}.*; "
                       "forcematch reads float64 or float32 only"):
        read_h5md(path)


def test_integer_box_edges_are_read(written):
    path, traj = written
    with h5py.File(path, "r+") as f:
        del f["particles/all/box/edges/value"]
        f["particles/all/box/edges/value"] = np.full((T, 3), 2, dtype=np.int32)
        f["particles/all/box/edges/value"].attrs["unit"] = "nm"
    assert np.array_equal(read_h5md(path).box_nm, np.full((T, 3), 2.0))


def huge_file(path, t=10**9, n=N):
    """An H5MD file whose headers declare t frames (nothing written: HDF5 allocates lazily)."""
    with h5py.File(path, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
        part = f.create_group("particles/all")
        for group, shape, unit in (("position", (t, n, 3), "nm"),
                                   ("force", (t, n, 3), "kJ mol-1 nm-1"),
                                   ("box/edges", (t, 3), "nm")):
            g = part.create_group(group)
            chunks = (1, *(min(s, 4096) for s in shape[1:]))
            g.create_dataset("value", shape=shape, dtype="f8", chunks=chunks)
            g["value"].attrs["unit"] = unit
            g.create_dataset("step", shape=(t,), dtype="i8", chunks=(min(t, 4096),))
            g.create_dataset("time", shape=(t,), dtype="f8", chunks=(min(t, 4096),))
            g["time"].attrs["unit"] = "ps"
        e = f.create_group("observables/potential_energy")
        e.create_dataset("value", shape=(t,), dtype="f8", chunks=(min(t, 4096),))
        e["value"].attrs["unit"] = "kJ mol-1"
    return path


def test_declared_sizes_beyond_the_bound_are_refused_before_reading(tmp_path, monkeypatch):
    from forcematch.data.sources import H5MDSource

    path = huge_file(tmp_path / "huge.h5")
    assert path.stat().st_size < 1_000_000 and n_frames(path) == 10**9
    msg = (r"huge.h5: reading /particles/all/position/value \(1000000000 x 5 x 3 values\) and "
           r"2 more arrays would take 231 GiB as float64, more than the 8 GiB bound on one "
           r"read \(FORCEMATCH_MAX_READ_GIB\)")
    with pytest.raises(ForcematchError, match=msg):
        read_h5md(path)
    assert read_h5md(path, slice(0, 2)).n_frames == 2  # a few frames of it are fine
    with pytest.raises(ForcematchError, match=r"huge.h5: reading .*box/edges/value "
                       r"\(1000000000 x 3 values\) and 1 more arrays would take 29.8 GiB"):
        H5MDSource(path)
    wide = huge_file(tmp_path / "wide.h5", t=2, n=10**9)  # one frame of 1e9 atoms
    with pytest.raises(ForcematchError, match=r"wide.h5: reading .*position/value "
                       r"\(1 x 1000000000 x 3 values\)"):
        H5MDSource(wide)
    monkeypatch.setenv("FORCEMATCH_MAX_READ_GIB", "1e-6")  # ~1 KiB: the small file is refused
    write_h5md(tmp_path / "traj.h5", make_traj(), {})
    with pytest.raises(ForcematchError, match=r"traj.h5: .* more than the 1e-06 GiB bound"):
        read_h5md(tmp_path / "traj.h5")
    monkeypatch.setenv("FORCEMATCH_MAX_READ_GIB", "lots")
    with pytest.raises(ForcematchError, match="FORCEMATCH_MAX_READ_GIB='lots' must be a "
                       "positive number"):
        read_h5md(tmp_path / "traj.h5")


def test_non_regular_files_are_refused_without_opening(tmp_path):
    """A FIFO would block h5py's open for ever: it is refused from its file type."""
    import os
    import threading

    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    (tmp_path / "dir.h5").mkdir()
    cases = [(fifo, "a FIFO \\(named pipe\\)"), (tmp_path / "dir.h5", "a directory"),
             ("/dev/zero", "a character device")]
    errors: list[str] = []

    def read_all():
        for path, _ in cases:
            for fn in (read_h5md, read_parameters, n_frames):
                try:
                    fn(path)
                except ForcematchError as exc:
                    errors.append(str(exc))

    worker = threading.Thread(target=read_all, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "a read blocked"
    assert len(errors) == 9
    for i, (path, kind) in enumerate(cases):
        for err in errors[3 * i : 3 * i + 3]:
            assert re_match(f"{path}: is {kind}, not a regular file; forcematch reads H5MD "
                            "files only", err), err


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.fullmatch(pattern, text) is not None


def test_write_errors_of_hdf5_are_one_line(tmp_path, monkeypatch):
    """HDF5 reports a full disk as an OSError without errno; it reaches the user as one line
    naming the file, and no temporary is left."""

    def full(*args, **kwargs):
        raise OSError("Can't write data (file write failed: time = Thu Nov 30,\n"
                      "errno = 28, error message = 'No space left on device')")

    monkeypatch.setattr(h5py.File, "create_group", full)
    with pytest.raises(ForcematchError, match=r"cannot write .*out.h5: Can't write data .* "
                       r"errno = 28, error message = 'No space left on device'\)$") as info:
        write_h5md(tmp_path / "out.h5", make_traj(), {})
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
