"""Which noise source should EGGROLL and OpenES use by default: threefry keys or the seed-made
int8 table? Speed, learning at equal generations and the estimator, side by side in one run.

    python scripts/bench.py noise-default            # ~20 min on 2 (shared) cores
    python scripts/bench.py noise-default --quick    # tiny sizes, for the tests

(a) speed: ms per generation (evaluate + tell in one jit) of the reference MLP 64→256³→8,
rank 1, one input per member, −MSE fitness, for each source and plain batched inference, timed
alternately in one loop (medians), at each population; "keys-np" is threefry with
``jax.threefry_partitionable(False)``, the one cheaper exact generator found (``rbg`` keys are
slower on CPU and not exact here: a vmapped draw differs from the per-member one, so ``tell``
would not regenerate what ``evaluate`` saw). (b) learning: the mean policy's return at equal
generations on gymnax CartPole-v1, Acrobot-v1 and Pendulum-v1 with the per-environment defaults
of ``eggroll.train.rl``, over seeds. (c) a classification black box (README style: a small
MLP, accuracy as fitness, population 512, rank 4) on a synthetic teacher-labelled dataset: test
accuracy at equal generations, over seeds. (d) the estimator: the expected overlap of table
slices for the default ``table_size`` and every draw size used here, the measured correlation
between members' factors, the cosine between the ES estimate and the true gradient of a linear
fitness, and the low-rank gap of the quartic test (``tests/eggroll/test_estimator.py``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg
from eggroll import noise as noise_lib
from eggroll.benchmarks.common import machine_info, markdown_table, paired_seconds

NAME = "noise-default"
HELP = "default noise source: keys vs table (speed, RL/classification learning, estimator)"
NOISE_VARIANT = False
SOURCES = ("keys", "table")
STRATEGIES = ("EGGROLL", "OpenES")
SECTIONS = ("speed", "rl", "classification", "estimator")
# Generations per environment (the same for both sources): eggroll.train.rl's defaults, except
# Pendulum-v1 (default 400) cut so that a run stays well under a minute on 2 cores.
RL_GENERATIONS = {"CartPole-v1": 100, "Acrobot-v1": 100, "Pendulum-v1": 150}
REFERENCE_HIDDEN = (256, 256, 256)  # the paper's reference MLP: 64 → 256 → 256 → 256 → 8
# --quick: tiny sizes for the tests (every section runs, both sources are measured).
QUICK = {
    "populations": [64],
    "speed_hidden": [16],
    "repeats": 1,
    "envs": ["CartPole-v1"],
    "seeds": 1,
    "rl_generations": 2,
    "rl_population": 16,
    "rl_hidden": "8",
    "rl_max_steps": 20,
    "eval_every": 1,
    "last_evals": 2,
    "cls_population": 16,
    "cls_generations": 2,
    "cls_points": 64,
    "cls_batch": 32,
    "estimator_populations": [64],
    "estimator_seeds": 2,
    "quartic_population": 256,
    "quartic_ranks": [1],
    "estimator_strategies": ["EGGROLL"],
    "correlation_population": 64,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes (the tests use it)")
    p.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to run"
    )
    p.add_argument("--populations", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--speed-hidden", type=int, nargs="+", default=list(REFERENCE_HIDDEN))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--envs", nargs="+", default=list(RL_GENERATIONS))
    p.add_argument("--seeds", type=int, default=3, help="seeds per task and source")
    p.add_argument(
        "--rl-generations", type=int, default=None, help="generations for every environment"
    )
    p.add_argument("--rl-population", type=int, default=None, help="override rl's default")
    p.add_argument("--rl-hidden", default=None, help="override rl's default, e.g. 64,64")
    p.add_argument("--rl-max-steps", type=int, default=None, help="cap on episode length")
    p.add_argument("--eval-every", type=int, default=5, help="generations between evaluations")
    p.add_argument("--last-evals", type=int, default=4, help="evaluations in the 'last' mean")
    p.add_argument("--cls-population", type=int, default=512)
    p.add_argument("--cls-rank", type=int, default=4)
    p.add_argument("--cls-generations", type=int, default=150)
    p.add_argument("--cls-points", type=int, default=4096, help="training (and test) points")
    p.add_argument("--cls-batch", type=int, default=256, help="training points per generation")
    p.add_argument("--estimator-populations", type=int, nargs="+", default=[1024])
    p.add_argument("--estimator-seeds", type=int, default=8)
    p.add_argument(
        "--estimator-strategies", nargs="+", default=["EGGROLL", "OpenES"], choices=STRATEGIES
    )
    p.add_argument("--quartic-population", type=int, default=32768)
    p.add_argument("--quartic-ranks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--correlation-population", type=int, default=1024)


# ---------------------------------------------------------------------- helpers
def with_noise(es: egg.Strategy, source: str) -> egg.Strategy:
    """The same strategy (class, population, σ, optimiser, shaping, leaf rule, rank, ...) with
    noise source ``source``: how this benchmark sets the source of a strategy that an
    application (``eggroll.train.rl.make_strategy``) built without one."""
    same = ("antithetic", "noise_reuse", "shaping", "leaf_rule", "chunk_size", "table_size")
    kwargs: dict[str, Any] = {name: getattr(es, name) for name in same}
    kwargs.update(eval_batch_size=es.eval_batch_size, noise=source)
    if isinstance(es, egg.EGGROLL):
        kwargs["rank"] = es.rank
    return type(es)(es.population_size, es.sigma, es.optimizer, **kwargs)


def engine_fingerprint() -> str:
    """sha256 (12 hex digits) of the engine files that make and consume the noise: the speed
    numbers belong to this version of them."""
    folder = Path(egg.__file__).parent
    digest = hashlib.sha256()
    for name in ("noise.py", "population.py", "strategy.py"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:12]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def not_worse(keys: tuple[float, float], table: tuple[float, float]) -> bool:
    """The table's ``mean ± std`` is at least as good as, or overlaps, the keys' one."""
    (mk, sk), (mt, st) = keys, table
    return mt >= mk or mt + st >= mk - sk


def fmt(pair: tuple[float, float], digits: int = 1) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def reference_mlp(hidden: tuple[int, ...]):
    from eggroll.models import mlp

    params = mlp.init_params(jax.random.key(0), 64, 8, mlp.MLPConfig(tuple(hidden)))
    return params, mlp.apply


# ---------------------------------------------------------------------- (a) speed
def speed(populations: list[int], hidden: tuple[int, ...], repeats: int) -> list[dict]:
    """ms per generation (evaluate + tell, one jit) for each source and for plain inference,
    timed alternately in one loop after one warm-up call of each (medians)."""
    params, apply = reference_mlp(hidden)

    def fitness(view, x, y):
        return -jnp.mean((apply(view, x) - y) ** 2)

    rows = []
    for n in populations:
        x = jax.random.normal(jax.random.key(1), (n, 64))
        y = jax.random.normal(jax.random.key(3), (n, 8))
        infer = jax.jit(jax.vmap(lambda x, y: fitness(params, x, y)))
        calls: dict[str, Callable[[], object]] = {
            "inference": lambda infer=infer, x=x, y=y: infer(x, y)
        }
        for label, source, partitionable in (
            ("keys", "keys", True),
            ("table", "table", True),
            ("keys-np", "keys", False),
        ):
            es = egg.EGGROLL(n, sigma=0.05, rank=1, optimizer=optax.sgd(1e-3), noise=source)
            state = es.init(jax.random.key(2), params)
            step = jax.jit(lambda s, es=es, x=x, y=y: es.step(s, fitness, x, y, in_axes=0)[0])

            def call(step=step, state=state, partitionable=partitionable):
                with jax.threefry_partitionable(partitionable):
                    return step(state)

            calls[label] = call
        ms = {k: 1e3 * t for k, t in paired_seconds(calls, repeats).items()}
        for label in ("keys", "table", "keys-np"):
            row = {
                "population": n,
                "noise": label,
                "generation_ms": round(ms[label], 2),
                "inference_ms": round(ms["inference"], 2),
                "x_inference": round(ms[label] / ms["inference"], 2),
                "over_table": round(ms[label] / ms["table"], 2),
            }
            rows.append(row)
            print(
                f"speed N={n:5d} {label:8s} {row['generation_ms']:9.2f} ms/generation  "
                f"{row['x_inference']:6.2f}x inference  {row['over_table']:5.2f}x table",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------- (b) RL
def rl_run(env: str, source: str, seed: int, args: argparse.Namespace) -> dict:
    """Train the policy of ``eggroll.train.rl`` on ``env`` with noise ``source`` for the same
    number of generations; the mean policy is evaluated every ``eval_every`` generations (and at
    the end) exactly as ``rl.Trainer.evaluate`` does (32 episodes)."""
    from eggroll.train import rl

    generations = args.rl_generations or RL_GENERATIONS.get(env, 100)
    config = rl.Config(
        env=env,
        generations=generations,
        seed=seed,
        progress=False,
        population=args.rl_population,
        hidden=args.rl_hidden,
        max_steps=args.rl_max_steps or 0,
        eval_every=args.eval_every,
    )
    trainer = rl.Trainer(config)
    es = with_noise(trainer.es, source)
    trainer.es = es
    trainer.state = es.init(jax.random.key(seed + 1), trainer.state.params)
    trainer.generation = rl.make_step(
        es,
        trainer.spec,
        trainer.policy,
        episodes=int(trainer.hp["episodes"]),
        seed=seed + 2,
        common_random_numbers=config.common_random_numbers,
        **trainer.options,
    )
    evals = []
    start = time.perf_counter()
    trainer.step(0)  # compiles
    jax.block_until_ready(trainer.state.params)
    compiled = time.perf_counter()
    for g in range(1, generations + 1):
        if g > 1:
            trainer.step(g - 1)
        if g % args.eval_every == 0 or g == generations:
            evals.append(trainer.evaluate(g, g == generations)["eval_return"])
    seconds = time.perf_counter() - compiled
    return {
        "final": evals[-1],
        "last_mean": statistics.fmean(evals[-args.last_evals :]),
        "all_mean": statistics.fmean(evals),
        "seconds": seconds,
        "compile_s": compiled - start,
        "generations": generations,
        "population": es.population_size,
    }


def rl_section(args: argparse.Namespace) -> list[dict]:
    rows = []
    for env in args.envs:
        runs: dict[str, list[dict]] = {s: [] for s in SOURCES}
        for seed in range(args.seeds):
            for source in SOURCES:  # alternate: machine load hits both alike
                out = rl_run(env, source, seed, args)
                runs[source].append(out)
                print(
                    f"rl {env:12s} {source:5s} seed {seed}  final {out['final']:8.1f}  "
                    f"last {out['last_mean']:8.1f}  all {out['all_mean']:8.1f}  "
                    f"{out['seconds']:6.1f} s",
                    flush=True,
                )
        for source in SOURCES:
            r = runs[source]
            rows.append(
                {
                    "env": env,
                    "noise": source,
                    "generations": r[0]["generations"],
                    "population": r[0]["population"],
                    "final": [round(o["final"], 2) for o in r],
                    "final_mean_std": [round(v, 2) for v in mean_std([o["final"] for o in r])],
                    "last": [round(o["last_mean"], 2) for o in r],
                    "last_mean_std": [round(v, 2) for v in mean_std([o["last_mean"] for o in r])],
                    "all_mean_std": [round(v, 2) for v in mean_std([o["all_mean"] for o in r])],
                    "ms_per_generation": round(
                        1e3 * statistics.fmean(o["seconds"] / o["generations"] for o in r), 1
                    ),
                }
            )
    return rows


# ---------------------------------------------------------------------- (c) classification
CLS_DIM, CLS_CLASSES = 8, 4


def teacher_data(key: jax.Array, points: int, dim: int = CLS_DIM, classes: int = CLS_CLASSES):
    """Inputs ``N(0, I)`` and labels from a random tanh teacher MLP (dim → 16 → classes):
    train and test sets of ``points`` each."""
    k_w0, k_w1, k_x = jax.random.split(key, 3)
    w0 = 2.0 * jax.random.normal(k_w0, (dim, 16)) / math.sqrt(dim)
    w1 = jax.random.normal(k_w1, (16, classes))
    x = jax.random.normal(k_x, (2 * points, dim))
    y = jnp.argmax(jnp.tanh(x @ w0) @ w1, axis=-1)
    return (x[:points], y[:points]), (x[points:], y[points:])


def classifier_logits(params: dict, x: jax.Array) -> jax.Array:
    """README style: egg.nn.dense/vector, so it runs on member views and plain params alike."""
    h = jnp.tanh(egg.nn.dense(x, params["w0"]) + egg.nn.vector(params["b0"]))
    h = jnp.tanh(egg.nn.dense(h, params["w1"]) + egg.nn.vector(params["b1"]))
    return egg.nn.dense(h, params["w2"]) + egg.nn.vector(params["b2"])


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """The black box: the fraction classified correctly (no gradient exists)."""
    return jnp.mean(jnp.argmax(classifier_logits(params, x), axis=-1) == y).astype(jnp.float32)


def classifier_params(key: jax.Array, dim: int = CLS_DIM, classes: int = CLS_CLASSES) -> dict:
    sizes = (dim, 64, 64, classes)
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"w{i}"] = jax.random.normal(keys[i], (n_in, n_out)) / math.sqrt(n_in)
        params[f"b{i}"] = jnp.zeros(n_out)
    return params


def classifier_strategy(args: argparse.Namespace, source: str) -> egg.EGGROLL:
    return egg.EGGROLL(
        args.cls_population,
        sigma=0.1,
        rank=args.cls_rank,
        optimizer=optax.adam(0.02),
        noise=source,
    )


def classification_run(es: egg.EGGROLL, step, seed: int, args: argparse.Namespace) -> dict:
    """Train the classifier from seed ``seed`` (data, init, minibatches and noise) with a
    compiled ``step`` of strategy ``es``; train and test accuracy of the mean parameters at the
    end."""
    (x, y), (x_test, y_test) = teacher_data(jax.random.key(1000 + seed), args.cls_points)
    state = es.init(jax.random.key(seed + 1), classifier_params(jax.random.key(seed)))
    batches = jax.random.key(2000 + seed)
    start = time.perf_counter()
    for _ in range(args.cls_generations):
        state = step(state, x, y, batches)
    jax.block_until_ready(state.params)
    return {
        "train": float(accuracy(state.params, x, y)),
        "test": float(accuracy(state.params, x_test, y_test)),
        "seconds": time.perf_counter() - start,
    }


def classification_section(args: argparse.Namespace) -> list[dict]:
    runs: dict[str, list[dict]] = {s: [] for s in SOURCES}
    strategies = {s: classifier_strategy(args, s) for s in SOURCES}
    batch = min(args.cls_batch, args.cls_points)

    def generation(state, x, y, batches, es):
        """One generation on a minibatch (the same for every member) drawn per generation."""
        idx = jax.random.randint(
            jax.random.fold_in(batches, state.generation), (batch,), 0, x.shape[0]
        )
        return es.step(state, accuracy, x[idx], y[idx])[0]

    steps = {  # one compile per source, shared by the seeds
        s: jax.jit(functools.partial(generation, es=es)) for s, es in strategies.items()
    }
    for seed in range(args.seeds):
        for source in SOURCES:
            out = classification_run(strategies[source], steps[source], seed, args)
            runs[source].append(out)
            print(
                f"classification {source:5s} seed {seed}  train {out['train']:.4f}  "
                f"test {out['test']:.4f}  {out['seconds']:5.1f} s",
                flush=True,
            )
    rows = []
    for source in SOURCES:
        r = runs[source]
        rows.append(
            {
                "noise": source,
                "population": args.cls_population,
                "rank": args.cls_rank,
                "generations": args.cls_generations,
                "test": [round(o["test"], 4) for o in r],
                "test_mean_std": [round(v, 4) for v in mean_std([o["test"] for o in r])],
                "train_mean_std": [round(v, 4) for v in mean_std([o["train"] for o in r])],
            }
        )
    return rows


# ---------------------------------------------------------------------- (d) the estimator
def overlap_probability(draw: int, table: int) -> float:
    """P(two draws of ``draw`` entries at independent uniform offsets in ``[0, table − draw]``
    share at least one table entry), exact."""
    m = table - draw + 1
    k = min(draw - 1, m - 1)  # offsets closer than ``draw`` overlap
    pairs = m + 2 * (k * m - k * (k + 1) // 2)
    return pairs / m**2


def table_autocorrelation(table: jax.Array, max_lag: int) -> np.ndarray:
    """``r(k) = mean_i t_i t_{i+k} / E[t²]`` (circular) of the table for lags ``0..max_lag``."""
    t = np.asarray(table, np.float64)
    spectrum = np.fft.rfft(t, n=2 * t.size)
    corr = np.fft.irfft(np.abs(spectrum) ** 2)[: max_lag + 1] / t.size
    return corr / noise_lib.TABLE_SECOND_MOMENT


def draw_sizes(es: egg.Strategy, params: Any) -> list[int]:
    return [es._draw_elements(s) for s in es.leaf_specs(params) if s.kind != "frozen"]


def overlap_rows(models: dict[str, tuple[egg.Strategy, Any]], table_size: int) -> list[dict]:
    """For each model: its largest draw, the chance that two draws of a leaf overlap in the
    table, the expected overlapping and identical pairs per generation (all leaves)."""
    rows = []
    for name, (es, params) in models.items():
        sizes = draw_sizes(es, params)
        draws = es.num_draws
        pairs = draws * (draws - 1) / 2
        rows.append(
            {
                "model": name,
                "draws": draws,
                "largest_draw": max(sizes),
                "draw_over_table": round(max(sizes) / table_size, 5),
                "p_overlap_largest": float(f"{overlap_probability(max(sizes), table_size):.3g}"),
                "overlapping_pairs_per_gen": round(
                    sum(pairs * overlap_probability(d, table_size) for d in sizes), 1
                ),
                "identical_pairs_per_gen": float(
                    f"{sum(pairs / (table_size - d + 1) for d in sizes):.3g}"
                ),
            }
        )
    return rows


def table_offsets(seed: jax.Array, leaf: int, draws: int, size: int, es: egg.Strategy):
    """The table offsets of draws ``0..draws-1`` of a leaf at generation 0, derived the way
    the float strategies do (:func:`eggroll.noise.table_offsets`; the caller checks one against
    the draw itself)."""

    def offset(i):
        return noise_lib.table_offsets(seed, [leaf], 0, i, [size], es.table_size)[0]

    return jax.vmap(offset)(jnp.arange(draws))


def factor_correlation(population: int, hidden: tuple[int, ...]) -> list[dict]:
    """Pearson correlation between the A factors of different draws of every low-rank leaf of
    the reference MLP (rank 1, one generation): mean and max |corr| over all pairs; for the table
    also over the pairs whose slices overlap (offsets re-derived and checked)."""
    params, _ = reference_mlp(hidden)
    rows = []
    for source in SOURCES:
        es = egg.EGGROLL(population, sigma=0.05, rank=1, noise=source)
        state = es.init(jax.random.key(0), params)
        views = jax.jit(jax.vmap(lambda i, es=es, state=state: es.member(state, i)))(
            jnp.arange(0, population, 2)
        )
        specs = {s.path: s for s in es.leaf_specs(params)}
        all_abs, overlap_abs, overlapping, identical = [], [], 0, 0
        for path, spec in specs.items():
            if spec.kind != "lowrank":
                continue
            a = np.asarray(views[path].a).reshape(es.num_draws, -1).astype(np.float64)
            a = a - a.mean(1, keepdims=True)
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            corr = np.abs(a @ a.T)[np.triu_indices(es.num_draws, 1)]
            all_abs.append(corr)
            if source == "table":
                size = es._draw_elements(spec)
                offsets = np.asarray(table_offsets(state.key, spec.id, es.num_draws, size, es))
                first = views[path].a[0].reshape(-1)
                n_a = first.size
                table = np.asarray(state.noise_table, np.float32) * noise_lib.TABLE_UNIT
                np.testing.assert_allclose(  # the re-derived offset is the one the draw used
                    np.asarray(first), table[offsets[0] : offsets[0] + n_a].reshape(-1), rtol=1e-6
                )
                gap = np.abs(offsets[:, None] - offsets[None, :])[np.triu_indices(es.num_draws, 1)]
                overlapping += int(np.sum(gap < size))
                identical += int(np.sum(gap == 0))
                overlap_abs.append(corr[gap < size])
        every = np.concatenate(all_abs)
        n_in = [s.n_in for s in specs.values() if s.kind == "lowrank"]
        row = {
            "noise": source,
            "pairs": int(every.size),
            "mean_abs_corr": round(float(every.mean()), 4),
            "max_abs_corr": round(float(every.max()), 4),
            # mean |corr| of independent Gaussian vectors: √(2/(π(n−1))), averaged over leaves
            "iid_mean_abs_corr": round(
                float(np.mean([math.sqrt(2 / (math.pi * (n - 1))) for n in n_in])), 4
            ),
        }
        if source == "table":
            ov = np.concatenate(overlap_abs) if overlapping else np.zeros(0)
            row["overlapping_pairs"] = overlapping
            row["identical_pairs"] = identical
            row["max_abs_corr_overlapping"] = round(float(ov.max()), 4) if ov.size else None
        rows.append(row)
        print(
            f"correlation {source:5s} pairs {row['pairs']}  mean |r| {row['mean_abs_corr']}  "
            f"max |r| {row['max_abs_corr']}  (iid {row['iid_mean_abs_corr']})"
            + (
                f"  overlapping pairs {row['overlapping_pairs']} (max |r| "
                f"{row['max_abs_corr_overlapping']}), identical {row['identical_pairs']}"
                if source == "table"
                else ""
            ),
            flush=True,
        )
    return rows


def linear_fitness(view: Any, g: dict) -> jax.Array:
    """f(θ) = Σ_leaves ⟨G, θ⟩ on a member's dense parameters: ∇f = G exactly."""
    dense = egg.materialize(view)
    return sum(jnp.sum(g[k] * dense[k]) for k in g)


