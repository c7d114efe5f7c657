"""Data the file format cannot refuse: labels that are not forces of the positions, rounded
positions, coordinates far from the box, and frames repeated within or across replicas
(forcematch.data.checks, forcematch.data.repeats), on synthetic frames and the tiny run's real
replicas."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from forcematch.config import load_config
from forcematch.data.checks import (
    LABEL_ERROR_LIMIT_PERCENT,
    NET_FORCE_LIMIT,
    check_labels,
    check_resolution,
    label_error_percent,
    position_rounding,
    wrap_into_box,
)
from forcematch.data.frames import Frames
from forcematch.data.repeats import (
    SAME_FRAME_RMS_NM,
    check_repeated_forces,
    check_repeats,
    find_repeats,
    rms_difference,
)
from forcematch.dataset import build_dataset
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md, write_h5md
from forcematch.reference import energy_and_forces, lj_system_from_config


@pytest.fixture(scope="module")
def real(tiny_data):
    """The tiny run's three real replicas (40 frames of 32 atoms each) and its config."""
    return [read_h5md(p) for p in tiny_data.replicas], load_config(tiny_data.config)


def with_positions(frames: Frames, positions) -> Frames:
    return dataclasses.replace(frames, positions_nm=positions)


# ------------------------------------------------------------------------------ labels


def test_real_replicas_pass_every_check(real):
    replicas, _ = real
    for k, frames in enumerate(replicas):
        check_labels(frames, f"replica_{k}")
        check_resolution(frames, f"replica_{k}")
        assert wrap_into_box(frames, "r")[0] is frames  # inside the box already: untouched
    check_repeats(replicas, ["a", "b", "c"], ["train", "val", "test"])
    check_repeated_forces(replicas, ["a", "b", "c"])


def test_net_force_threshold_is_far_above_openmm_round_off_and_below_a_thermostat(real):
    replicas, _ = real
    frames = replicas[0]
    f = frames.forces_kJ_mol_nm
    scale = np.sqrt(frames.n_atoms) * np.sqrt(np.mean(f**2))
    ratio = np.linalg.norm(f.sum(axis=1), axis=1).max() / scale
    assert ratio < NET_FORCE_LIMIT / 100  # OpenMM's CPU platform: round-off, ~1e-6
    noisy = dataclasses.replace(frames, forces_kJ_mol_nm=f + np.random.default_rng(1).normal(
        scale=1.0, size=f.shape))  # a thermostat's random force of 1 kJ/mol/nm per component
    with pytest.raises(ForcematchError, match=r"r.h5: net force .* in frame 0 \(40 of 40"):
        check_labels(noisy, "r.h5")
    one_frame = f.copy()
    one_frame[9, :, 0] += 0.5  # an external field on one frame
    with pytest.raises(ForcematchError, match=r"in frame 9 \(1 of 40 frames above"):
        check_labels(dataclasses.replace(frames, forces_kJ_mol_nm=one_frame), "r.h5")


def test_zero_forces_and_constant_energy(real):
    frames = real[0][1]
    zero = frames.forces_kJ_mol_nm.copy()
    zero[[4, 8]] = 0.0
    with pytest.raises(ForcematchError, match=r"forces of frame 4 are all zero \(2 of 40"):
        check_labels(dataclasses.replace(frames, forces_kJ_mol_nm=zero), "r")
    flat = np.zeros(frames.n_frames)
    with pytest.raises(ForcematchError, match="potential energy is 0.0 kJ/mol in all 40"):
        check_labels(dataclasses.replace(frames, potential_energy_kJ_mol=flat), "r")


# -------------------------------------------------------------------------- resolution


def test_position_rounding_is_recognised():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1.7, (5, 32, 3))
    assert position_rounding(x) is None
    what, largest, rms = position_rounding(x.astype(np.float32))
    assert what == "float32 values" and largest == pytest.approx(5.96e-8, rel=0.01)
    what, largest, rms = position_rounding(x.astype(np.float16).astype(np.float64))
    assert what == "float16 values" and largest == pytest.approx(4.88e-4, rel=0.01)
    for decimals in (1, 2, 3, 4):
        rounded = np.round(x, decimals)
        grid = 10.0**-decimals
        assert position_rounding(rounded) == (f"multiples of {grid:g} nm",
                                              pytest.approx(grid / 2),
                                              pytest.approx(grid / np.sqrt(12)))
        # the same decimals read through float32 (a text file converted by another tool)
        assert position_rounding(rounded.astype(np.float32))[0] == f"multiples of {grid:g} nm"
    far = (x + 2000 * 1.7).astype(np.float32)  # float32 cannot hold 1e-4 nm out there
    assert position_rounding(far)[:2] == ("float32 values", pytest.approx(1.22e-4, rel=0.01))


