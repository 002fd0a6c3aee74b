"""Typed configs: dataclass fields with help texts, generic checks, and a command line built
from a dataclass (one ``--flag-name`` per field)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from typing import Any


def arg(default: Any, help: str, cli_type: type | None = None) -> Any:  # noqa: A002
    """A dataclass field with a default and a help text for the command line.

    ``cli_type`` is the type the command line parses when the annotation is wider (an
    environment object or its gymnax id, a task object or its name)."""
    metadata = {"help": help}
    if cli_type is not None:
        metadata["cli_type"] = cli_type
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line spelling of a config field: ``seq_len`` → ``--seq-len``."""
    return "--" + name.replace("_", "-")


def check_positive(config: Any, names: typing.Iterable[str]) -> None:
    """Raise ``ValueError`` naming the first field of ``names`` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{flag(name)} must be ≥ 1, got {getattr(config, name)}")


def check_finite(config: Any) -> None:
    """Every real-valued field (not ``None``) must be a finite number: ``--minutes nan`` or
    ``--lr inf`` are refused before anything runs."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if not math.isfinite(value):
            raise ValueError(f"{flag(field.name)} must be a finite number, got {value}")


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{flag(name)} must be one of {choices}, got {value!r}")


def _cli_type(field: dataclasses.Field, hints: dict[str, Any]) -> type:
    if "cli_type" in field.metadata:
        return field.metadata["cli_type"]
    hint = hints[field.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line, ``PROG: error: MESSAGE`` (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass ``cls``; booleans get ``--flag/--no-flag``."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init or field.metadata.get("cli") is False:
            continue
        kind = _cli_type(field, hints)
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        if kind is bool:
            action = argparse.BooleanOptionalAction
            parser.add_argument(flag(field.name), action=action, default=default, help=help_text)
        else:
            parser.add_argument(flag(field.name), type=kind, default=default, help=help_text)


def from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """An instance of the dataclass ``cls`` from the parsed options that name its fields."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})


def config_record(config: Any, **overrides: Any) -> dict[str, Any]:
    """The JSON-able record of a config for checkpoints and summaries: fields as they are,
    objects that are not plain data (an environment, a task, a function) by their type name."""
    record = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        plain = value is None or isinstance(value, str | int | float | bool | list | tuple)
        record[field.name] = value if plain else f"<{type(value).__name__}>"
    record.update(overrides)
    return record


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The settings every application's ``Config`` shares (the run folder and its loop)."""

    run_dir: str = arg("", "run folder (default: runs/<application>-<date>-<time>)")
    resume: bool = arg(False, "continue the run in --run-dir from its checkpoint")
    seed: int = arg(0, "seed for parameters, noise, data and episodes")
    checkpoint_every: int = arg(500, "generations between checkpoints (and at the end)")
    progress: bool = arg(True, "show a progress bar")

    def loop_options(self, **record: Any) -> dict[str, Any]:
        """The keyword arguments of :func:`eggroll.train.loop.run_loop` these settings give;
        ``record`` overrides entries of the config record (e.g. an environment's name)."""
        check_positive(self, ("checkpoint_every",))
        return {
            "resume": self.resume,
            "checkpoint_every": self.checkpoint_every,
            "progress": self.progress,
            "config": config_record(self, **record),
        }
