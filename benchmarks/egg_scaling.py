"""The EGG LM at the paper's size against population: training tokens/s (one whole generation
of ``eggroll.train.pretrain``) beside plain inference tokens/s on the same tokens, and memory.

    python scripts/bench.py egg-scaling [--populations 1024 4096 16384 65536] [--resume]

The model is ``pretrain.Config.from_preset("paper")`` (6 layers × 256, 100 tokens per member,
antithetic pairs per stream, the preset's member slices for this backend); ``--width``,
``--layers``, ``--tokens`` and ``--member-batch`` override it (small sizes for tests). Each
population is one cell: the generation (``pretrain.make_step``: every member's perturbed
forward over its tokens + ``tell``) and the unperturbed model over the same member tokens in
the same slices (``egglm.batch_loss_bits``) are compiled ahead of time, then timed alternately
in one loop (medians). A cell also records XLA's buffer sizes of both compiled calls, the
device's own memory figures where the backend has them, and the process's peak resident set
during the cell; each divided by the population shows whether memory per member is constant.

Tokens are member tokens, ``population × tokens`` per generation, for both contenders. The
results file is rewritten after every cell; ``--resume`` keeps the cells of an earlier run with
the same settings and measures only the missing populations. ``--compile-only`` populations
are compiled for their memory figures but not run (a generation that would take too long).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from eggroll.benchmarks import common

NAME = "egg-scaling"
HELP = "EGG LM (paper size): training vs inference tokens/s and memory against population"
NOISE_VARIANT = False

FLAT_FROM, FLAT_TO = 1 << 12, 1 << 16  # the flatness goal's populations
FLAT_GOAL = 1.15  # max / min training tokens/s over them
SHARE_GOAL = 0.80  # training tokens/s as a share of inference

COLUMNS = [
    "population",
    "train tok/s",
    "inference tok/s",
    "train / inference",
    "fastest-call ratio",
    "train s",
    "inference s",
    "XLA MiB",
    "XLA B / member",
    "XLA Δ B / added member",
    "peak RSS MiB",
    "RSS growth B / member",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--populations", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument(
        "--compile-only",
        type=int,
        nargs="+",
        default=[],
        help="populations compiled for XLA's memory figures only, not run",
    )
    p.add_argument("--repeats", type=int, default=2, help="timed generations per population")
    p.add_argument(
        "--warmup-max-population",
        type=int,
        default=4096,
        help="populations up to this get one untimed call of each contender after compiling; "
        "larger ones are timed from their first call (a warm-up would cost minutes)",
    )
    p.add_argument("--width", type=int, default=None, help="override the preset's width")
    p.add_argument("--layers", type=int, default=None, help="override the preset's layers")
    p.add_argument("--tokens", type=int, default=None, help="tokens per member (preset: 100)")
    p.add_argument(
        "--member-batch", type=int, default=None, help="members per slice (preset: by backend)"
    )
    p.add_argument(
        "--flat-from",
        type=int,
        default=FLAT_FROM,
        help="smallest population of the flatness goal (default 2^12)",
    )
    p.add_argument("--resume", action="store_true", help="keep done cells of the results file")


def paper_config(args: argparse.Namespace, population: int):
    """``pretrain.Config.from_preset("paper")`` at ``population``, with the size flags."""
    from eggroll.train import pretrain

    changes = {"population": population}
    for flag, field in (
        ("width", "width"),
        ("layers", "layers"),
        ("tokens", "seq_len"),
        ("member_batch", "member_batch"),
    ):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    return pretrain.Config.from_preset("paper", **changes)


def settings(args: argparse.Namespace) -> dict:
    """What must match for ``--resume`` to keep an earlier run's cells."""
    config = paper_config(args, 2)
    return {
        "preset": "paper",
        "width": config.width,
        "layers": config.layers,
        "tokens_per_member": config.seq_len,
        "group_size": config.group_size,
        "member_slice": config.member_slice,
        "noise": config.noise,
        "rank": config.rank,
        "backend": jax.default_backend(),
    }


