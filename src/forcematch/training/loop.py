"""Force matching: the `Trainer`, one training run (`training.run.train` starts it).

`train()` gets frames (a `Frames` in memory, or a frame source such as `H5MDSource` that reads
batches from HDF5 in a background thread), fully resolved training settings (the config
schema's `train` options: `forcematch.config.train_settings`) and the dataset statistics
(`stats.json` of the dataset stage), and writes only inside `out_dir` (see
`training.checkpoint`). The whole training step (energies, forces as -∇E, the loss, its
parameter gradient through the forces, the Optax update) is one jitted function compiled once,
with static shapes (the last incomplete batch of an epoch is dropped).

The `Trainer` follows MACE's shape: prepare (frames, capacity, model, run description; budget:
`epochs`, or with `steps` set ceil(steps / steps per epoch) epochs, at most `max_epochs`), then
`run` = resume or start, compile, steps with a checkpoint at every epoch end and an evaluation
at 50 evenly spaced ones at most and the last, and `finish` (refit the per-atom energy
constant, final metrics on all validation frames, the model directory). Streamed and in-memory
training give the same parameters bit for bit: the same batches (a pure function of seed and
epoch), the same float32 inputs, the same statistics (given, never recomputed) and the same
chunked evaluation.

Resuming: a later `train()` of the same run (same data fingerprints, model, statistics and
settings except `checkpoint_every_steps`) continues from `out_dir/checkpoint/` at the saved
step with the same batch order, so an interrupted run ends with the parameters of an
uninterrupted one; a checkpoint of another run makes `train()` refuse (or, with
`restart_stale`, move it aside). A run may resume streamed or in memory, or on another number
of devices (then the same run, but not bitwise the uninterrupted one).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from forcematch import __version__, losses
from forcematch.config import model_settings
from forcematch.data.sources import ArraySource, FrameSource, in_memory
from forcematch.data.stats import DensestFrame, check_normalisation, scan, stress_scale
from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_write_bytes, write_json
from forcematch.io.model_files import model_info
from forcematch.models import (
    Normalisation,
    build,
    cutoff_of,
    energy_fn,
    energy_forces_strain_fn,
    predict_fn,
    with_data_species,
)
from forcematch.models.pair import loss_model
from forcematch.potential import MODEL_FORMAT
from forcematch.progress import bar as progress_bar
from forcematch.training import checkpoint, parallel
from forcematch.training import evaluate as ev
from forcematch.training.batches import Prefetcher, batch_indices, seeded_subset
from forcematch.training.optim import make_optimizer, make_schedule
from forcematch.validation import preflight

_PREFETCH_BATCHES = 3  # batches read ahead by the background thread


class Trainer:
    """One training run; see the module docstring. Built by `training.run.train`, which
    resolves `settings` (`config.train_settings`: read-only, every key) and holds the lock."""

    def __init__(self, train_src: FrameSource, val_src: FrameSource, settings: Mapping,
                 model_config,
                 cutoff_nm: float, out: Path, *, stats: dict, devices: int | None,
                 provenance: dict | None, progress: Callable[[str], object],
                 species_names: Sequence[str] | None = None):
        """`out`: the run directory (None: preflight checks only, nothing written);
        `species_names`: of species 0..S−1 where the data name them (else None)."""
        self.cfg = settings
        self.progress = progress
        self.mesh = parallel.device_mesh(devices)
        self.out = out
        if out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.streamed = not isinstance(train_src, ArraySource)
        self._select_frames(train_src, val_src)
        self._plan_batches()
        name = self.cfg["model"]
        settings = model_settings(name, with_data_species(model_config, train_src.species),
                                  source=f"{name} model")
        cutoff_nm = cutoff_of(name, settings, float(cutoff_nm))
        capacity, self.closest_pair_nm, fingerprints = self._scan(cutoff_nm)  # names a bad frame
        self.stats = check_normalisation(stats, "training")
        self.model = build(name, settings, cutoff_nm, capacity)
        self.norm = Normalisation.from_stats(self.stats, self.cfg["output_scale"], self.n_atoms)
        self.e_scale = float(self.stats["energy_per_atom_std_kJ_mol"]) or 1.0
        self.f_scale = float(self.stats["force_std_kJ_mol_nm"]) or 1.0
        self.w_scale = stress_scale(self.stats, self.cfg, (self.train_src, self.val_src))
        self.info = self._describe(fingerprints, provenance, species_names)

    # -- preparation -------------------------------------------------------------------------
    def _select_frames(self, train_src: FrameSource, val_src: FrameSource) -> None:
        """Seeded subsets: n_train training frames, val_frames validated every epoch, and the
        frames the per-epoch energy constant is refitted on."""
        cfg = self.cfg
        if val_src.n_atoms != train_src.n_atoms or not np.array_equal(val_src.species,
                                                                      train_src.species):
            raise ForcematchError("validation frames hold different atoms from the training "
                                  "frames")
        if val_src.n_frames == 0:
            raise ForcematchError("validation data has no frames")
        self.given_train_src = train_src  # in file order: adjacent frames for the sign check
        self.train_frames = np.arange(train_src.n_frames)  # indices into the given frames
        if cfg["n_train"] is not None:
            if cfg["n_train"] > train_src.n_frames:
                raise ForcematchError(f"n_train = {cfg['n_train']} but the training data has "
                                      f"{train_src.n_frames} frames")
            self.train_frames = seeded_subset(cfg["seed"], 0, train_src.n_frames,
                                              cfg["n_train"])
            train_src = train_src.subset(self.train_frames)
        self.train_src, self.val_src = train_src, val_src
        self.val_epoch = val_src
        if cfg["val_frames"] is not None and cfg["val_frames"] < val_src.n_frames:
            self.val_epoch = in_memory(val_src.subset(
                seeded_subset(cfg["seed"], 1, val_src.n_frames, cfg["val_frames"])))
        n_train = train_src.n_frames
        n_fit = min(n_train, cfg["val_frames"] or n_train)
        self.fit_src = train_src
        if n_fit < n_train:
            self.fit_src = in_memory(train_src.subset(seeded_subset(cfg["seed"], 3, n_train,
                                                                    n_fit)))

    def _plan_batches(self) -> None:
        cfg = self.cfg
        if cfg["energy_weight"] == 0 and cfg["force_weight"] == 0:
            raise ForcematchError("train.energy_weight and train.force_weight are both 0: "
                                  "nothing to fit")
        self.n_train, self.n_atoms = self.train_src.n_frames, self.train_src.n_atoms
        self.n_devices = int(self.mesh.devices.size)
        self.batch_size = min(cfg["batch_size"], self.n_train)
        parallel.check_batch_split(self.batch_size, cfg["batch_size"], self.n_train,
                                   self.n_devices)
        if cfg["energy_loss"] == "centred" and cfg["energy_weight"] > 0 and self.batch_size < 2:
            raise ForcematchError("energy_loss 'centred' needs batches of at least 2 frames")
        self.steps_per_epoch = self.n_train // self.batch_size
        self.epochs = (cfg["epochs"] if cfg["steps"] is None else min(
            math.ceil(cfg["steps"] / self.steps_per_epoch), cfg["max_epochs"]))
        self.total_steps = self.steps_per_epoch * self.epochs
        self.eval_every = ev.evaluation_interval(self.epochs)

    def _scan(self, cutoff_nm: float) -> tuple[int, float, dict]:
        """One read of all frames: fingerprints, finiteness, the neighbour capacity that covers
        every training and validation frame, and their closest pair (nm)."""
        densest = DensestFrame(cutoff_nm)
        train_sha256 = scan(self.train_src, "training", on_positions=densest)
        val_sha256 = scan(self.val_src, "validation", on_positions=densest)
        return densest.capacity(), densest.closest_nm, {"train_sha256": train_sha256,
                                                        "val_sha256": val_sha256}

    def _describe(self, fingerprints, provenance, species_names) -> dict:
        """The run's config.json: what identifies it (resume check) and what loads it."""
        return model_info(
            model_format=MODEL_FORMAT, version=__version__, model=self.model,
            train_config=self.cfg, source=self.train_src, stats=self.stats, norm=self.norm,
            fingerprints=fingerprints, provenance=provenance, species_names=species_names,
            energy_scale_per_atom_kJ_mol=self.e_scale, force_scale_kJ_mol_nm=self.f_scale,
            batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps)

    # -- state and compilation -----------------------------------------------------------------
    def _initial_state(self) -> dict:
        first = self.train_src.read([0])
        params = self.model.init(jax.random.PRNGKey(self.cfg["seed"]),
                                 jnp.asarray(first.positions_nm[0], jnp.float32),
                                 jnp.asarray(first.box_nm[0], jnp.float32), self.species)
        return {"params": params, "opt_state": self.optimizer.init(params), "step": 0,
                "wall_s": 0.0, "train_s": 0.0,  # train_s: seconds inside training steps
                # loss, energy, force, stress loss sums; steps: since the last metrics row
                "epoch_sums": np.zeros(5)}

    def _restore_or_start(self, restart_stale: bool) -> dict:
        state = self._initial_state()
        ckpt = self.out / "checkpoint"
        resumed = checkpoint.restore(ckpt, self.info, state, restart_stale, self.progress)
        if resumed is not None:
            self.progress(f"resuming from {ckpt} at step {resumed['step']}/{self.total_steps}")
            state = resumed
        else:
            checkpoint.start_afresh(self.out, self.info)
        checkpoint.truncate_metrics(ckpt / "metrics.csv",
                                    int(state["step"]) // self.steps_per_epoch)
        return state

    def _loss(self, params, pos, box, energy, forces, virial=None):
        """The loss of a batch (virial [B,3,3] kJ/mol given with the stress term only)."""
        cfg = self.cfg
        centred = cfg["energy_loss"] == "centred"
        if cfg["loss_form"] == "raw_eV_angstrom":
            pred_e, pred_f = self.loss_predict(params, pos, box, self.species)
            return losses.raw_loss(pred_e, pred_f, energy, forces, cfg["energy_weight"],
                                   cfg["force_weight"], center_energy=centred)
        stress = None
        if self.w_scale is None:
            pred_e, pred_f = self.loss_predict(params, pos, box, self.species)
        else:  # the virial is −dE/dε
            pred_e, pred_f, de_dstrain = self.loss_predict(params, pos, box, self.species)
            stress = (-de_dstrain, virial, cfg["stress_weight"], self.w_scale)
        return losses.loss(pred_e, pred_f, energy, forces, self.n_atoms, cfg["energy_weight"],
                           cfg["force_weight"], self.e_scale, self.f_scale,
                           center_energy=centred, stress=stress)

    def _train_step(self, params, opt_state, *batch):
        (total, parts), grads = jax.value_and_grad(self._loss, has_aux=True)(params, *batch)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, total, parts["energy"],
                parts["force"], parts["stress"])

    def _compile(self) -> float:
        """Compile the training step for the sharded batch shapes; returns seconds taken."""
        replicated, self.by_frame = parallel.shardings(self.mesh)
        self.params = jax.device_put(self.params, replicated)
        self.opt_state = jax.device_put(self.opt_state, replicated)
        b, n = self.batch_size, self.n_atoms
        virial = () if self.w_scale is None else ((b, 3, 3),)
        shapes = [jax.ShapeDtypeStruct(s, np.float32, sharding=self.by_frame)
                  for s in ((b, n, 3), (b, 3), (b,), (b, n, 3), *virial)]
        t0 = time.perf_counter()
        self.step_fn = jax.jit(
            self._train_step,
            in_shardings=(replicated, replicated) + (self.by_frame,) * len(shapes),
            out_shardings=replicated).lower(self.params, self.opt_state, *shapes).compile()
        self.predict_jit = jax.jit(self.predict)
        self.energies_jit = jax.jit(jax.vmap(energy_fn(self.model, self.norm),
                                             in_axes=(None, 0, 0, None)))
        return time.perf_counter() - t0

    # -- the run ----------------------------------------------------------------------------
    def _prepare_functions(self) -> None:
        self.species = jnp.asarray(self.train_src.species)
        self.optimizer = make_optimizer(self.cfg, self.total_steps)
        self.schedule = make_schedule(self.cfg, self.total_steps)
        self.predict = predict_fn(self.model, self.norm)
        self.loss_model = loss_model(self.model, self.closest_pair_nm,
                                     self.cfg["pair_table_dr_nm"])
        self.loss_predict = (predict_fn(self.loss_model, self.norm) if self.w_scale is None else
                             jax.vmap(energy_forces_strain_fn(self.loss_model, self.norm),
                                      in_axes=(None, 0, 0, None)))

    def preflight(self, mode: str = "refuse") -> dict:
        """The checks of `forcematch.validation.preflight` on this run's data, model and loss at
        initialisation; `mode` "refuse" raises on a refusal, "warn" only reports it."""
        self._prepare_functions()
        cfg = self.cfg
        findings = [preflight.neighbour_check(self.train_src, self.model.cutoff_nm),
                    preflight.label_sign_check(self.given_train_src)]
        e_norm = f_norm = None  # one term only: nothing to balance, nothing to compile
        if cfg["energy_weight"] > 0 and cfg["force_weight"] > 0:
            e_norm, f_norm = self._term_gradient_norms()
        findings.append(preflight.gradient_balance(e_norm, f_norm, cfg["energy_weight"]))
        self.zero_force_loss = preflight.zero_force_loss(
            self.train_src, lambda f: losses.zero_force_loss(f, self.f_scale, cfg["loss_form"]))
        result = preflight.report(findings, mode, self.progress)
        result["zero_force_loss"] = {"force_loss": self.zero_force_loss,
                                     "loss_form": cfg["loss_form"]}
        return result

    def _term_gradient_norms(self) -> tuple[float, float]:
        """Global norms of the weighted energy and force terms' parameter gradients at the
        initial parameters, on the first training batch."""
        batch = [jnp.asarray(a) for a in self._batch_arrays(np.arange(self.batch_size))]
        e_norm, f_norm = preflight.term_gradient_norms(
            lambda p: self._loss(p, *batch)[1], self._initial_state()["params"])
        return self.cfg["energy_weight"] * e_norm, self.cfg["force_weight"] * f_norm

    def run(self, restart_stale: bool = False, preflight_mode: str = "refuse") -> dict:
        """Check, resume or start, train to the last step, finish; returns the final
        metrics. The preflight report goes to `out/preflight.json`."""
        write_json(self.out / "preflight.json", self.preflight(preflight_mode))
        state = self._restore_or_start(restart_stale)
        self.params, self.opt_state = state["params"], state["opt_state"]
        self.step, self.last_saved = int(state["step"]), int(state["step"])
        self.sums = np.asarray(state["epoch_sums"], np.float64).copy()
        self.wall0 = float(state["wall_s"]) - time.perf_counter()
        self.train_s = float(state["train_s"])
        self._announce(self._compile())
        self._steps()
        return self.finish()

    def _announce(self, compile_s: float) -> None:
        data = f"streamed from {self.train_src.name}" if self.streamed else "in memory"
        kind = self.mesh.devices.flat[0].platform
        plural = "s" if self.n_devices > 1 else ""
        self.progress(
            f"training {self.model.name} model {json.dumps(self.model.config)} on "
            f"{self.n_train} frames of {self.n_atoms} atoms ({data}): batch {self.batch_size} "
            f"over {self.n_devices} {kind} device{plural}, {self.steps_per_epoch} steps/epoch x "
            f"{self.epochs} epochs, neighbour capacity {self.model.capacity}"
            f"{getattr(self.loss_model, 'note', '')}; compiled in {compile_s:.1f} s")

    def _batch_arrays(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        """Training frames `idx` as the float32 arrays of a training step: positions, box,
        energy, forces and, with the stress term, the virial."""
        frames = self.train_src.read(idx)
        virial = () if self.w_scale is None else (frames.virial_kJ_mol,)
        return tuple(a.astype(np.float32) for a in (
            frames.positions_nm, frames.box_nm, frames.potential_energy_kJ_mol,
            frames.forces_kJ_mol_nm, *virial))

    def _load_batch(self, idx: np.ndarray):
        """Frames `idx` as float32 arrays placed split over the devices (background thread)."""
        return idx, jax.device_put(self._batch_arrays(idx), self.by_frame)

    def _steps(self) -> None:
        order = batch_indices(self.cfg["seed"], self.n_train, self.batch_size, self.step,
                              self.total_steps)
        self.epoch_t0, self.epoch_frames = time.perf_counter(), 0
        with (Prefetcher(self._load_batch, order, depth=_PREFETCH_BATCHES) as prefetch,
              progress_bar(self.total_steps - self.step, "training", "step") as steps):
            for idx, batch in prefetch:
                self.take_step(idx, batch)
                steps.update(1)
                if self.step % self.steps_per_epoch == 0:
                    self.end_epoch()
                elif self.step - self.last_saved >= self.cfg["checkpoint_every_steps"]:
                    self.save()

    def take_step(self, idx: np.ndarray, batch) -> None:
        """One optimiser step on the batch of training frames `idx`."""
        t0 = time.perf_counter()
        params, opt_state, *losses_ = self.step_fn(self.params, self.opt_state, *batch)
        total, e_loss, f_loss, s_loss = (float(x) for x in losses_)
        self.train_s += time.perf_counter() - t0
        if not math.isfinite(total):
            self._raise_divergence(idx, total)
        self.params, self.opt_state = params, opt_state
        self.sums += (total, e_loss, f_loss, s_loss, 1.0)
        self.step += 1
        self.epoch_frames += self.batch_size

    def save(self) -> None:
        """Checkpoint the current state."""
        checkpoint.save_state(self.out / "checkpoint", {
            "params": self.params, "opt_state": self.opt_state, "step": self.step,
            "wall_s": self.wall0 + time.perf_counter(), "train_s": self.train_s,
            "epoch_sums": self.sums})
        self.last_saved = self.step

    def end_epoch(self) -> None:
        """Checkpoint; every `eval_every`-th and the last epoch, also validate on the per-epoch
        frames, append the metrics row (training losses since the previous row) and report."""
        epoch = self.step // self.steps_per_epoch
        if epoch % self.eval_every and epoch != self.epochs:
            self.save()  # the loss sums, kept in the checkpoint, run on to the next row
            return
        frames_per_s = self.epoch_frames / (time.perf_counter() - self.epoch_t0)
        m = self.evaluate(self.val_epoch, self.refit_offset(self.fit_src))
        row = ev.metrics_row(epoch, self.step, self.schedule, self.sums, m, self.zero_force_loss,
                             self.wall0 + time.perf_counter())
        checkpoint.append_metrics(self.out / "checkpoint" / "metrics.csv", row)
        self.sums[:] = 0.0
        self.save()
        self.progress(ev.progress_line(row, self.epochs, frames_per_s))
        self.epoch_t0, self.epoch_frames = time.perf_counter(), 0

    # -- evaluation -------------------------------------------------------------------------
    def refit_offset(self, source: FrameSource) -> float:
        """Least-squares energy per atom (kJ/mol) of the current parameters on `source`."""
        return ev.refit_offset(self.energies_jit, self.params, self.species, source, self.norm,
                               self.model.capacity)

    def evaluate(self, source: FrameSource, shift: float) -> dict:
        """Accuracy of the current parameters on `source` with energy constant `shift`."""
        return ev.evaluate(self.predict_jit, self.params, self.species, source, self.norm, shift,
                           self.model.capacity)

    def _raise_divergence(self, idx: np.ndarray, value: float):
        """ForcematchError for a non-finite loss on the batch `idx`: a neighbour-list overflow
        names its frame, anything else is divergence."""
        batch = self.train_src.read(idx)
        over = np.asarray(jax.vmap(self.model.overflow)(
            jnp.asarray(batch.positions_nm, jnp.float32), jnp.asarray(batch.box_nm, jnp.float32)))
        epoch, step = self.step // self.steps_per_epoch + 1, self.step + 1
        if over.any():
            frame = int(self.train_frames[idx][int(np.argmax(over))])
            raise ForcematchError(
                f"neighbour list overflow (capacity {self.model.capacity}) in training frame "
                f"{frame} at epoch {epoch}, step {step}")
        ckpt = self.out / "checkpoint"
        kept = (f"last good checkpoint: step {self.last_saved} in {ckpt}" if self.last_saved
                else "no checkpoint")
        raise ForcematchError(
            f"training diverged: loss is {value} at epoch {epoch}, step {step} "
            f"(try a lower learning_rate or grad_clip_norm); {kept}")

    # -- the end ----------------------------------------------------------------------------
    def finish(self) -> dict:
        """Refit the per-atom energy constant on all training energies (forces and the centred
        energy loss leave it free), evaluate all validation frames, write model/,
        metrics.csv and final_metrics.json; returns the final metrics."""
        shift = self.refit_offset(self.train_src)
        m = self.evaluate(self.val_src, shift)
        final = {
            "model": self.model.name, "epochs": self.epochs, "steps": self.total_steps,
            "n_train_frames": self.n_train, "n_val_frames": self.val_src.n_frames,
            **{f"val_{k}": v for k, v in m.items()},
            "energy_shift_per_atom_trained_kJ_mol": self.norm.energy_shift_per_atom,
            "energy_shift_per_atom_refit_kJ_mol": shift,
            # wall_s: the whole run incl. compilation and evaluation (summed over resumes)
            "wall_s": self.wall0 + time.perf_counter(), "train_s": self.train_s,
            "frames_per_s": (self.total_steps * self.batch_size / self.train_s
                             if self.train_s > 0 else None),
            "devices": self.n_devices, "streamed": self.streamed,
            "provenance": self.info["provenance"],
        }
        final_norm = Normalisation(self.norm.energy_scale, shift)
        checkpoint.write_model_dir(self.out / "model", dict(
            self.info, norm=final_norm.to_dict(), final_metrics=final), self.params)
        atomic_write_bytes(self.out / "metrics.csv",
                           (self.out / "checkpoint" / "metrics.csv").read_bytes())
        write_json(self.out / "final_metrics.json", final)
        self.progress(ev.final_line(m, self.val_src.n_frames, self.out / "model"))
        return final
