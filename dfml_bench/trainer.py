"""The meta-training loop of a run: train steps, validation on meta-val with model selection,
early stopping, checkpoints and resuming from them.

The loop belongs to the benchmark, not to the methods (a method supplies ``train_step``), so
every method is validated, selected and checkpointed the same way. A checkpoint is written
after each validation, and between validations whenever `DFML_BENCH_CHECKPOINT_MINUTES` (10 by
default; 0: after every meta-iteration) have passed since the last one, so a killed long run loses
at most that much work. A run that resumes from a checkpoint produces the same records, the
same model and the same logs as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dfml_bench import store
from dfml_bench.apis import QueryBudgetExhausted, QueryLedger
from dfml_bench.config import TrainSettings
from dfml_bench.errors import DfmlError, StoreError
from dfml_bench.interfaces import Method
from dfml_bench.progress import Reporter

__all__ = ["Clock", "NonFiniteTraining", "TrainOutcome", "Trainer", "Validation", "load_checkpoint"]


class NonFiniteTraining(DfmlError):
    """The training loss or the model's weights became NaN or infinite: the run stops as failed."""


class Clock:
    """A run's wall time, counting every attempt up to the checkpoint it resumed from."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def add(self, seconds: float) -> None:
        """Count `seconds` spent by earlier attempts."""
        self._t0 -= seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


@dataclasses.dataclass
class Validation:
    """One validation: the mean meta-val accuracy over the scenario's datasets, and each dataset's
    per-episode accuracies (the same episodes at every validation and for every method of a
    given eval seed, so validations of two runs pair episode by episode)."""

    accuracy: float
    episodes: dict[str, list[float]]


@dataclasses.dataclass
class TrainOutcome:
    """What meta-training gave: the selected (best meta-val) iteration and why it stopped."""

    best_val: float            # -inf when no validation ran
    best_iteration: int
    iterations: int            # meta-iterations done
    stopped: str | None        # why training stopped early (budget, early stop), None when it ran out
    best_val_episodes: dict[str, list[float]] | None = None  # the selected validation's episodes


class Trainer:
    """Runs a method's meta-training on ``model`` with validation, selection and checkpoints.

    `validate` scores the model on meta-val (a :class:`Validation`); `emit(event, **kwargs)` calls the
    run's lifecycle hooks (``on_metrics``, ``on_evaluation``). Records go to the run's
    ``metrics.jsonl``; the checkpoint to its ``checkpoint.pt``.
    """

    def __init__(self, *, model: torch.nn.Module, method: Method, settings: TrainSettings, ledger: QueryLedger,
                 validate: Callable[[], Validation], run_dir: Path, run_id: str, device: torch.device,
                 emit: Callable[..., None], reporter: Reporter, clock: Clock, name: str):
        self.model, self.method, self.settings, self.ledger = model, method, settings, ledger
        self.validate, self.run_dir, self.run_id, self.device = validate, run_dir, run_id, device
        self.emit, self.reporter, self.clock, self.name = emit, reporter, clock, name
        self.checkpoint_path = run_dir / store.CHECKPOINT_FILE
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_val, self.best_iteration, self.start = float("-inf"), 0, 0
        self.best_val_episodes: dict[str, list[float]] | None = None

    def resume(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from a checkpoint (:func:`load_checkpoint`) of this run."""
        try:
            self.model.load_state_dict(ckpt["model"])
            self.method.load_state_dict(ckpt["method"])
            self.best_state, self.best_val = ckpt["best_state"], ckpt["best_val"]
            self.best_iteration, self.start = ckpt["best_iter"], ckpt["iteration"]
            self.best_val_episodes = ckpt.get("best_val_episodes")  # absent from older checkpoints
            set_rng_states(ckpt["rng"], self.device)
            self.ledger.load_state_dict(ckpt["ledger"])
            self.clock.add(float(ckpt.get("elapsed", 0.0)))
        except Exception as exc:  # truncated, tampered, foreign objects, another version's layout, ...
            raise _unloadable(self.checkpoint_path, exc) from None
        self.reporter.log(f"resuming {self.run_dir.name} at meta-iteration {self.start}")

    def fit(self) -> TrainOutcome:
        """Meta-train to the end (or an early stop), then load the best meta-val weights."""
        train, ledger = self.settings, self.ledger
        # queries answered by every attempt, work lost to a crash included (the ledger counts this trajectory)
        self.spent = store.QuerySpend(self.run_dir, ledger.total)
        every = max(train.val_every, 1)
        iterations = train.meta_iterations if self.method.trains else 0
        stopped, early = None, False
        metrics_path = self.run_dir / store.METRICS_FILE
        interval, last_save = store.checkpoint_interval_s(), time.monotonic()
        with self.reporter.task(f"train {self.name}", iterations - self.start) as advance:
            for it in range(self.start, iterations + 1):
                record: dict[str, Any] = {}
                if it < iterations and stopped is None:
                    try:
                        record.update(self.method.train_step(it))
                    except QueryBudgetExhausted as exc:
                        stopped = str(exc)
                        self.reporter.log(f"stopping at meta-iteration {it}: {exc}")
                    finally:
                        self.spent.update(ledger.total)
                    check_finite(record, it)
                record["queries"] = ledger.total
                is_val = it % every == 0 or it == iterations or stopped is not None
                if is_val:
                    record["val_acc"] = self._validate(it)
                    # validations since the best one, from the iterations alone (so a resumed run agrees)
                    stale = it // every - self.best_iteration // every
                    if train.early_stop and stopped is None and it < iterations and stale >= train.early_stop:
                        stopped, early = f"early stop: no new best meta-val accuracy in {stale} validations", True
                        self.reporter.log(f"stopping at meta-iteration {it}: {stopped}")
                if is_val or it % max(train.log_every, 1) == 0:
                    record.update(iteration=it, wall_time=self.clock.elapsed())
                    store.append_jsonl(metrics_path, record)
                    self.emit("on_metrics", record=record)
                if stopped is not None:
                    iterations = it + 1 if early else it  # meta-iterations done (a budget stop fails at `it`)
                    break
                if it < iterations and (is_val or time.monotonic() - last_save >= interval):
                    self._save_checkpoint(it + 1)
                    last_save = time.monotonic()
                if it < iterations:
                    advance(1, **{k: v for k, v in record.items() if k in ("loss", "train_acc", "val_acc")})
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return TrainOutcome(self.best_val, self.best_iteration, iterations, stopped, self.best_val_episodes)

    def queries_spent(self) -> int:
        """Images every attempt of this run asked for (>= the ledger's total after a crash)."""
        return self.spent.update(self.ledger.total)

    def _validate(self, it: int) -> float:
        """Validate on meta-val; keep a copy of the weights when they are the best so far."""
        check_finite_model(self.model, it)
        validation = self.validate()
        val = validation.accuracy
        # every validation's episodes (rewound with the logs on resume): a long run is scored at any length
        store.append_jsonl(self.run_dir / store.VAL_EPISODES_FILE, {"iteration": it, "per_dataset": validation.episodes})
        if val > self.best_val:
            self.best_val, self.best_iteration, self.best_val_episodes = val, it, validation.episodes
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.emit("on_evaluation", split="val", result={"iteration": it, "accuracy": val})
        return val

    def _save_checkpoint(self, next_iteration: int) -> None:
        buf = io.BytesIO()  # written atomically: a crash mid-save never leaves a torn checkpoint
        torch.save({"model": self.model.state_dict(), "method": self.method.state_dict(),
                    "best_state": self.best_state, "best_val": self.best_val, "best_iter": self.best_iteration,
                    "best_val_episodes": self.best_val_episodes,
                    "iteration": next_iteration, "rng": rng_states(self.device), "ledger": self.ledger.state_dict(),
                    "logs": store.log_sizes(self.run_dir), "elapsed": self.clock.elapsed(),
                    "run_id": self.run_id}, buf)
        store.atomic_write_bytes(self.checkpoint_path, buf.getvalue())