def measure(args: argparse.Namespace, population: int, timed: bool) -> dict:
    """One cell: compile the generation and the inference at ``population``; if ``timed``,
    run them alternately (medians of ``args.repeats``)."""
    from eggroll.models import egglm
    from eggroll.train import pretrain

    gc.collect()
    rss_before = common.status_bytes("VmRSS")
    peak_window = common.reset_peak_rss()
    config = paper_config(args, population)
    es = pretrain.make_strategy(config)
    step = pretrain.make_step(es, config.group_size)
    params = egglm.init_params(jax.random.key(1), config.model)
    state = es.init(jax.random.key(0), params)
    shape = (config.streams, config.seq_len + 1)
    tokens = jax.random.randint(jax.random.key(2), shape, 0, 256).astype(jnp.uint8)
    resets = jnp.zeros((config.streams, config.seq_len), bool)
    hidden = jnp.zeros((population, config.layers, config.width), jnp.int8)
    member_tokens = jnp.repeat(tokens, config.group_size, axis=0)
    member_resets = jnp.repeat(resets, config.group_size, axis=0)
    forward = jax.jit(functools.partial(egglm.batch_loss_bits, slice_size=config.member_slice))

    started = time.perf_counter()
    train = step.lower(state, hidden, tokens, resets).compile()
    compile_train = time.perf_counter() - started
    started = time.perf_counter()
    infer = forward.lower(state.params, member_tokens, member_resets, hidden).compile()
    compile_infer = time.perf_counter() - started
    cell = {
        "population": population,
        "timed": timed,
        "streams": config.streams,
        "member_slice": config.member_slice,
        "tokens_per_generation": population * config.seq_len,
        "compile_train_s": round(compile_train, 2),
        "compile_inference_s": round(compile_infer, 2),
        "xla_train_bytes": common.xla_memory(train),
        "xla_inference_bytes": common.xla_memory(infer),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if timed:
        calls = {
            "train": lambda: train(state, hidden, tokens, resets),
            "inference": lambda: infer(state.params, member_tokens, member_resets, hidden),
        }
        warm = population <= args.warmup_max_population
        if warm:
            jax.block_until_ready([call() for call in calls.values()])
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                jax.block_until_ready(call())
                times[name].append(time.perf_counter() - started)
        train_s = statistics.median(times["train"])
        infer_s = statistics.median(times["inference"])
        count = population * config.seq_len
        cell.update(
            warmup_call=warm,
            train_times_s=[round(t, 3) for t in times["train"]],
            inference_times_s=[round(t, 3) for t in times["inference"]],
            train_s=round(train_s, 3),
            inference_s=round(infer_s, 3),
            train_tokens_per_s=round(count / train_s, 1),
            inference_tokens_per_s=round(count / infer_s, 1),
            train_over_inference=round(infer_s / train_s, 3),
        )
    peak = common.peak_rss_bytes()
    cell.update(
        device_memory=common.device_memory(),
        rss_before_bytes=rss_before,
        peak_rss_bytes=peak,
        peak_rss_window="cell" if peak_window else "process",
    )
    total = cell["xla_train_bytes"].get("total")
    cell["xla_train_bytes_per_member"] = round(total / population, 1) if total else None
    if rss_before is not None and peak_window:
        cell["rss_growth_bytes_per_member"] = round((peak - rss_before) / population, 1)
    return cell


def goals(rows: list[dict], flat_from: int) -> dict:
    """The flatness and share goals from the timed cells."""
    timed = sorted((r for r in rows if r.get("timed")), key=lambda r: r["population"])
    flat = [r for r in timed if flat_from <= r["population"] <= FLAT_TO]
    out: dict = {"flat_from": flat_from, "flat_to": FLAT_TO}
    if len(flat) >= 2:
        speeds = [r["train_tokens_per_s"] for r in flat]
        spread = max(speeds) / min(speeds)
        out["flatness"] = {
            "populations": [r["population"] for r in flat],
            "max_over_min": round(spread, 3),
            "goal": FLAT_GOAL,
            "met": spread <= FLAT_GOAL,
        }
    if timed:
        worst = min(timed, key=lambda r: r["train_over_inference"])
        share = worst["train_over_inference"]
        out["share"] = {
            "min_train_over_inference": share,
            "at_population": worst["population"],
            "goal": SHARE_GOAL,
            "met": share >= SHARE_GOAL,
        }
    return out


def marginal_bytes(rows: list[dict]) -> None:
    """Set each row's ``xla_train_marginal_bytes_per_member``: the growth of XLA's bytes from
    the previous (smaller) population, per added member (the fixed part, the parameters and a
    slice's activations, drops out; constant when memory is linear in N)."""
    previous = None
    for row in rows:
        total = row["xla_train_bytes"].get("total")
        row["xla_train_marginal_bytes_per_member"] = None
        if previous is not None and total and row["population"] > previous[0]:
            grow = (total - previous[1]) / (row["population"] - previous[0])
            row["xla_train_marginal_bytes_per_member"] = round(grow, 1)
        if total:
            previous = (row["population"], total)


def _result(args: argparse.Namespace, rows: list[dict], complete: bool) -> dict:
    rows = sorted(rows, key=lambda r: (r["population"], not r["timed"]))
    marginal_bytes(rows)
    return common.make_result(
        NAME,
        rows,
        settings=settings(args),
        repeats=args.repeats,
        warmup_max_population=args.warmup_max_population,
        complete=complete,
        goals=goals(rows, args.flat_from),
    )


def _earlier_rows(path: Path, want: dict) -> list[dict]:
    if not path.exists():
        return []
    earlier = common.read_result(path)
    if earlier.get("settings") != want:
        raise SystemExit(
            f"--resume: {path} was measured with {earlier.get('settings')}, not {want}; "
            "run without --resume to start over"
        )
    return list(earlier.get("rows", []))


def _progress(cell: dict) -> str:
    line = f"egg-scaling N={cell['population']:6d}"
    if cell["timed"]:
        line += (
            f"  train {cell['train_tokens_per_s']:9.1f} tok/s ({cell['train_s']:.2f} s)"
            f"  inference {cell['inference_tokens_per_s']:9.1f} tok/s ({cell['inference_s']:.2f} s)"
            f"  ratio {cell['train_over_inference']:.3f}"
        )
    else:
        line += "  compiled only"
    xla = cell["xla_train_bytes"].get("total", 0)
    return line + (
        f"  XLA {xla / 2**20:.1f} MiB ({cell['xla_train_bytes_per_member']} B/member)"
        f"  peak RSS {cell['peak_rss_bytes'] / 2**20:.0f} MiB"
    )


def run(args: argparse.Namespace) -> dict:
    """Measure every population not already done (``--resume``), ascending; the results file
    is rewritten after each cell, so an interrupted sweep keeps what it measured."""
    path = common.results_path(args.results_dir, NAME)
    want = settings(args)
    rows = _earlier_rows(path, want) if args.resume else []
    done = {(r["population"], r["timed"]) for r in rows}
    plan = [(n, True) for n in sorted(set(args.populations))]
    plan += [(n, False) for n in sorted(set(args.compile_only) - set(args.populations))]
    print(f"egg-scaling settings {json.dumps(want)}", flush=True)
    for population, timed in plan:
        if (population, timed) in done:
            print(f"egg-scaling N={population:6d}  done (in {path}), skipped", flush=True)
            continue
        if population % want["group_size"]:
            raise SystemExit(f"population {population} is not a multiple of the group size")
        print(f"egg-scaling N={population:6d}  measuring", flush=True)
        cell = measure(args, population, timed)
        rows = [r for r in rows if (r["population"], r["timed"]) != (population, timed)]
        rows.append(cell)
        print(_progress(cell), flush=True)
        common.write_result(path, _result(args, rows, complete=False))
    result = _result(args, rows, complete=True)
    print("egg-scaling goals", json.dumps(result["goals"]), flush=True)
    return result


def _fastest_ratio(row: dict) -> str:
    """Inference over training seconds of the fastest call of each (less sensitive than the
    medians to a machine that others load now and then)."""
    train, infer = row.get("train_times_s"), row.get("inference_times_s")
    if not train or not infer or min(train) <= 0:
        return ""
    return f"{min(infer) / min(train):.2f}"


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.1f}"


