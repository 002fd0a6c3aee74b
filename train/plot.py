"""Learning-curve PNGs from a run's metrics.jsonl.

eggroll plot runs/pretrain            # writes runs/pretrain/curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eggroll.train.loop import read_jsonl  # noqa: E402


def _records(run_dir: Path) -> list[dict]:
    """The run's ``metrics.jsonl`` records; an error naming the file if there are none."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no records to plot")
    return records


def _series(ax, rows: list[dict], x: str, y: str, *style: str, **kwargs) -> None:
    """Plot ``y`` against ``x`` over the records ``rows``."""
    ax.plot([r[x] for r in rows], [r[y] for r in rows], *style, **kwargs)


def _save(fig, ax, out: Path, xlabel: str, ylabel: str, title: str, fontsize=None) -> Path:
    """Label, grid, legend, write ``out`` (folders made) and close the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_pretrain(run_dir: Path, out: Path | None = None) -> Path:
    """Train and validation bits/byte against training tokens, baselines as horizontal lines."""
    records = _records(run_dir)
    train = [r for r in records if r.get("train_bits_per_byte") is not None]
    valid = [r for r in records if r.get("valid_bits_per_byte") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _series(
        ax,
        train,
        "tokens",
        "train_bits_per_byte",
        lw=1,
        alpha=0.7,
        label="train (perturbed members)",
    )
    _series(ax, valid, "tokens", "valid_bits_per_byte", "o-", lw=2, label="validation (mean model)")
    baselines_path = run_dir / "baselines.json"
    if baselines_path.exists():
        styles = {"unigram": ":", "bigram": "--", "lzma": "-."}
        for name, value in json.loads(baselines_path.read_text()).items():
            ax.axhline(value, color="gray", ls=styles.get(name, ":"), lw=1)
            ax.annotate(
                f"{name} {value:.2f}",
                (0.99, value),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=8,
                color="gray",
            )
    return _save(
        fig,
        ax,
        out or run_dir / "curve.png",
        "training tokens (bytes read from the data streams)",
        "bits / byte",
        f"EGG int8 LM, ES pretraining: {run_dir.name}",
    )


def plot_rl(run_dir: Path, out: Path | None = None) -> Path:
    """Evaluation return (mean ± std over 32 episodes) and population mean fitness against
    environment steps."""
    records = _records(run_dir)
    evals = [r for r in records if r.get("eval_return") is not None]
    train = [r for r in records if r.get("fitness_mean") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _series(ax, train, "env_steps", "fitness_mean", lw=1, alpha=0.6, label="population mean return")
    steps = [r["env_steps"] for r in evals]
    mean = [r["eval_return"] for r in evals]
    std = [r.get("eval_return_std") or 0.0 for r in evals]
    ax.plot(steps, mean, "o-", lw=2, label="mean policy (32 episodes)")
    ax.fill_between(
        steps,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        alpha=0.2,
    )
    return _save(fig, ax, out or run_dir / "curve.png", "environment steps", "return", run_dir.name)


def plot_finetune(run_dir: Path, out: Path | None = None) -> Path:
    """LLM fine-tuning: held-out accuracy (greedy, unperturbed model) and the per-generation
    diagnostics (mean correctness and format reward of the population's answers, identical
    antithetic pairs) against training seconds."""
    records = _records(run_dir)
    evals = [r for r in records if r.get("eval_accuracy") is not None]
    train = [r for r in records if r.get("correct_mean") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    seconds = [r["seconds"] for r in train]
    for key, label, style in (
        ("correct_mean", "answers correct (population)", "-"),
        ("format_mean", "answers well-formed (population)", "--"),
        ("identical_pairs", "identical antithetic pairs", ":"),
    ):
        ax.plot(seconds, _smooth([r[key] for r in train]), style, lw=1, alpha=0.7, label=label)
    _series(ax, evals, "seconds", "eval_accuracy", "o-", lw=2, label="held-out accuracy (greedy)")
    ax.set_ylim(-0.02, 1.02)
    return _save(
        fig,
        ax,
        out or run_dir / "curve.png",
        "training seconds (evaluation excluded)",
        "fraction",
        f"LLM fine-tuning: {run_dir.name}",
        fontsize=8,
    )


def plot_finetune_compare(runs: dict[str, Path], out: Path, title: str = "") -> Path:
    """Held-out accuracy against training seconds for several fine-tuning runs in one PNG
    (e.g. EGGROLL and GRPO at equal wall-clock)."""
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, run_dir in runs.items():
        evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval_accuracy" in r]
        if not evals:
            raise ValueError(f"{run_dir / 'metrics.jsonl'} has no held-out accuracy to plot")
        _series(ax, evals, "seconds", "eval_accuracy", "o-", ms=3, lw=2, label=label)
    ax.set_ylim(-0.02, 1.02)
    return _save(
        fig,
        ax,
        out,
        "training seconds (evaluation excluded)",
        "held-out accuracy (greedy)",
        title or "LLM fine-tuning",
    )


def _on_grid(points: list[tuple[float, float]], grid: np.ndarray) -> np.ndarray:
    """The step function through ``(x, y)`` points (x ascending) read at ``grid``: each grid
    point takes the last value at or before it (the first value before the first point)."""
    xs = np.array([x for x, _ in points])
    ys = np.array([y for _, y in points])
    return ys[np.clip(np.searchsorted(xs, grid, side="right") - 1, 0, len(xs) - 1)]


def _mean_and_range(ax, series: list[list[tuple[float, float]]], *style, **kwargs) -> None:
    """Mean of several step curves on a common grid of 100 points, their range shaded."""
    series = [s for s in series if s]
    if not series:
        return
    grid = np.linspace(0.0, max(s[-1][0] for s in series), 100)
    ys = np.array([_on_grid(s, grid) for s in series])
    (line,) = ax.plot(grid, ys.mean(0), *style, **kwargs)
    ax.fill_between(grid, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15, lw=0)


def plot_finetune_seeds(groups: dict[str, list[dict]], out: Path, title: str = "") -> Path:
    """The fine-tuning comparison over seeds (``eggroll compare finetune``), one colour per
    group (``label -> cells``, the cells of ``eggroll.train.compare``): held-out accuracy, the
    identical-pair rate, the signal-group rate and the population's correct (solid) and
    well-formed (dashed) answer rates against training seconds; each line is the mean over
    the group's seeds and the shading their range."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=110)
    panels = (
        (axes[0, 0], "held-out accuracy (greedy)"),
        (axes[0, 1], "identical answer pairs"),
        (axes[1, 0], "prompts with signal (answers scored differently)"),
        (axes[1, 1], "answers correct (solid) / well-formed (dashed)"),
    )
    for index, (label, cells) in enumerate(groups.items()):
        color = f"C{index % 10}"
        name = f"{label} ({len(cells)} seeds)"
        evals = [[(p[0], p[2]) for p in c["curve"]] for c in cells]
        _mean_and_range(axes[0, 0], evals, "-", color=color, lw=2, label=name)
        curves = [c.get("diagnostics_curve") or {} for c in cells]
        for ax, key, style in (
            (axes[0, 1], "identical_pairs", "-"),
            (axes[1, 0], "signal_groups", "-"),
            (axes[1, 1], "correct_mean", "-"),
            (axes[1, 1], "format_mean", "--"),
        ):
            series = [list(zip(d["seconds"], d[key], strict=True)) for d in curves if key in d]
            _mean_and_range(ax, series, style, color=color, lw=1.5, label=name)
    for ax, ylabel in panels:
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training seconds (evaluation excluded)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "LLM fine-tuning over seeds", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _smooth(values: list[float], window: int = 20) -> list[float]:
    """Trailing moving average (per-generation rewards are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(argv: list[str] | None = None, prog: str = "eggroll plot") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    records = read_jsonl(args.run_dir / "metrics.jsonl")
    if any("eval_accuracy" in r for r in records):
        print(plot_finetune(args.run_dir, args.out))
        return
    is_rl = any("eval_return" in r or "env_steps" in r for r in records)
    print((plot_rl if is_rl else plot_pretrain)(args.run_dir, args.out))


if __name__ == "__main__":
    main()
