"""Pieces every entry point in scripts/ shares: typed configs on the command line, run folders,
JSONL metrics, summaries and the progress bar."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from eggroll.checkpoint import write_atomic
from eggroll.train.cluster import ClusterFlags, run_guarded, start_cluster  # noqa: F401


def _field_type(field: dataclasses.Field, hints: dict[str, Any]) -> type:
    hint = hints[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def parse_config(cls: type, argv: list[str] | None, description: str):
    """Build an ``argparse`` CLI from a dataclass: one ``--flag-name`` per field, typed from the
    annotation, help from ``metadata["help"]``; booleans get ``--flag/--no-flag``. Returns an
    instance of ``cls`` (its ``__post_init__`` validates values)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(field, hints)
        help_text = field.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text
            )
        else:
            parser.add_argument(flag, type=kind, default=field.default, help=help_text)
    args = parser.parse_args(argv)
    try:
        return cls(**vars(args))
    except ValueError as err:
        parser.error(str(err))


def arg(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's keyword
    """A dataclass field with a default and a help text for the command line."""
    return dataclasses.field(default=default, metadata={"help": help})


class JsonlLog:
    """Append-only JSON-lines metrics file (one object per line, flushed each write)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (a torn last line from a killed run is skipped)."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_jsonl(path: Path, keep: typing.Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite a JSONL log keeping only the records ``keep`` accepts (used on resume)."""
    if path.exists():
        kept = [r for r in read_jsonl(path) if keep(r)]
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def write_summary(run_dir: Path, summary: dict[str, Any]) -> str:
    """Write ``summary.json`` atomically and return its one-line JSON text."""
    line = json.dumps(_jsonable(summary))
    write_atomic(
        run_dir / "summary.json", (json.dumps(_jsonable(summary), indent=2) + "\n").encode()
    )
    return line


def config_dict(config: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(config).items()}


def is_interactive() -> bool:
    return os.environ.get("CI") is None


def check_run_dir(run_dir: Path, resume: bool, checkpoint_name: str) -> Path:
    """The checkpoint path of a run folder; refuses to overwrite a run without ``--resume``
    and to resume a run that has no checkpoint (before anything is written)."""
    checkpoint_path = run_dir / checkpoint_name
    if checkpoint_path.exists() and not resume:
        raise SystemExit(
            f"{run_dir} already holds a checkpoint: pass --resume to continue it, or choose "
            "another --run-dir"
        )
    if resume and not checkpoint_path.exists():
        raise SystemExit(f"--resume: no checkpoint at {checkpoint_path}")
    return checkpoint_path


def try_plot(plot: typing.Callable[[Path], Path], run_dir: Path, say) -> str | None:
    """Draw the run's curve; a failed plot is reported but never loses the run's numbers."""
    try:
        return str(plot(run_dir))
    except Exception as err:  # noqa: BLE001 - any plotting error is only reported
        say(f"plotting failed: {err}")
        return None
