"""What the benchmarks share: the machine line, timing, the results files and the rows they
hold, the dense-layer generation that several of them time, XLA's memory figure and the EGG
LM inputs.

Where results go: ``<root>/results/<name>.json``, where ``<root>`` is the source checkout that
holds this package (``benchmarks/`` next to ``pyproject.toml`` and ``scripts/bench.py``: an
editable install or a run from the checkout, the same folder ``scripts/bench.py`` always used)
and otherwise the current working directory. ``--results-dir`` overrides it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

import eggroll as egg

# The command a results file records, and the one the report names for a file without it.
SCRIPT = "python scripts/bench.py"


def checkout_root() -> Path:
    """The source checkout this package lives in, else the current working directory."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "scripts" / "bench.py").is_file():
        return root
    return Path.cwd()


def default_results_dir() -> Path:
    return checkout_root() / "results"


def results_path(results_dir: Path | str, name: str, keys: bool = False) -> Path:
    """``NAME.json``, or ``NAME-keys.json`` for a run with threefry-key noise (it keeps its own
    file, next to the default (table) one)."""
    return Path(results_dir) / f"{name}{'-keys' if keys else ''}.json"


def write_result(path: Path, result: dict) -> None:
    """Write a results file atomically (temp file + rename): a resumable bench rewrites it
    after every cell, and a kill mid-write must not lose the finished cells."""
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    print(f"wrote {path}")


def read_result(path: Path) -> dict:
    return json.loads(path.read_text())


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_seconds(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls alternated in one loop (after one warm-up call
    each), so a machine that slows down mid-run slows every contender alike."""
    jax.block_until_ready([call() for call in calls.values()])
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def add_row(rows: list[dict], row: dict, line: str) -> None:
    """Append ``row`` to ``rows`` and print its progress line: ``line`` formatted with the
    row's entries (``str.format`` fields named by its keys)."""
    rows.append(row)
    print(line.format_map(row), flush=True)


def make_result(name: str, rows: list[dict], **fields) -> dict:
    """What a benchmark's results file holds: its name, the machine, ``fields``, the rows."""
    return {"benchmark": name, "machine": machine_info(), **fields, "rows": rows}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def dense_layer_fitness(view: dict, x: jax.Array) -> jax.Array:
    """One dense layer on this member's input row ``x (width,)``."""
    return jnp.sum(jnp.tanh(egg.nn.dense(x, view["w"])))


def layers_fitness(view: dict, x: jax.Array) -> jax.Array:
    """A stack of tanh dense layers ``w0, w1, ...`` on this member's input row."""
    for i in range(len(view)):
        x = jnp.tanh(egg.nn.dense(x, view[f"w{i}"]))
    return jnp.sum(x)


def layer_params(width: int, depth: int) -> dict:
    keys = jax.random.split(jax.random.key(0), depth)
    return {
        f"w{i}": jax.random.normal(k, (width, width)) / jnp.sqrt(width) for i, k in enumerate(keys)
    }


def generation_step(strategy: egg.Strategy, width: int, depth: int = 1):
    """A jitted generation (every member's forward on its own input row + ``tell``) and its
    initial state, for a stack of ``depth`` square layers."""
    params = {"w": layer_params(width, 1)["w0"]} if depth == 1 else layer_params(width, depth)
    fitness = dense_layer_fitness if depth == 1 else layers_fitness
    x = jax.random.normal(jax.random.key(1), (strategy.population_size, width))
    state = strategy.init(jax.random.key(2), params)
    step = jax.jit(lambda s: strategy.step(s, fitness, x, in_axes=0)[0])
    return step, state


def generation_seconds(strategy: egg.Strategy, width: int, repeats: int, depth: int = 1) -> float:
    step, state = generation_step(strategy, width, depth)
    return time_call(lambda: step(state), repeats)


def xla_peak_bytes(step, state) -> int:
    """Bytes XLA assigns to one compiled call: arguments + outputs + temporaries − aliased
    (the static buffer assignment, the same on every run)."""
    return xla_memory(step.lower(state).compile())["total"]


def status_bytes(field: str) -> int | None:
    """``VmHWM``/``VmRSS`` of this process in bytes (Linux), else ``None``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return 1024 * int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux ``clear_refs`` 5); ``False`` where unsupported (the
    peak is then the process's peak so far)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The peak resident set since the last :func:`reset_peak_rss` (else since start)."""
    peak = status_bytes("VmHWM")
    if peak is not None:
        return peak
    return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB


def xla_memory(compiled) -> dict:
    """XLA's static buffer assignment of one compiled call, in bytes."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    out = {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
    }
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def device_memory() -> dict | None:
    """``jax.devices()[0].memory_stats()`` (``None`` on a CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    keys = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keys if k in stats}


def egg_lm_setup(population: int, width: int, layers: int, seq_len: int):
    """Parameters and per-member inputs of the EGG int8 LM (``eggroll.models.egglm``):
    ``(params, tokens (N, seq_len + 1) uint8, resets (N, seq_len), hidden (N, layers, width))``."""
    from eggroll.models import egglm

    config = egglm.EggConfig(width=width, layers=layers)
    params = egglm.init_params(jax.random.key(0), config)
    tokens = jax.random.randint(jax.random.key(2), (population, seq_len + 1), 0, 256)
    resets = jnp.zeros((population, seq_len), bool)
    hidden = jnp.zeros((population, layers, width), jnp.int8)
    return params, tokens.astype(jnp.uint8), resets, hidden
