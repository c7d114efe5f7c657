"""`train()`: one training run of a network, start to finish, owned by this process (the
`spline` family is fitted by `forcematch.linear`; `forcematch.fit.fit` takes any family).

Before any long work it claims the run's checkpoint directory (`training.lock`: a second live
trainer on it is refused, naming the first), checks what the settings alone can refuse (a
seed JAX cannot hold), then hands over to the `Trainer` (`training.loop`). A write the file
system refuses (no space, read-only, permission) stops the run with one line naming the file
and saying what to do; the checkpoint keeps the last completed step for the rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from forcematch.config import train_settings
from forcematch.data.frames import Frames
from forcematch.data.sources import FrameSource, as_source
from forcematch.data.stats import statistics
from forcematch.errors import ForcematchError
from forcematch.io.atomic import OutputError, output_errors
from forcematch.training.lock import CheckpointLock
from forcematch.training.loop import Trainer

# JAX's PRNG keys hold 32 bits of a seed unless 64-bit mode is on: PRNGKey(2**32) is
# PRNGKey(0), and beyond 2**63 it raises OverflowError. Seeds below this are used exactly.
MAX_SEED = 2**32 - 1


def check_seed(settings: Mapping, key: str = "train.seed") -> None:
    """Refuse a seed that JAX's PRNG would truncate or reject."""
    seed = settings["seed"]
    if not 0 <= seed <= MAX_SEED:
        raise ForcematchError(f"{key} = {seed} is outside 0..{MAX_SEED}: JAX's random keys "
                              "hold 32 bits, so a larger seed would be truncated (silently "
                              "equal to another) or refused")


@contextmanager
def claimed_run(train_data: Frames | FrameSource, settings: Mapping | None, out_dir,
                stats: dict | None) -> Iterator[tuple[Mapping, dict, Path]]:
    """(resolved settings, statistics, run directory) of a run whose checkpoint directory this
    process holds for the duration (`training.lock`); the seed checked and, without `stats`,
    the statistics computed from `train_data` (then a `Frames`)."""
    settings = train_settings(dict(settings or {}))
    check_seed(settings)
    if stats is None:
        if not isinstance(train_data, Frames):
            raise ForcematchError("train(): streamed training data needs `stats` (stats.json)")
        stats = statistics(train_data)
    out, ckpt = Path(out_dir), Path(out_dir) / "checkpoint"
    with output_errors(ckpt, own_name=True):
        try:
            ckpt.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ForcematchError(f"{ckpt} exists and is not a directory") from None
    with CheckpointLock(ckpt):
        yield settings, stats, out


def train(
    train_data: Frames | FrameSource,
    val_data: Frames | FrameSource,
    settings: Mapping | None,
    model_config: dict | None,
    cutoff_nm: float,
    out_dir,
    *,
    stats: dict | None = None,
    devices: int | None = None,
    restart_stale: bool = False,
    provenance: dict | None = None,
    progress: Callable[[str], object] = print,
    preflight: str = "refuse",
    species_names: Sequence[str] | None = None,
) -> dict:
    """Train (or resume training) a network model; returns the final metrics (also
    final_metrics.json). A `spline` model is refused: `forcematch.fit.fit` fits it.

    Args:
        train_data, val_data: training and validation frames of the same atoms.
        settings, model_config: the `train` options and those of the model family
            `settings["model"]` (missing keys take the schema's defaults); cutoff_nm: nm.
        out_dir: directory for checkpoint/, model/, metrics.csv, final_metrics.json.
        stats: normalisation statistics (`data.stats.statistics` keys, the dataset stage's
            stats.json); default: computed from `train_data` (which must then be a `Frames`).
        devices: data-parallel over the first `devices` local JAX devices (None or 0: all).
        restart_stale: a checkpoint of another run in out_dir is moved to checkpoint.stale
            and training starts afresh, instead of raising.
        provenance: where the run came from (`forcematch.io.provenance.provenance`), stored with
            the checkpoint, model and final metrics (not part of the resume check).
        progress: called with one line per event (start, epoch, end).
        preflight: the checks before training (`forcematch.validation.preflight`, report in
            out_dir/preflight.json): "refuse" stops on a refusal, "warn" (for deliberately
            broken diagnostic runs) only reports it.
        species_names: names of species 0..S−1 (`config_derived.species_names`), stored
            with the model so that consumers take atoms by name; None: unnamed.

    Raises ForcematchError when another live process trains into `out_dir/checkpoint`.
    """
    if train_settings(dict(settings or {}))["model"] == "spline":
        raise ForcematchError("model 'spline' is fitted by linear least squares, not trained: "
                              "use forcematch.fit.fit (which takes any family)")
    with claimed_run(train_data, settings, out_dir, stats) as (settings, stats, out):
        ckpt = out / "checkpoint"
        trainer = Trainer(as_source(train_data), as_source(val_data), settings, model_config,
                          cutoff_nm, out, stats=stats, devices=devices,
                          provenance=provenance, progress=progress,
                          species_names=species_names)
        try:
            return trainer.run(restart_stale, preflight)
        except OutputError as err:
            raise err.with_hint(_resume_hint(err, trainer, ckpt)) from err


def _resume_hint(err: OutputError, trainer: Trainer, ckpt: Path) -> str:
    """What to do after a refused write: fix the file system, rerun, resume where it stopped."""
    fix = err.hint.removesuffix(", then rerun")
    saved = getattr(trainer, "last_saved", 0)
    if not saved:
        return f"{fix}, then rerun (no step was checkpointed yet)"
    return (f"{fix}, then rerun: training resumes from step {saved} of {trainer.total_steps} "
            f"(kept in {ckpt})")


def check_training(train_data: Frames | FrameSource, val_data: Frames | FrameSource,
                   settings: Mapping | None, model_config: dict | None, cutoff_nm: float, *,
                   stats: dict, progress: Callable[[str], object] = print) -> dict:
    """The checks `train()` runs before its first step (`forcematch.validation.preflight`), without
    training or writing anything; returns the report (a refusal is reported, not raised)."""
    settings = train_settings(dict(settings or {}))
    check_seed(settings)
    trainer = Trainer(as_source(train_data), as_source(val_data), settings, model_config,
                      cutoff_nm, None, stats=stats, devices=None, provenance=None,
                      progress=progress)
    return trainer.preflight("warn")