def linear_cosine(
    populations: list[int], strategies: list[str], seeds: int, hidden: tuple[int, ...]
) -> list[dict]:
    """cos(ĝ, ∇f) for a linear fitness f(θ) = Σ ⟨G, θ⟩ (so ∇f = G exactly) with σ = 1e-3 and
    identity shaping, on the reference MLP: EGGROLL rank 1 and OpenES, each source, mean over
    seeds (a different G and noise seed each)."""
    params, _ = reference_mlp(hidden)
    names = sorted(params)
    rows = []
    for n in populations:
        for strategy in strategies:
            for source in SOURCES:
                common = dict(
                    sigma=1e-3,
                    shaping=egg.shaping.identity,
                    noise=source,
                    eval_batch_size=min(n, 128),
                )
                es = (
                    egg.EGGROLL(n, rank=1, **common)
                    if strategy == "EGGROLL"
                    else egg.OpenES(n, **common)
                )

                @jax.jit
                def estimate(state, g, es=es):
                    return es.estimate(state, es.evaluate(state, linear_fitness, g))[0]

                cos = []
                for seed in range(seeds):
                    gkeys = jax.random.split(jax.random.key(500 + seed), len(names))
                    g = {
                        k: jax.random.normal(gk, params[k].shape)
                        for k, gk in zip(names, gkeys, strict=True)
                    }
                    est = estimate(es.init(jax.random.key(seed), params), g)
                    a = np.concatenate([np.ravel(est[k]) for k in names])
                    b = np.concatenate([np.ravel(g[k]) for k in names])
                    cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
                m, sd = mean_std(cos)
                rows.append(
                    {
                        "strategy": strategy,
                        "population": n,
                        "noise": source,
                        "cosine_mean": round(m, 4),
                        "cosine_std": round(sd, 4),
                        "seeds": seeds,
                    }
                )
                print(
                    f"estimator {strategy:7s} N={n:5d} {source:5s} cos(ĝ, ∇f) {m:.4f} ± {sd:.4f}",
                    flush=True,
                )
    return rows


