"""Which frames each optimiser step sees, and a background thread that reads them ahead.

The batch order is a pure function of (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one, and streamed training the same as in-memory training.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np


def frames_rng(seed: int, *tags: int) -> np.random.Generator:
    """The generator of one seeded frame choice: tags 0 n_train subset, 1 validation subset,
    2 epoch order, 3 energy-refit subset."""
    return np.random.default_rng([seed, *tags])


def seeded_subset(seed: int, tag: int, n_frames: int, size: int) -> np.ndarray:
    """`size` distinct sorted frame indices out of `n_frames`, drawn by `frames_rng(seed, tag)`."""
    return np.sort(frames_rng(seed, tag).choice(n_frames, size, replace=False))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Batch order of epoch `epoch` (0-based): a pure function of (seed, epoch)."""
    return frames_rng(seed, 2, epoch).permutation(n)


def batch_indices(seed: int, n_frames: int, batch_size: int, start_step: int,
                  total_steps: int) -> Iterator[np.ndarray]:
    """Frame indices [batch_size] of every step from `start_step`: epoch permutations cut in
    batches of `batch_size` (the last incomplete batch of an epoch dropped)."""
    steps_per_epoch = n_frames // batch_size
    perm, perm_epoch = None, -1
    for step in range(start_step, total_steps):
        epoch, b = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = epoch_permutation(seed, epoch, n_frames), epoch
        yield perm[b * batch_size : (b + 1) * batch_size].astype(np.int32)


class Prefetcher:
    """`load(item)` for each item of `items`, up to `depth` items ahead in a daemon thread.

    Iterating gives the results in order. An exception raised by `load` (or by `items`) is
    raised in the iterating thread when it reaches that item. `close()` (also at the end of a
    `with` block) stops the thread and waits for it to finish the item it is loading.
    """

    def __init__(self, load: Callable, items: Iterable, depth: int = 3,
                 name: str = "forcematch-prefetch"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(load, items), name=name,
                                        daemon=True)
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, load: Callable, items: Iterable) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put((True, load(item))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((False, exc))
            return
        self._put((False, None))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        ok, value = self._queue.get()
        if ok:
            return value
        self._finished = True
        self.close()
        if value is None:
            raise StopIteration
        raise value

    def close(self) -> None:
        """Stop loading and wait for the thread (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
        self._finished = True

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