def check_finite(record: Mapping[str, Any], it: int) -> None:
    """Stop a run whose training loss is no longer finite (other records, e.g. a recoverer's loss
    that a noise recoverer reports as NaN, are the method's own business)."""
    for key in ("loss",):
        value = record.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise NonFiniteTraining(f"training diverged: '{key}' became {value} at meta-iteration {it}; no result "
                                    "is recorded. Lower the learning rates (train.meta_lr, the method's own) or "
                                    "check the data, then delete this run directory to re-run it.")


def check_finite_model(model: torch.nn.Module, it: int) -> None:
    """Stop a run whose weights are no longer finite (a method that reports no loss)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise NonFiniteTraining(f"training diverged: the model's weights hold NaN or infinite values at "
                                f"meta-iteration {it}; no result is recorded. Lower the learning rates "
                                "(train.meta_lr, the method's own), then delete this run directory to re-run it.")


def _unloadable(path: Path, exc: BaseException) -> StoreError:
    return StoreError(f"checkpoint '{path}' cannot be loaded ({type(exc).__name__}: it is corrupt, "
                      "tampered with or from an incompatible version); delete it to restart this run "
                      "from scratch.")


def load_checkpoint(path: Path, device: torch.device, expected_run: str) -> dict[str, Any] | None:
    """A run's checkpoint, or None without one; a checkpoint that cannot be loaded, or that another run
    wrote (copied here), is a StoreError."""
    if not path.exists():
        return None
    try:  # weights_only: a checkpoint holding anything but tensors and plain data is refused, never run
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError(type(ckpt).__name__)
    except Exception as exc:  # truncated, tampered, foreign objects, ...
        raise _unloadable(path, exc) from None
    owner = ckpt.get("run_id")
    if owner != expected_run:
        whose = f"run {str(owner)[:40]}" if isinstance(owner, str) else "no recorded run (an older version)"
        raise StoreError(f"checkpoint '{path}' belongs to {whose}, not to this run {expected_run}; delete it to "
                         "restart this run from scratch.")
    return ckpt


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every global RNG a run may draw from: torch (CPU, and the run's CUDA device), Python, NumPy.

    Generators owned by components are saved by their ``state_dict``.
    """
    import numpy as np

    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [kind, torch.from_numpy(key.astype("int64")), pos, has_gauss, gauss]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_states(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` returned."""
    import numpy as np

    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