def quartic(view: Any) -> jax.Array:
    return jnp.sum(egg.materialize(view)["w"] ** 4)


def quartic_gap(population: int, ranks: list[int], seeds: int = 2) -> list[dict]:
    """The low-rank gap of ``tests/eggroll/test_estimator.py`` for both sources: f = Σ W⁴ on a
    16×16 W, σ = 0.5; |mean ĝ − (4W³ + 12σ²W)| / |4W³ + 12σ²W| for each rank (the
    rank-r expectation is 4W³ + 4σ²(3 + 6/r)W: the gap shrinks like 1/r)."""
    sigma = 0.5
    w = jax.random.normal(jax.random.key(3), (16, 16))
    full_rank = 4 * w**3 + 12 * sigma**2 * w
    norm = float(jnp.linalg.norm(full_rank))
    rows = []
    for source in SOURCES:
        gaps = {}
        for rank in ranks:
            es = egg.EGGROLL(
                population, sigma=sigma, rank=rank, shaping=egg.shaping.identity, noise=source
            )

            @jax.jit
            def estimate(state, es=es):
                return es.estimate(state, es.evaluate(state, quartic))[0]["w"]

            estimates = [estimate(es.init(jax.random.key(seed), {"w": w})) for seed in range(seeds)]
            gap = float(jnp.linalg.norm(jnp.mean(jnp.stack(estimates), 0) - full_rank)) / norm
            gaps[f"rank_{rank}"] = round(gap, 4)
        rows.append({"noise": source, "population": population, **gaps})
        print(f"quartic gap / |full-rank expectation| {source:5s} {gaps}", flush=True)
    return rows


