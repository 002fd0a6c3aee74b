"""The one run loop every application shares.

An application describes itself as a :class:`Trainer` (what to checkpoint, one generation,
an evaluation, a summary); :func:`run_loop` drives it and owns everything else:

- budgets (:class:`Budget`: steps, training seconds, environment steps, a goal);
- the run folder: ``metrics.jsonl`` (one JSON object per generation and per evaluation),
  ``checkpoint.msgpack`` (atomic, checksummed) and ``summary.json``, the curve PNG;
- ``resume``: the checkpoint restores the trainer bitwise; the log is cut back to the
  checkpoint's step, so rows are never duplicated; a finished run resumed again writes the
  same summary (its final evaluation is kept in the checkpoint);
- multi-process rules: every process steps, only process 0 writes and prints;
- a guard: a generation whose update was skipped as non-finite (``step_skipped``) or whose
  ``finite_metrics`` are NaN/inf stops the run with :class:`TrainingError` before anything
  is written, so the last checkpoint stays good;
- a progress bar and callbacks (per-generation record, per evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from eggroll import checkpoint, distributed

CHECKPOINT = "checkpoint.msgpack"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite update, a diverged loss); the last checkpoint of
    the run is intact."""


# ------------------------------------------------------------------------------ budgets
@dataclasses.dataclass(frozen=True)
class Budget:
    """When a run stops: whichever limit comes first (``0`` means no limit).

    ``steps`` counts generations (optimiser steps); ``seconds`` counts training time, not
    compilation or evaluation; ``env_steps`` counts the trainer's ``env_steps`` counter."""

    steps: int = 0
    seconds: float = 0.0
    env_steps: int = 0

    def __post_init__(self):
        limits = {"steps": self.steps, "seconds": self.seconds, "env_steps": self.env_steps}
        bad = {k: v for k, v in limits.items() if not _finite_non_negative(v)}
        if bad:
            raise ValueError(f"budget limits must be finite numbers ≥ 0, got {bad}")
        if not any(limits.values()):
            raise ValueError("give a budget: steps, seconds and/or env_steps")

    def reached(self, step: int, seconds: float, totals: dict[str, float]) -> str | None:
        """The name of the limit that is reached, or ``None``."""
        if self.steps and step >= self.steps:
            return "steps"
        if self.seconds and seconds >= self.seconds:
            return "seconds"
        if self.env_steps and totals.get("env_steps", 0) >= self.env_steps:
            return "env_steps"
        return None


def _finite_non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """What :func:`run_loop` drives; subclass it (or give any object these methods).

    ``fingerprint``: settings a checkpoint must match to be resumed. ``arrays()``: the pytree
    to checkpoint (default: ``self.state``); ``restore(arrays, host)`` puts a loaded one back
    together with ``host_state()`` (JSON-able host-side state such as stream positions;
    default: none). ``step(index)`` runs generation ``index`` (0-based) and returns
    ``(metrics, counts)``: scalars for the record (device values are fine: the loop syncs
    every ``log_every``) and per-generation counts the loop accumulates into running totals
    (``env_steps``, ``tokens``). ``evaluate(step, final)`` returns host floats.
    ``summary(result)`` returns the application's part of ``summary.json``.

    Optional attributes: ``evaluate_at_start`` (an evaluation row at step 0),
    ``final_differs`` (the final evaluation is not the periodic one, so it is never reused),
    ``finite_metrics`` (metric names that stop the run when not finite), ``goal_reached(
    evaluation) -> bool`` and ``describe(record, evaluation) -> str`` (the progress bar).
    """

    fingerprint: dict[str, Any] = {}
    evaluate_at_start = False
    final_differs = False
    finite_metrics: tuple[str, ...] = ()
    state: Any = None

    def arrays(self) -> Any:
        return self.state

    def restore(self, arrays: Any, host: dict[str, Any]) -> None:
        self.state = arrays

    def host_state(self) -> dict[str, Any]:
        return {}

    def step(self, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def evaluate(self, step: int, final: bool) -> dict[str, float]:
        return {}

    def summary(self, result: LoopResult) -> dict[str, Any]:
        return {}


def _option(trainer: Any, name: str, default: Any) -> Any:
    return getattr(trainer, name, default)


# ------------------------------------------------------------------------------ callbacks
class Callback:
    """Hooks into a run: ``on_record`` for every generation's record, ``on_evaluation`` for
    every evaluation row (periodic, start and final). Returning ``True`` stops the run after
    this generation (it is still evaluated, checkpointed and summarised)."""

    def on_record(self, record: dict[str, Any]) -> bool | None:
        return None

    def on_evaluation(self, record: dict[str, Any]) -> bool | None:
        return None


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[dict[str, Any]], bool | None]):
        self.fn = fn

    def on_record(self, record):
        return self.fn(record)


