"""The ``eggroll`` command: installed as a console script, ``--help``, and settings refused
with exit code 2 and one error line (no traceback) before anything runs."""

import importlib.metadata
import runpy
import shutil
import subprocess
import sys

import pytest

from eggroll.train import cli
from tests.train.helpers import SCRIPTS, subprocess_env


def eggroll_command() -> list[str]:
    """The installed ``eggroll`` command, or the module it runs when it is not on PATH."""
    found = shutil.which("eggroll")
    return [found] if found else [sys.executable, "-m", "eggroll.train.cli"]


def test_the_console_script_is_declared():
    (entry,) = [
        e
        for e in importlib.metadata.distribution("eggroll-jax").entry_points
        if e.group == "console_scripts" and e.name == "eggroll"
    ]
    assert entry.value == "eggroll.train.cli:main"
    assert entry.load() is cli.main


def test_eggroll_help_lists_the_commands(tmp_path):
    for command in (eggroll_command(), [sys.executable, "-m", "eggroll.train.cli"]):
        done = subprocess.run(
            [*command, "--help"],
            env=subprocess_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        for name in ("pretrain", "rl", "finetune", "lm", "compare", "bench", "plot"):
            assert f"eggroll {name}" in done.stdout, name


def test_a_bad_flag_exits_2_with_one_error_line_and_no_traceback(tmp_path):
    done = subprocess.run(
        [*eggroll_command(), "rl", "--population", "3"],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1  # one line: no usage block, no traceback
    assert lines[0].startswith("eggroll rl: error: --population must be even (antithetic pairs)")
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize(
    ("application", "flag", "value"),
    [
        ("pretrain", "--minutes", "nan"),
        ("pretrain", "--alpha", "inf"),
        ("rl", "--lr", "inf"),
        ("rl", "--seconds", "nan"),
        ("lm", "--clip", "-inf"),
        ("finetune", "--format-weight", "nan"),
    ],
)
def test_non_finite_numbers_are_refused_with_exit_2(application, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run_application(application, [f"{flag}={value}"])
    assert exit_.value.code == 2
    message = f"eggroll {application}: error: {flag} must be a finite number, got {value}"
    assert message in capsys.readouterr().err


def test_main_dispatches_and_refuses_an_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "eggroll pretrain" in capsys.readouterr().out
    assert cli.main(["pretrian"]) == 2
    assert "unknown command 'pretrian'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["rl", "--population", "3"])
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("es_pretrain", ["--steps", "0"], "es_pretrain.py: error: --steps must be ≥ 1, got 0"),
        ("rl_train", ["--population", "3"], "rl_train.py: error: --population must be even"),
        ("llm_pretrain", ["--steps", "0"], "error: --steps must be ≥ 1, got 0"),
        ("llm_finetune", ["--group", "3"], "llm_finetune.py: error: --group must be even"),
    ],
)
def test_the_scripts_are_the_same_commands(script, flags, message, monkeypatch, capsys):
    """scripts/*.py parse the same flags (under their own name) and refuse the same way."""
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *flags])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(SCRIPTS / f"{script}.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