def render(result: dict) -> str:
    s = result["settings"]
    rows = []
    for r in result["rows"]:
        xla = r["xla_train_bytes"].get("total")
        row = {
            "population": r["population"],
            "XLA MiB": _mib(xla),
            "XLA B / member": r.get("xla_train_bytes_per_member", ""),
            "XLA Δ B / added member": r.get("xla_train_marginal_bytes_per_member") or "",
            "peak RSS MiB": _mib(r.get("peak_rss_bytes")),
            "RSS growth B / member": r.get("rss_growth_bytes_per_member", ""),
        }
        if r["timed"]:
            row.update(
                {
                    "train tok/s": f"{r['train_tokens_per_s']:.0f}",
                    "inference tok/s": f"{r['inference_tokens_per_s']:.0f}",
                    "train / inference": f"{r['train_over_inference']:.2f}",
                    "fastest-call ratio": _fastest_ratio(r),
                    "train s": r["train_s"],
                    "inference s": r["inference_s"],
                }
            )
        else:
            row["train tok/s"] = "(compiled only)"
        rows.append(row)
    slices = f"slices of {s['member_slice']} members" if s["member_slice"] else "one vmap"
    head = (
        f"EGG int8 LM, {s['layers']} layers × {s['width']}, {s['tokens_per_member']} tokens per "
        f"member, pairs per stream, {slices}, backend {s['backend']}; medians of "
        f"{result['repeats']} generations, training and inference alternated (a warm-up call "
        f"of each up to N = {result['warmup_max_population']}). Tokens are member tokens "
        "(N × tokens per generation). XLA: arguments + outputs + temporaries of the compiled "
        "generation (per member: over N; Δ: its growth from the previous row per added "
        "member); RSS growth: peak resident set during the cell (compiling included) over the "
        "set before it, per member."
    )
    g = result["goals"]
    lines = [head, "", common.markdown_table(rows, COLUMNS), ""]
    flat = g.get("flatness")
    if flat:
        pops = ", ".join(str(n) for n in flat["populations"])
        verdict = "met" if flat["met"] else "not met"
        lines.append(
            f"- Flat training tokens/s over N = {g['flat_from']}..{g['flat_to']} (max/min ≤ "
            f"{flat['goal']:.2f}): **{verdict}**, max/min = {flat['max_over_min']:.3f} over "
            f"N = {pops}."
        )
    else:
        lines.append(
            f"- Flat training tokens/s over N = {g['flat_from']}..{g['flat_to']} (max/min ≤ "
            f"{FLAT_GOAL:.2f}): **not measured** (fewer than two timed populations there)."
        )
    share = g.get("share")
    if share:
        verdict = "met" if share["met"] else "not met"
        lines.append(
            f"- Training ≥ {100 * share['goal']:.0f} % of inference tokens/s at every "
            f"population: **{verdict}**, lowest {100 * share['min_train_over_inference']:.1f} % "
            f"(N = {share['at_population']})."
        )
    else:
        lines.append(
            f"- Training ≥ {100 * SHARE_GOAL:.0f} % of inference: **not measured** (no timed "
            "population)."
        )
    if not result.get("complete", True):
        lines.append(
            "- Partial: the sweep has not finished (running or interrupted); `--resume` "
            "measures the rest."
        )
    return "\n".join(lines)