def estimator_section(args: argparse.Namespace) -> dict:
    from eggroll.models import mlp
    from eggroll.train import rl

    hidden = tuple(args.speed_hidden)
    table_size = egg.EGGROLL(2, sigma=1.0).table_size  # the default
    params, _ = reference_mlp(hidden)
    n = args.populations[0]
    models: dict[str, tuple[egg.Strategy, Any]] = {
        f"reference MLP, EGGROLL r=1, N={n}": (egg.EGGROLL(n, sigma=0.05, rank=1), params),
        f"reference MLP, OpenES, N={n}": (egg.OpenES(n, sigma=0.05), params),
    }
    for env in args.envs:
        config = rl.Config(
            env=env, population=args.rl_population, hidden=args.rl_hidden, progress=False
        )
        hp = config.hyperparameters()
        spec = config.env_spec()
        policy = mlp.init_params(
            jax.random.key(0), spec.obs_size, spec.action_size, mlp.MLPConfig(tuple(hp["hidden"]))
        )
        es = rl.make_strategy("eggroll", hp)
        models[f"{env} policy, EGGROLL r={hp['rank']}, N={es.population_size}"] = (es, policy)
    cls_params = classifier_params(jax.random.key(0))
    cls_es = egg.EGGROLL(args.cls_population, sigma=0.1, rank=args.cls_rank)
    models[f"classifier, EGGROLL r={args.cls_rank}, N={args.cls_population}"] = (
        cls_es,
        cls_params,
    )
    overlap = overlap_rows(models, table_size)
    for row in overlap:
        print(
            f"overlap {row['model']:44s} largest draw {row['largest_draw']:6d}  "
            f"P(overlap) {row['p_overlap_largest']}  overlapping pairs/gen "
            f"{row['overlapping_pairs_per_gen']}  identical/gen {row['identical_pairs_per_gen']}",
            flush=True,
        )
    # The table the strategies make by default (seed 0): correlation between entries k apart,
    # i.e. between entries of one draw (the same for every member) and the off-diagonal of a
    # draw's effective covariance given the table.
    table = noise_lib.make_table(jax.random.key(0), table_size)
    eggroll_draw = max(
        max(draw_sizes(es, p)) for name, (es, p) in models.items() if "EGGROLL" in name
    )
    max_lag = max(max(draw_sizes(es, p)) for es, p in models.values()) - 1
    r = table_autocorrelation(table, max_lag)
    lags = np.abs(r[1:])
    toeplitz = r[np.abs(np.subtract.outer(np.arange(eggroll_draw), np.arange(eggroll_draw)))]
    eig = np.linalg.eigvalsh(toeplitz)
    table_stats = {
        "table_size": table_size,
        "table_bytes": table_size,  # int8
        "max_abs_autocorr": round(float(lags.max()), 5),
        "max_abs_autocorr_lags": max_lag,
        "iid_autocorr_std": round(1 / math.sqrt(table_size), 5),
        "largest_eggroll_draw": eggroll_draw,
        "covariance_eig_min": round(float(eig.min()), 4),
        "covariance_eig_max": round(float(eig.max()), 4),
    }
    print(
        f"table {table_size} entries: max |autocorrelation| over lags 1..{max_lag} "
        f"{table_stats['max_abs_autocorr']} (iid std {table_stats['iid_autocorr_std']}); "
        f"covariance of a {eggroll_draw}-entry draw given the table: eigenvalues "
        f"{table_stats['covariance_eig_min']}..{table_stats['covariance_eig_max']}",
        flush=True,
    )
    return {
        "table": table_stats,
        "overlap": overlap,
        "correlation": factor_correlation(args.correlation_population, hidden),
        "linear_cosine": linear_cosine(
            args.estimator_populations, args.estimator_strategies, args.estimator_seeds, hidden
        ),
        "quartic_gap": quartic_gap(args.quartic_population, args.quartic_ranks),
    }