def print_every(every: int, keys: Sequence[str] | None = None) -> Callback:
    """A callback that prints every ``every``-th record (all keys, or only ``keys``) and every
    evaluation."""

    class _Print(Callback):
        def on_record(self, record):
            if record["step"] % every == 0:
                print(_format(record, keys), flush=True)

        def on_evaluation(self, record):
            print(_format(record, None), flush=True)

    return _Print()


def _format(record: dict[str, Any], keys: Sequence[str] | None) -> str:
    items = [(k, v) for k, v in record.items() if keys is None or k in keys or k == "step"]
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def _as_callbacks(callbacks: Iterable[Any]) -> list[Callback]:
    return [c if isinstance(c, Callback) else _FunctionCallback(c) for c in callbacks]


# ------------------------------------------------------------------------------ files
def jsonable(value: Any) -> Any:
    """Arrays and numpy scalars as Python numbers, non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class JsonlLog:
    """Append-only JSON-lines metrics file (one object per line, written by process 0)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(jsonable(record)) + "\n")

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite the log atomically with only the records ``predicate`` accepts."""
        if self.enabled and self.path.exists():
            kept = [r for r in read_jsonl(self.path) if predicate(r)]
            payload = "".join(json.dumps(r) + "\n" for r in kept).encode()
            checkpoint.write_atomic(self.path, payload)

    def clear(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> str:
    """Write ``summary.json`` atomically; returns the summary as one line of JSON."""
    data = jsonable(summary)
    checkpoint.write_atomic(run_dir / SUMMARY, (json.dumps(data, indent=2) + "\n").encode())
    return json.dumps(data)


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    """The checkpoint path of a run folder; refuses to overwrite a run without ``resume`` and
    to resume a run that has no checkpoint (before anything is written)."""
    path = run_dir / CHECKPOINT
    if path.exists() and not resume:
        raise ValueError(
            f"{run_dir} already holds a checkpoint: pass --resume to continue it, or choose "
            "another --run-dir"
        )
    if resume and not path.exists():
        raise ValueError(f"--resume: no checkpoint at {path}")
    return path


# ------------------------------------------------------------------------------ the loop
@dataclasses.dataclass
class LoopResult:
    """What a finished loop knows, handed to ``Trainer.summary``."""

    run_dir: Path
    step: int
    totals: dict[str, float]
    train_seconds: float
    timed_steps: int  # generations inside train_seconds (the compiling first one excluded)
    compile_seconds: float
    stopped_by: str
    evaluations: dict[str, Any]  # "start", "final": {"step": int, **metrics}
    records: list[dict[str, Any]]  # the whole log (process 0; empty elsewhere)

    @property
    def steps_per_second(self) -> float:
        return self.timed_steps / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclasses.dataclass
class _Progress:
    step: int = 0
    totals: dict[str, float] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    timed_steps: int = 0
    compile_seconds: float = 0.0
    evaluations: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_loop(
    trainer: Trainer,
    *,
    run_dir: str | os.PathLike,
    budget: Budget,
    resume: bool = False,
    log_every: int = 1,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    progress: bool = True,
    callbacks: Iterable[Any] = (),
    config: dict[str, Any] | None = None,
    plot: Callable[[Path], Path] | None = None,
) -> dict[str, Any]:
    """Train ``trainer`` until ``budget`` is spent; returns the summary (also written to
    ``run_dir/summary.json`` by process 0).

    ``log_every``: generations between host syncs (records are written for every generation
    at each sync). ``eval_every``/``checkpoint_every``: generations between evaluations and
    checkpoints (``0``: only at the end). ``config`` (JSON-able) is stored in the checkpoint
    and the summary. ``callbacks``: :class:`Callback` objects or plain functions of a record.
    """
    for name, value in (("log_every", log_every), ("eval_every", eval_every)):
        if value < 0 or (name == "log_every" and value < 1):
            raise ValueError(f"{name} must be ≥ {1 if name == 'log_every' else 0}, got {value}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be ≥ 0, got {checkpoint_every}")
    started = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_path = check_run_dir(run_dir, resume)
    main = distributed.is_main_process()  # only process 0 writes and prints
    show_bar = progress and main
    say = (tqdm.write if show_bar else print) if main else (lambda *_: None)
    callbacks = _as_callbacks(callbacks)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(run_dir / METRICS, enabled=main)
    state = _Progress()

    def save() -> None:
        host_arrays = distributed.to_host(trainer.arrays())  # a collective: all processes call
        if main:
            meta = {**dataclasses.asdict(state), "host": trainer.host_state()}
            meta["config"] = config or {}
            checkpoint.save(checkpoint_path, host_arrays, trainer.fingerprint, meta)

    def evaluation_row(step: int, final: bool, metrics: dict[str, float]) -> dict[str, Any]:
        row = {"step": step, **{k: v for k, v in state.totals.items()}}
        row.update(seconds=state.train_seconds, **metrics)
        if final:
            row["final"] = True
        return row

    if resume:
        arrays, meta = checkpoint.load(checkpoint_path, trainer.arrays(), trainer.fingerprint)
        missing = sorted({"host", *dataclasses.asdict(state)} - set(meta))
        if missing:
            raise checkpoint.CheckpointError(
                f"{checkpoint_path} was written by an older eggroll (its metadata lacks "
                f"{missing}): start a new run, or resume it with the eggroll that wrote it"
            )
        trainer.restore(arrays, meta["host"])
        state = _Progress(**{k: meta[k] for k in dataclasses.asdict(state)})
        step = state.step
        log.keep(lambda r: r.get("step", 0) <= step and not r.get("final"))
        _reopen(trainer, state, budget, eval_every, log)
        say(f"resumed {run_dir} at step {step}")
    else:
        log.clear()
        if _option(trainer, "evaluate_at_start", False):
            metrics = trainer.evaluate(0, final=False)
            state.evaluations["start"] = {"step": 0, **metrics}
            row = evaluation_row(0, False, metrics)
            log.write(row)
            _notify(callbacks, "on_evaluation", row)

    finite_metrics = tuple(_option(trainer, "finite_metrics", ()))
    describe = _option(trainer, "describe", None)
    by_time = not budget.steps and bool(budget.seconds)
    bar = tqdm(
        total=budget.seconds if by_time else (budget.steps or None),
        initial=state.train_seconds if by_time else state.step,
        disable=not show_bar,
        unit="s" if by_time else "step",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]",
    )
    pending: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    segment_start: float | None = None  # training wall clock since the last sync
    segment_steps = 0
    stopped_by = budget.reached(state.step, state.train_seconds, state.totals)
    final = state.evaluations.get("final")
    if resume and final is not None and final["step"] == state.step:
        goal = _option(trainer, "goal_reached", lambda _: False)(final)
        stopped_by = stopped_by or ("goal" if goal else None)  # a reached goal stays reached
    last_eval: dict[str, Any] | None = None

    def sync() -> list[dict[str, Any]]:
        """Wait for the pending generations, account their time, write their records."""
        nonlocal segment_start, segment_steps
        jax.block_until_ready(trainer.arrays())
        now = time.perf_counter()
        if segment_start is not None:
            state.train_seconds += now - segment_start
            state.timed_steps += segment_steps
        rows = []
        for step, metrics, counts in pending:
            metrics = {k: _host_value(v) for k, v in metrics.items()}
            for name, count in counts.items():
                total = state.totals.get(name, 0) + _host_value(count)
                state.totals[name] = int(total) if float(total).is_integer() else total
            _guard(step, metrics, finite_metrics, checkpoint_path)
            rows.append({"step": step, **metrics, **state.totals, "seconds": state.train_seconds})
        pending.clear()
        for row in rows:
            log.write(row)
        segment_start, segment_steps = time.perf_counter(), 0
        return rows

    while stopped_by is None:
        if segment_start is None:
            first_started = time.perf_counter()
        metrics, counts = trainer.step(state.step)
        state.step += 1
        step = state.step
        pending.append((step, metrics, counts))
        if segment_start is None:  # the first generation compiles: keep it out of the clock
            jax.block_until_ready(trainer.arrays())
            state.compile_seconds += time.perf_counter() - first_started
            segment_start, segment_steps = time.perf_counter(), 0
        else:
            segment_steps += 1
        last = budget.steps and step >= budget.steps
        eval_due = bool(eval_every) and step % eval_every == 0 and not last
        save_due = bool(checkpoint_every) and step % checkpoint_every == 0
        must_sync = step % log_every == 0 or eval_due or save_due or last
        must_sync = must_sync or bool(budget.env_steps)
        stop = goal = False
        if must_sync:
            rows = sync()
            for row in rows:
                stop = bool(_notify(callbacks, "on_record", row)) or stop
            if eval_due:
                metrics_eval = trainer.evaluate(step, final=False)
                last_eval = evaluation_row(step, False, metrics_eval)
                log.write(last_eval)
                stop = bool(_notify(callbacks, "on_evaluation", last_eval)) or stop
                goal = bool(_option(trainer, "goal_reached", lambda _: False)(metrics_eval))
            if save_due:
                save()
            if describe is not None and rows:
                bar.set_postfix_str(describe(rows[-1], last_eval))
            segment_start = time.perf_counter()  # evaluation and saving are not training
        bar.update((state.train_seconds - bar.n if must_sync else 0) if by_time else 1)
        stopped_by = "goal" if goal else "callback" if stop else None
        stopped_by = stopped_by or budget.reached(step, state.train_seconds, state.totals)
    if pending:
        sync()
    bar.close()

    final = state.evaluations.get("final")
    if final is None or final["step"] != state.step:  # a resumed finished run keeps its own
        same = last_eval is not None and last_eval["step"] == state.step
        if same and not _option(trainer, "final_differs", False):
            metrics = {k: last_eval[k] for k in last_eval if k not in ("step", "seconds")}
            metrics = {k: v for k, v in metrics.items() if k not in state.totals}
        else:
            metrics = trainer.evaluate(state.step, final=True)
        final = {"step": state.step, **metrics}
        state.evaluations["final"] = final
    final_row = evaluation_row(state.step, True, {k: v for k, v in final.items() if k != "step"})
    log.write(final_row)
    _notify(callbacks, "on_evaluation", final_row)
    save()

    result = LoopResult(
        run_dir=run_dir,
        step=state.step,
        totals=dict(state.totals),
        train_seconds=state.train_seconds,
        timed_steps=state.timed_steps,
        compile_seconds=state.compile_seconds,
        stopped_by=stopped_by,
        evaluations=dict(state.evaluations),
        records=read_jsonl(log.path) if main else [],
    )
    summary = dict(trainer.summary(result))
    summary.update(
        steps=state.step,
        **{k: v for k, v in state.totals.items()},
        train_seconds=round(state.train_seconds, 2),
        compile_seconds=round(state.compile_seconds, 2),
        stopped_by=stopped_by,
        devices=jax.device_count(),
        processes=jax.process_count(),
        run_dir=str(run_dir),
    )
    if config is not None:
        summary["config"] = config
    if main and plot is not None:
        summary["curve"] = _try_plot(plot, run_dir, say)
    summary["wall_seconds"] = round(time.perf_counter() - started, 2)
    if main:
        write_summary(run_dir, summary)
    return summary


def _reopen(trainer: Trainer, state: _Progress, budget: Budget, eval_every: int, log) -> None:
    """Continue a finished run as if it had never stopped: its final row was dropped from the
    log, so write the periodic evaluation an uninterrupted run has at this step."""
    final = state.evaluations.get("final")
    step = state.step
    finished = final is not None and final["step"] == step
    due = bool(eval_every) and step % eval_every == 0
    if not finished or not due or budget.reached(step, state.train_seconds, state.totals):
        return
    if _option(trainer, "final_differs", False):
        metrics = trainer.evaluate(step, final=False)
    else:
        metrics = {k: v for k, v in final.items() if k != "step"}
    row = {"step": step, **state.totals, "seconds": state.train_seconds, **metrics}
    log.write(row)


def _host_value(value: Any) -> Any:
    value = jax.device_get(value)
    if hasattr(value, "item"):
        value = value.item()
    return value


def _guard(step: int, metrics: dict[str, Any], finite: tuple[str, ...], path: Path) -> None:
    """Stop before a poisoned state is written: the engine skipped a non-finite update
    (``step_skipped``), or a metric that must be finite is not."""
    bad = [k for k in finite if k in metrics and not math.isfinite(float(metrics[k]))]
    if metrics.get("step_skipped"):
        sigma = metrics.get("sigma")
        cause = (
            f"σ = {sigma} at this generation (a σ schedule must stay > 0 and finite)"
            if sigma is not None and not (math.isfinite(sigma) and sigma > 0)
            else "a non-finite update (learning rate too large, or non-finite scores only)"
        )
        raise TrainingError(
            f"generation {step}: the update was skipped because of {cause}; the parameters are "
            f"those of generation {step - 1} and the last checkpoint ({path}) is intact. Fix the "
            "setting and start again, or --resume from the checkpoint with it fixed"
        )
    if bad:
        raise TrainingError(
            f"generation {step}: {', '.join(f'{k} = {metrics[k]}' for k in bad)} is not finite: "
            f"training diverged (lower the learning rate); the last checkpoint ({path}) is intact"
        )


def _notify(callbacks: list[Callback], hook: str, record: dict[str, Any]) -> bool:
    stop = False
    for callback in callbacks:
        stop = bool(getattr(callback, hook)(record)) or stop
    return stop


def _try_plot(plot: Callable[[Path], Path], run_dir: Path, say) -> str | None:
    """Draw the run's curve; a failed plot is reported but never loses the run's numbers."""
    try:
        return str(plot(run_dir))
    except Exception as err:  # noqa: BLE001 - any plotting error is only reported
        say(f"plotting failed: {err}")
        return None
