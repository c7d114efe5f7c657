"""Near-identical frames within and across replicas, and force labels repeated at other positions.

A test replica that holds training frames measures memory, not accuracy (a copied replica made
the test energy error fall 3x), and a frame stored twice weighs twice. Two frames count as the
same when their positions differ by less than SAME_FRAME_RMS_NM (root mean square over atoms,
after the minimum image and one common shift): a copy, a copy through float32, a copy shifted
or wrapped by whole boxes, a translated copy. Distinct frames of a liquid one 0.5 fs step apart
at 10 K still differ by ~4e-5 nm.

Finding them does not compare all pairs: every frame gets a few translation- and
wrap-invariant keys |rho_k| = |sum_i exp(i k.r_i)| for the smallest wave vectors k of its box.
Two frames within SAME_FRAME_RMS_NM have keys within |k| N SAME_FRAME_RMS_NM of each other, so
only frames whose keys all lie that close are compared atom by atom.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError

SAME_FRAME_RMS_NM = 1e-5
_MODES = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1],
                   [1, 1, 1], [1, -1, 0]], dtype=np.float64)
_PAIRS_PER_BLOCK = 1 << 16  # candidate pairs compared at once (bounded by bytes below)
_BLOCK_BYTES = 1 << 25


def _keys(positions: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|rho_k| [T, M], |k| [T, M]) of frames positions [T, N, 3], box [T, 3] (nm)."""
    t, n = positions.shape[:2]
    k = 2 * np.pi * _MODES[None, :, :] / box[:, None, :]  # [T, M, 3]
    keys = np.empty((t, len(_MODES)))
    step = max(1, _BLOCK_BYTES // (16 * n * len(_MODES)))
    for a in range(0, t, step):
        phase = np.einsum("bnd,bmd->bnm", positions[a : a + step], k[a : a + step])
        keys[a : a + step] = np.abs(np.exp(1j * phase).sum(axis=1))
    return keys, np.linalg.norm(k, axis=2)


def rms_difference(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> np.ndarray:
    """RMS over atoms of the minimum-image difference of positions a, b [P, N, 3] (nm) after
    the best common shift (box [P, 3]); [P]."""
    box = box[:, None, :]

    def image(d: np.ndarray) -> np.ndarray:
        return d - box * np.rint(d / box)

    d = image(a - b)
    shift = d[:, :1, :] + image(d - d[:, :1, :]).mean(axis=1, keepdims=True)
    return np.sqrt(np.mean(np.sum(image(d - shift) ** 2, axis=2), axis=1))


def _candidates(keys: np.ndarray, widths: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of frame pairs (i, j) whose keys all differ by at most `widths` [M]."""
    order = np.argsort(keys[:, 0], kind="stable")
    first = keys[order, 0]
    end = np.searchsorted(first, first + widths[0], side="right")
    p = 0
    while p < len(order):
        counts = np.maximum(end[p:] - np.arange(p, len(order)) - 1, 0)
        take = max(1, int(np.searchsorted(np.cumsum(counts), _PAIRS_PER_BLOCK)))
        counts, rows = counts[:take], np.arange(p, min(p + take, len(order)))
        p += take
        total = int(counts.sum())
        if total == 0:
            continue
        starts = np.repeat(rows, counts[: rows.size])
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        i, j = order[starts], order[starts + 1 + offsets]
        close = np.all(np.abs(keys[i] - keys[j]) <= widths, axis=1)
        if close.any():
            yield i[close], j[close]


def find_repeats(positions: np.ndarray, box: np.ndarray) -> list[tuple[int, int, float]]:
    """(earlier frame, later frame, RMS difference nm) of every pair of frames of positions
    [T, N, 3], box [T, 3] that lie within SAME_FRAME_RMS_NM of each other."""
    t, n = positions.shape[:2]
    if t < 2:
        return []
    keys, k_norm = _keys(positions, box)
    widths = k_norm.max(axis=0) * n * SAME_FRAME_RMS_NM + 1e-9 * n
    found = []
    per_block = max(1, _BLOCK_BYTES // (2 * 24 * n))
    for i, j in _candidates(keys, widths):
        for a in range(0, i.size, per_block):
            ia, ja = i[a : a + per_block], j[a : a + per_block]
            same_box = np.all(np.abs(box[ia] - box[ja]) <= 1e-9 * box[ia], axis=1)
            rms = rms_difference(positions[ia], positions[ja], box[ia])
            keep = (rms <= SAME_FRAME_RMS_NM) & same_box
            found += [(int(min(x, y)), int(max(x, y)), float(r))
                      for x, y, r in zip(ia[keep], ja[keep], rms[keep], strict=True)]
    return sorted(found, key=lambda f: (f[1], f[0]))


def _explain(kind: int, n_frames: int, split: str) -> str:
    """The end of a repeat message: how many frames, and why it matters."""
    frames = f"{n_frames} frame{'s' if n_frames != 1 else ''} repeat{'s' if n_frames == 1 else ''}"
    if kind == 0:
        return (f"{frames} frames of another split: a held-out set that holds "
                "training frames measures memory, not accuracy (replicas copied, or run with "
                "the same seed?)")
    if kind == 1:
        return (f"{frames} frames of another replica of the {split} split: "
                "replicas must be independent (the same seed twice?)")
    return (f"{frames} earlier frames of the same replica: duplicated frames "
            "weigh twice")


def check_repeats(replicas: Sequence[Frames], names: Sequence[str],
                  splits: Sequence[str]) -> None:
    """Refuse near-identical frames (see the module docstring) among `replicas` (named
    `names`, in splits `splits`); a repeat across splits (a leak) is reported first."""
    offsets = np.cumsum([0] + [r.n_frames for r in replicas])
    pairs = find_repeats(np.concatenate([r.positions_nm for r in replicas]),
                         np.concatenate([r.box_nm for r in replicas]))
    if not pairs:
        return

    def locate(g: int) -> tuple[int, int]:
        r = int(np.searchsorted(offsets, g, side="right")) - 1
        return r, g - int(offsets[r])

    found = []
    for a, b, rms in pairs:
        (ra, fa), (rb, fb) = locate(a), locate(b)
        kind = 0 if splits[ra] != splits[rb] else 1 if ra != rb else 2
        found.append((kind, b, ra, fa, rb, fb, rms))
    kind = min(f[0] for f in found)
    chosen = [f for f in found if f[0] == kind]
    _, _, ra, fa, rb, fb, rms = chosen[0]
    earlier = f"frame {fa}" if ra == rb else f"{names[ra]} ({splits[ra]}) frame {fa}"
    raise ForcematchError(
        f"{names[rb]} ({splits[rb]}) frame {fb} repeats {earlier}: positions differ by "
        f"{rms:.2g} nm RMS after the minimum image and a common shift (below "
        f"{SAME_FRAME_RMS_NM:g} nm counts as the same frame); "
        + _explain(kind, len({f[1] for f in chosen}), splits[rb]))


def check_repeated_forces(replicas: Sequence[Frames], names: Sequence[str]) -> None:
    """Refuse a frame whose force array is bit for bit that of another frame: after
    `check_repeats` their positions differ, so one of them carries stale labels."""
    seen: dict[bytes, tuple[int, int]] = {}
    for r, frames in enumerate(replicas):
        forces = np.ascontiguousarray(frames.forces_kJ_mol_nm)
        for i in range(frames.n_frames):
            key = hashlib.blake2b(forces[i].tobytes(), digest_size=16).digest()
            if key in seen:
                r0, i0 = seen[key]
                other = f"frame {i0}" if r0 == r else f"{names[r0]} frame {i0}"
                raise ForcematchError(
                    f"{names[r]}: forces of frame {i} are identical to those of {other}, "
                    "though the positions differ: stale labels (forces not recomputed for "
                    "every frame?)")
            seen[key] = (r, i)