# ---------------------------------------------------------------------- run / render
def verdict(result: dict) -> dict:
    """Per task: is the table not worse than keys (overlapping mean ± std or better) on the
    final return, the mean of the last evaluations and the mean of all evaluations (how fast it
    learned); for the estimator: the table's cosine not below keys' by 2 standard errors.
    Sections that were not run are left out."""
    tasks = {}
    rl_rows = result.get("rl", [])
    for env in dict.fromkeys(r["env"] for r in rl_rows):
        by = {r["noise"]: r for r in rl_rows if r["env"] == env}
        tasks[env] = all(
            not_worse(tuple(by["keys"][m]), tuple(by["table"][m]))
            for m in ("final_mean_std", "last_mean_std", "all_mean_std")
        )
    if "classification" in result:
        by = {r["noise"]: r for r in result["classification"]}
        tasks["classification"] = not_worse(
            tuple(by["keys"]["test_mean_std"]), tuple(by["table"]["test_mean_std"])
        )
    rows = result.get("estimator", {}).get("linear_cosine", [])
    for strategy, n in dict.fromkeys((r["strategy"], r["population"]) for r in rows):
        by = {r["noise"]: r for r in rows if (r["strategy"], r["population"]) == (strategy, n)}
        k, t = by["keys"], by["table"]
        se = math.sqrt((k["cosine_std"] ** 2 + t["cosine_std"] ** 2) / k["seeds"])
        tasks[f"estimator {strategy} N={n}"] = t["cosine_mean"] >= k["cosine_mean"] - 2 * se
    return {"table_not_worse": tasks, "table_learns_as_well": all(tasks.values())}


