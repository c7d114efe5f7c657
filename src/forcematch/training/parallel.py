"""Data parallelism over local JAX devices: one mesh axis "batch".

Every batch is placed split along the axis, parameters and optimiser state replicated, and one
jitted step does the rest (XLA sums the gradients across devices). With one device nothing is
split. Several devices reach the same losses as one to float32 round-off, not bitwise.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from forcematch.errors import ForcematchError


def device_mesh(devices: int | None) -> Mesh:
    """A one-axis ("batch") mesh over the first `devices` local JAX devices (None or 0: all)."""
    available = jax.local_devices()
    if devices and devices > len(available):
        raise ForcematchError(
            f"--devices {devices} but only {len(available)} local JAX device(s) are available "
            f"({', '.join(str(d) for d in available)})")
    return Mesh(np.array(available[: devices or None]), ("batch",))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the batch axis) shardings of `mesh`."""
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))


def check_batch_split(batch_size: int, requested: int, n_train: int, n_devices: int) -> None:
    """Refuse a batch that cannot be split evenly over the devices."""
    if batch_size % n_devices == 0:
        return
    capped = ("" if batch_size == requested else
              f" (train.batch_size = {requested} capped at the {n_train} frames)")
    raise ForcematchError(
        f"train.batch_size: a batch of {batch_size} frames{capped} cannot be split evenly "
        f"over {n_devices} devices for data-parallel training; use a multiple of "
        f"{n_devices} or fewer devices (--devices)")
