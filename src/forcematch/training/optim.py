"""The optimiser: Adam with a learning-rate schedule, after global-norm gradient clipping."""

from __future__ import annotations

from collections.abc import Mapping

import optax


def make_schedule(settings: Mapping, total_steps: int) -> optax.Schedule:
    """Learning rate per step: optional linear warm-up, then cosine/exponential decay from
    `learning_rate` to `learning_rate × final_learning_rate_factor` at the last step."""
    peak, factor = settings["learning_rate"], settings["final_learning_rate_factor"]
    warmup = min(settings["warmup_steps"], max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if settings["schedule"] == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=factor)
    else:
        decay = optax.exponential_decay(peak, decay_steps, decay_rate=factor)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(settings: Mapping, total_steps: int) -> optax.GradientTransformation:
    """Adam with the schedule of `make_schedule`, after global-norm gradient clipping
    (`grad_clip_norm`; None: no clipping)."""
    adam = optax.adam(make_schedule(settings, total_steps))
    if settings["grad_clip_norm"] is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(settings["grad_clip_norm"]), adam)