def run(args: argparse.Namespace) -> dict:
    """Keys vs table: speed, RL and classification learning at equal generations, estimator."""
    if args.quick:
        vars(args).update(QUICK)
    result: dict[str, Any] = {
        "benchmark": NAME,
        "machine": machine_info(),
        "quick": bool(args.quick),
        "engine_sha256": engine_fingerprint(),
        "sections": list(args.sections),
        "speed_hidden": list(args.speed_hidden),
        "seeds": args.seeds,
        "rows": [],
    }
    if "speed" in args.sections:
        result["rows"] = speed(args.populations, tuple(args.speed_hidden), args.repeats)
    if "rl" in args.sections:
        result["rl"] = rl_section(args)
    if "classification" in args.sections:
        result["classification"] = classification_section(args)
    if "estimator" in args.sections:
        result["estimator"] = estimator_section(args)
    result.update(verdict(result))
    print(f"table not worse than keys: {result['table_not_worse']}", flush=True)
    return result


def render(result: dict) -> str:
    parts = []
    if result["rows"]:
        parts += [
            "Speed (reference MLP 64→256³→8, rank 1, one input per member, −MSE, evaluate + tell "
            "in one jit; keys-np: threefry, not partitionable; engine files sha256 "
            f"{result.get('engine_sha256', '?')}):",
            markdown_table(
                result["rows"],
                [
                    "population",
                    "noise",
                    "generation_ms",
                    "inference_ms",
                    "x_inference",
                    "over_table",
                ],
            ),
        ]
    if "rl" in result:
        rl_rows = [
            {
                **r,
                "final": fmt(tuple(r["final_mean_std"])),
                "last evaluations": fmt(tuple(r["last_mean_std"])),
                "all evaluations": fmt(tuple(r["all_mean_std"])),
            }
            for r in result["rl"]
        ]
        parts += [
            f"RL, mean policy return at equal generations ({result['seeds']} seeds, mean ± std):",
            markdown_table(
                rl_rows,
                [
                    "env",
                    "noise",
                    "generations",
                    "population",
                    "final",
                    "last evaluations",
                    "all evaluations",
                    "ms_per_generation",
                ],
            ),
        ]
    if "classification" in result:
        cls_rows = [
            {
                **r,
                "test accuracy": fmt(tuple(r["test_mean_std"]), 4),
                "train accuracy": fmt(tuple(r["train_mean_std"]), 4),
            }
            for r in result["classification"]
        ]
        parts += [
            "Classification black box (teacher-labelled data, accuracy as fitness):",
            markdown_table(
                cls_rows,
                ["noise", "population", "rank", "generations", "test accuracy", "train accuracy"],
            ),
        ]
    if "estimator" in result:
        parts += render_estimator(result["estimator"])
    parts.append(
        "Table not worse than keys: "
        + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in result["table_not_worse"].items())
    )
    return "\n\n".join(parts)