def test_resolution_limit_and_what_is_accepted(real):
    frames = real[0][0]
    x = frames.positions_nm
    check_resolution(with_positions(frames, x.astype(np.float32)), "r")  # full float32
    check_resolution(with_positions(frames, x + 100 * frames.box_nm[:, None, :]), "r")
    with pytest.raises(ForcematchError, match=r"r: positions hold only multiples of 0.0001 nm: "
                       r"rounded by up to 5e-05 nm \(RMS 2.9e-05 nm\), which moves the force "
                       r"labels off them by about 0.25 % of the force std \(limit 0.1 %"):
        check_resolution(with_positions(frames, np.round(x, 4)), "r")


@pytest.mark.parametrize("rounding", ["float16", "float32 far", 1e-3, 2e-4, 1e-4, 2e-5])
def test_label_error_estimate_matches_openmm(real, rounding):
    """The percentage the message quotes, against the forces OpenMM computes at the rounded
    positions: within 15 %, and the limit on the right side of the measurement."""
    replicas, config = real
    frames = replicas[0]
    x, box = frames.positions_nm, frames.box_nm[:, None, :]
    if rounding == "float16":
        rounded = x.astype(np.float16).astype(np.float64)
    elif rounding == "float32 far":
        far = (x + 2000 * box).astype(np.float32).astype(np.float64)
        rounded = far - 2000 * box
    else:
        rounded = np.round(x / rounding) * rounding
    found = position_rounding(far if rounding == "float32 far" else rounded)
    rms = found[2] if found else rounding / np.sqrt(12)  # 2e-4, 2e-5: grids not looked for
    lj = lj_system_from_config(config)
    _, exact = energy_and_forces(lj, x, frames.box_nm)
    _, moved = energy_and_forces(lj, rounded, frames.box_nm)
    measured = 100 * np.sqrt(np.mean((moved - exact) ** 2)) / exact.std()
    assert label_error_percent(rms) == pytest.approx(measured, rel=0.15)
    assert (label_error_percent(rms) > LABEL_ERROR_LIMIT_PERCENT) == (measured > 0.1)


# ------------------------------------------------------------------------------- wrapping


def test_far_coordinates_are_wrapped_and_the_physics_is_unchanged(real):
    replicas, config = real
    frames = replicas[0]
    box = frames.box_nm[:, None, :]
    shifts = np.random.default_rng(2).integers(-3000, 3000, size=frames.positions_nm.shape)
    far = with_positions(frames, frames.positions_nm + shifts * box)
    wrapped, note = wrap_into_box(far, "r.h5")
    assert note.startswith("r.h5: wrapped 3840 coordinates in 40 frames (first frame 0), up to ")
    assert int(note.split("up to ")[1].split()[0]) == np.abs(shifts).max()
    np.testing.assert_allclose(wrapped.positions_nm, frames.positions_nm, atol=1e-9)
    assert np.all((wrapped.positions_nm >= 0) & (wrapped.positions_nm < box))
    lj = lj_system_from_config(config)
    e0, f0 = energy_and_forces(lj, frames.positions_nm[:3], frames.box_nm[:3])
    e1, f1 = energy_and_forces(lj, wrapped.positions_nm[:3], frames.box_nm[:3])
    np.testing.assert_allclose(e1, e0, rtol=1e-9)
    np.testing.assert_allclose(f1, f0, atol=1e-6)


def test_wrapping_edge_values():
    x = np.array([[[-1e-17, 0.0, 1.0], [2.0, -2.0, 4.0 - 1e-16]]])
    frames = Frames(x, np.zeros_like(x), np.zeros(1), np.full(3, 2.0))
    wrapped, note = wrap_into_box(frames, "r")
    assert np.all((wrapped.positions_nm >= 0) & (wrapped.positions_nm < 2.0))
    assert wrapped.positions_nm[0, 0, 2] == 1.0 and "4 coordinates" in note