def render_estimator(est: dict) -> list[str]:
    table = est["table"]
    cos_rows = [
        {**r, "cosine": f"{r['cosine_mean']} ± {r['cosine_std']}"} for r in est["linear_cosine"]
    ]
    ranks = [k for k in est["quartic_gap"][0] if k.startswith("rank_")]
    return [
        f"Table: {table['table_size']} int8 entries ({table['table_bytes'] / 2**20:g} MiB); "
        f"max |correlation| between entries 1..{table['max_abs_autocorr_lags']} apart "
        f"{table['max_abs_autocorr']} (i.i.d. std {table['iid_autocorr_std']}); covariance of "
        f"a {table['largest_eggroll_draw']}-entry draw given the table: eigenvalues "
        f"{table['covariance_eig_min']}..{table['covariance_eig_max']}.",
        markdown_table(
            est["overlap"],
            [
                "model",
                "draws",
                "largest_draw",
                "draw_over_table",
                "p_overlap_largest",
                "overlapping_pairs_per_gen",
                "identical_pairs_per_gen",
            ],
        ),
        "Correlation between different members' A factors (reference MLP, one generation):",
        markdown_table(
            est["correlation"],
            [
                "noise",
                "pairs",
                "mean_abs_corr",
                "max_abs_corr",
                "iid_mean_abs_corr",
                "overlapping_pairs",
                "identical_pairs",
                "max_abs_corr_overlapping",
            ],
        ),
        "Estimator: cos(ĝ, ∇f) for a linear fitness (σ = 1e-3, identity shaping):",
        markdown_table(cos_rows, ["strategy", "population", "noise", "cosine", "seeds"]),
        "Quartic low-rank gap |mean ĝ − full-rank expectation| / |expectation| (2 seeds):",
        markdown_table(est["quartic_gap"], ["noise", "population", *ranks]),
    ]