def test_dataset_stage_wraps_with_a_note(tmp_path, tiny_data, real):
    replicas, config = real
    paths = tiny_data.copy_replicas(tmp_path)
    frames = replicas[1]
    far = with_positions(frames, frames.positions_nm + 1500 * frames.box_nm[:, None, :])
    write_h5md(paths[1], far, {"replica": 1})
    lines: list[str] = []
    build_dataset(config, paths, tmp_path / "dataset", progress=lines.append)
    assert any("replica_1.h5: wrapped 3840 coordinates in 40 frames" in line
               and "up to 1500 boxes" in line for line in lines), lines
    val = read_h5md(tmp_path / "dataset" / "val.h5")
    np.testing.assert_allclose(val.positions_nm, frames.positions_nm, atol=1e-9)


# -------------------------------------------------------------------------------- repeats


def test_copies_are_found_however_they_were_made(real):
    frames = real[0][0]
    x, box = frames.positions_nm, frames.box_nm
    L = box[:, None, :]
    rng = np.random.default_rng(3)
    variants = {
        "exact": x.copy(),
        "float32": x.astype(np.float32).astype(np.float64),
        "translated": np.mod(x + [0.3, -0.2, 0.51], L),
        "whole boxes away": x + rng.integers(-5, 5, size=x.shape) * L,
        "noise 1e-6 nm": x + rng.normal(scale=1e-6, size=x.shape),
    }
    for what, copy in variants.items():
        pairs = find_repeats(np.concatenate([x, copy]), np.concatenate([box, box]))
        assert [(a, b) for a, b, _ in pairs] == [(i, 40 + i) for i in range(40)], what
        assert max(r for _, _, r in pairs) <= SAME_FRAME_RMS_NM
    distinct = x + rng.normal(scale=1e-4, size=x.shape)  # thermal motion of ~0.02 fs
    assert find_repeats(np.concatenate([x, distinct]), np.concatenate([box, box])) == []


def test_rms_difference_ignores_a_common_shift_and_images():
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 2.0, (3, 10, 3))
    box = np.full((3, 3), 2.0)
    b = np.mod(a + 0.7, 2.0)
    np.testing.assert_allclose(rms_difference(a, b, box), 0, atol=1e-12)
    c = a.copy()
    c[:, 0, 0] += 0.01  # one atom moved by 0.01 nm: RMS 0.01 / sqrt(10) less the mean shift
    assert rms_difference(a, c, box) == pytest.approx(np.full(3, 0.01 * np.sqrt(0.9 / 10)))


def test_repeat_messages_name_files_splits_and_frames(real):
    replicas, _ = real
    a, b, c = replicas
    names, splits = ["r0.h5", "r1.h5", "r2.h5"], ["train", "val", "test"]
    leak = with_positions(c, a.positions_nm.copy())
    with pytest.raises(ForcematchError, match=r"^r2.h5 \(test\) frame 0 repeats r0.h5 \(train\) "
                       r"frame 0: .* 40 frames repeat frames of another split"):
        check_repeats([a, b, leak], names, splits)
    twice = b.positions_nm.copy()
    twice[30:33] = twice[10:13]
    with pytest.raises(ForcematchError, match=r"^r1.h5 \(val\) frame 30 repeats frame 10: .* 3 "
                       r"frames repeat earlier frames of the same replica"):
        check_repeats([a, with_positions(b, twice), c], names, splits)
    with pytest.raises(ForcematchError, match=r"^r1.h5 \(train\) frame 0 repeats r0.h5 \(train\)"
                       r" frame 0: .* replicas must be independent"):
        check_repeats([a, a, c], names, ["train", "train", "test"])


def test_stale_forces_are_found_across_replicas(real):
    a, b, c = real[0]
    forces = c.forces_kJ_mol_nm.copy()
    forces[11] = a.forces_kJ_mol_nm[5]
    with pytest.raises(ForcematchError, match=r"r2.h5: forces of frame 11 are identical to "
                       r"those of r0.h5 frame 5, though the positions differ"):
        check_repeated_forces([a, b, dataclasses.replace(c, forces_kJ_mol_nm=forces)],
                              ["r0.h5", "r1.h5", "r2.h5"])


def test_repeat_search_scales_to_a_full_dataset():
    """10,000 frames of 100 atoms (the default dataset's size) in a few seconds."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1.7156, (10_000, 100, 3))
    x[9_999] = x[17]
    t0 = time.perf_counter()
    pairs = find_repeats(x, np.full((10_000, 3), 1.7156))
    assert [(a, b) for a, b, _ in pairs] == [(17, 9_999)]
    assert time.perf_counter() - t0 < 30
