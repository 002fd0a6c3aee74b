"""Small-problem latency: compile seconds, ms per generation and time to solve, for EGGROLL
(rank 1 and 4), our OpenES and evosax's Open_ES on the same problems (needs the ``bench``
extra: evosax, gymnax).

    python scripts/bench.py latency [--parts cartpole mlp rank egg solve]

- ``cartpole``: MLP 4→64→64→2 tanh, one 500-step masked CartPole-v1 episode per member
  (``loop="scan"``: every generation the same work, whatever the episodes' lengths),
  population 256, σ = 0.2, SGD 0.1 (the ``vs-evosax`` harness).
- ``mlp``: a black-box 2-layer MLP classifier (32→128→10, a random-teacher data set), the
  accuracy of one shared minibatch of 256 as fitness, population 512, σ = 0.05, Adam 0.01.
- compile: AOT ``jax.jit(f).lower(...).compile()`` of a fresh function and fresh strategy
  objects (nothing cached but what every contender shares), separately for the generation
  (evaluate + tell) and for the evaluation of the mean; median over ``--compile-repeats``
  rounds that alternate the contenders, after one warm-up round.
- ms/generation: the compiled generations alternated in one loop, median.
- ``solve`` (CartPole): generations until the mean policy's return over 32 fixed episodes is
  ≥ 475 (checked every 5 generations); time to solve = compile (both functions) + the
  generations + the checks, the contenders run round-robin.
- ``rank``: MLP 64→256→256→256→8, one input row per member, −MSE fitness, evaluate + tell in
  one jit, N = 1,024 and 4,096: EGGROLL rank 1 vs rank 4, alternated.
- ``egg``: compile seconds of the EGG LM step (``eggroll.train.pretrain.make_step`` at the
  default size: width 64, 2 layers, population 512, 100 tokens).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import eggroll as egg
from eggroll.benchmarks.common import make_result, markdown_table

NAME = "latency"
HELP = "small problems: compile s, ms/generation, time to solve vs evosax"
NOISE_VARIANT = False
SOLVED = 475.0
PARTS = ("cartpole", "mlp", "rank", "egg", "solve")
CONTENDERS = ("eggroll r1", "eggroll r4", "OpenES", "evosax Open_ES")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--population", type=int, default=256, help="CartPole population")
    p.add_argument("--mlp-population", type=int, default=512)
    p.add_argument("--rank-populations", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--compile-repeats", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed generations per contender")
    p.add_argument("--generations", type=int, default=200, help="solve budget")
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument(
        "--before", default=None, help="a results file of an earlier version to quote beside"
    )


def attach_before(result: dict, before: dict) -> dict:
    """Quote an earlier version's compile seconds (its results file) beside this run's."""
    for problem, data in before.get("problems", {}).items():
        old = {row["contender"]: row for row in data["rows"]}
        for row in result.get("problems", {}).get(problem, {}).get("rows", []):
            if row["contender"] in old:
                row["compile_gen_before_s"] = old[row["contender"]]["compile_gen_s"]
                row["ms_before"] = old[row["contender"]]["ms_per_generation"]
    if "egg" in before:
        result["egg_before_s"] = before["egg"]["compile_step_s"]
    return result


# ---------------------------------------------------------------------------- problems
# A problem gives, for a contender name, a fresh ``(gen, state, mean_eval, mean_of)``:
# ``gen(state) -> state`` (evaluate + tell, not yet jitted), ``mean_eval(params) -> score``.


def _ours(name: str, n: int, sigma: float, optimizer) -> egg.Strategy:
    if name == "OpenES":
        return egg.OpenES(n, sigma=sigma, optimizer=optimizer)
    # The default leaf rule: every matrix low-rank, the 64 × 2 output layer at rank ≤ 2.
    return egg.EGGROLL(n, sigma=sigma, rank=int(name[-1]), optimizer=optimizer)


def _evosax_gen(n, params, sigma, optimizer, score_fn):
    """evosax Open_ES: ``gen((state, counter))`` with ``score_fn(member params, key, counter)``."""
    from evosax.algorithms import Open_ES

    evo = Open_ES(n, params, optimizer=optimizer, std_schedule=optax.constant_schedule(sigma))
    evo_params = evo.default_params
    state = evo.init(jax.random.key(1), params, evo_params)

    def gen(carry):
        state, counter = carry
        key = jax.random.fold_in(jax.random.key(5), counter)
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, state = evo.ask(ask_key, state, evo_params)
        scores = jax.vmap(score_fn, (0, 0, None))(
            population, jax.random.split(eval_key, n), counter
        )
        state, _ = evo.tell(tell_key, population, -scores, state, evo_params)  # minimises
        return state, counter + 1

    return gen, (state, jnp.zeros((), jnp.int32)), lambda c: evo.get_mean(c[0])


def cartpole_problem(n: int) -> Callable[[str], tuple]:
    from eggroll.envs import rl
    from eggroll.models import mlp

    task = rl.make_env("CartPole-v1")
    policy = functools.partial(mlp.apply, activation="tanh")
    params = mlp.init_params(
        jax.random.key(0), task.obs_size, task.action_size, mlp.MLPConfig((64, 64))
    )
    stats = rl.ObsStats.create(task.obs_size)
    sigma, lr = 0.2, 0.1

    def mean_eval(p):
        keys = jax.random.split(jax.random.key(99), 32)
        return jnp.mean(rl.episodes(task, policy, p, keys, stats, normalise=False, loop="scan").ret)

    def make(name: str):
        if name == "evosax Open_ES":

            def score(member, key, counter):
                keys = jax.random.split(key, 1)
                eps = rl.episodes(task, policy, member, keys, stats, normalise=False, loop="scan")
                return jnp.mean(eps.ret)

            gen, state, mean_of = _evosax_gen(n, params, sigma, optax.sgd(lr), score)
            return gen, state, mean_eval, mean_of
        es = _ours(name, n, sigma, optax.sgd(lr))
        fitness = rl.make_fitness(task, policy, normalise=False, loop="scan")

        def gen(state):
            key = jax.random.fold_in(jax.random.key(5), state.generation)
            keys = jax.vmap(lambda k: jax.random.split(k, 1))(jax.random.split(key, n))
            scores, _ = es.evaluate(state, fitness, keys, stats, in_axes=(0, None), has_aux=True)
            return es.tell(state, scores)[0]

        return gen, es.init(jax.random.key(1), params), mean_eval, lambda s: s.params

    return make


def _classifier_data(features=32, classes=10, train=4096, test=2048):
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    teacher = jax.random.normal(k1, (features, classes))
    x = jax.random.normal(k2, (train + test, features))
    y = jnp.argmax(x @ teacher + 0.5 * jax.random.normal(k3, (train + test, classes)), -1)
    return x[:train], y[:train], x[train:], y[train:]


def _logits(params, x):
    h = jnp.tanh(egg.nn.dense(x, params["w0"]) + egg.nn.vector(params["b0"]))
    return egg.nn.dense(h, params["w1"]) + egg.nn.vector(params["b1"])


def mlp_problem(n: int, batch: int = 256) -> Callable[[str], tuple]:
    x, y, x_test, y_test = _classifier_data()
    k0, k1 = jax.random.split(jax.random.key(3))
    params = {
        "w0": jax.random.normal(k0, (32, 128)) / jnp.sqrt(32.0),
        "b0": jnp.zeros(128),
        "w1": jax.random.normal(k1, (128, 10)) / jnp.sqrt(128.0),
        "b1": jnp.zeros(10),
    }
    sigma, lr = 0.05, 0.01
    batches = x.shape[0] // batch

    def minibatch(generation):
        start = (generation % batches) * batch
        return (
            jax.lax.dynamic_slice_in_dim(x, start, batch),
            jax.lax.dynamic_slice_in_dim(y, start, batch),
        )

    def accuracy(p, xb, yb):
        return jnp.mean(jnp.argmax(_logits(p, xb), -1) == yb)

    def mean_eval(p):
        return accuracy(p, x_test, y_test)

    def make(name: str):
        if name == "evosax Open_ES":

            def score(member, key, counter):
                return accuracy(member, *minibatch(counter))

            gen, state, mean_of = _evosax_gen(n, params, sigma, optax.adam(lr), score)
            return gen, state, mean_eval, mean_of
        es = _ours(name, n, sigma, optax.adam(lr))

        def fitness(view, xb, yb):
            return accuracy(view, xb, yb)

        def gen(state):
            scores = es.evaluate(state, fitness, *minibatch(state.generation))
            return es.tell(state, scores)[0]

        return gen, es.init(jax.random.key(1), params), mean_eval, lambda s: s.params

    return make


# ---------------------------------------------------------------------------- measuring
def _block(tree) -> None:
    jax.block_until_ready(jax.tree_util.tree_leaves(tree))


def aot_seconds(fn: Callable, *args) -> tuple[float, float]:
    """Seconds to trace + lower and to compile a fresh ``jax.jit(fn)`` for ``args``."""
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    mid = time.perf_counter()
    lowered.compile()
    return mid - start, time.perf_counter() - mid


def _hlo_size(fn: Callable, *args) -> int:
    """Instructions in the optimised HLO of ``jax.jit(fn)`` (lines with an ``=``)."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return sum(1 for line in text.splitlines() if " = " in line)


def compile_table(make: Callable[[str], tuple], names, repeats: int) -> dict[str, dict]:
    """Median AOT seconds (trace+lower, compile) of the generation and of the mean evaluation,
    fresh objects every round, the contenders alternated; one warm-up round first."""
    samples = {name: {"gen": [], "mean": []} for name in names}
    for round_ in range(repeats + 1):
        for name in names:
            gen, state, mean_eval, mean_of = make(name)
            g = aot_seconds(gen, state)
            params = mean_of(state)
            m = aot_seconds(lambda p, f=mean_eval: f(p), params)
            if round_:
                samples[name]["gen"].append(g)
                samples[name]["mean"].append(m)
    out = {}
    for name, s in samples.items():
        gen, mean = s["gen"], s["mean"]
        out[name] = {
            "compile_gen_s": round(statistics.median(a + b for a, b in gen), 3),
            "lower_gen_s": round(statistics.median(a for a, _ in gen), 3),
            "compile_mean_s": round(statistics.median(a + b for a, b in mean), 3),
        }
        gen_fn, state, _, _ = make(name)
        out[name]["hlo_ops_gen"] = _hlo_size(gen_fn, state)
    return out


def steady_ms(make: Callable[[str], tuple], names, repeats: int) -> dict[str, float]:
    """Median ms per compiled generation, the contenders alternated in one loop."""
    runs = {}
    for name in names:
        gen, state, _, _ = make(name)
        gen = jax.jit(gen)
        state = gen(state)
        _block(state)
        runs[name] = [gen, state, []]
    for _ in range(repeats):
        for run_ in runs.values():
            start = time.perf_counter()
            run_[1] = run_[0](run_[1])
            _block(run_[1])
            run_[2].append(time.perf_counter() - start)
    return {name: round(1e3 * statistics.median(r[2]), 2) for name, r in runs.items()}


def solve(make, names, compile_s: dict, budget: int) -> dict[str, dict]:
    """Round-robin CartPole runs to 475; time to solve adds the median compile seconds."""
    runs = {}
    for name in names:
        gen, state, mean_eval, mean_of = make(name)
        gen, check = jax.jit(gen), jax.jit(lambda s, f=mean_eval, m=mean_of: f(m(s)))
        _block(gen(state))
        float(check(state))
        runs[name] = {"gen": gen, "check": check, "state": state, "t": 0.0, "g": 0, "done": None}
    for generation in range(1, budget + 1):
        for r in runs.values():
            if r["done"] is not None:
                continue
            start = time.perf_counter()
            r["state"] = r["gen"](r["state"])
            _block(r["state"])
            score = float(r["check"](r["state"])) if generation % 5 == 0 else -1.0
            r["t"] += time.perf_counter() - start
            r["g"] = generation
            if score >= SOLVED:
                r["done"] = generation
    out = {}
    for name, r in runs.items():
        c = compile_s.get(name, {})
        total = c.get("compile_gen_s", 0.0) + c.get("compile_mean_s", 0.0) + r["t"]
        out[name] = {
            "solved_at": r["done"],
            "run_s": round(r["t"], 2),
            "time_to_solve_s": round(total, 2) if r["done"] else None,
        }
    return out


def rank_rows(populations, repeats: int) -> list[dict]:
    """EGGROLL rank 1 vs rank 4 on MLP 64→256→256→256→8, −MSE, one input per member."""
    sizes = (64, 256, 256, 256, 8)
    keys = jax.random.split(jax.random.key(0), len(sizes))
    params = {
        f"w{i}": jax.random.normal(keys[i], (a, b)) / jnp.sqrt(a)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    }

    def fitness(view, x, target):
        h = x
        for i in range(len(sizes) - 1):
            h = egg.nn.dense(h, view[f"w{i}"])
            if i < len(sizes) - 2:
                h = jnp.tanh(h)
        return -jnp.mean((h - target) ** 2)

    rows = []
    for n in populations:
        x = jax.random.normal(jax.random.key(1), (n, sizes[0]))
        target = jax.random.normal(jax.random.key(2), (n, sizes[-1]))

        def make(name, n=n, x=x, target=target):
            es = egg.EGGROLL(n, sigma=0.05, rank=int(name[-1]), optimizer=optax.sgd(0.01))

            def gen(state):
                return es.step(state, fitness, x, target, in_axes=0)[0]

            return gen, es.init(jax.random.key(3), params), None, None

        ms = steady_ms(make, ["eggroll r1", "eggroll r4"], repeats)
        layers = list(zip(sizes[:-1], sizes[1:], strict=True))
        row = rank_row(f"MLP 64-256x3-8, N={n}", ms, layers, n, rows_per_member=1)
        print(row, flush=True)
        rows.append(row)
    return rows


def generation_macs(layers, n: int, rank: int, rows_per_member: int) -> int:
    """Multiply-adds of one EGGROLL generation on dense layers ``[(n_in, n_out), ...]``: the
    shared forward ``x @ W``, each member's ``(x @ A) @ Bᵀ`` and the estimator ``Σ_p w_p A_p
    B_pᵀ`` over the N/2 draws (an ``(n_in, N r / 2) @ (N r / 2, n_out)`` product per layer)."""
    forward = n * rows_per_member * sum(a * b for a, b in layers)
    members = n * rows_per_member * sum(min(rank, a, b) * (a + b) for a, b in layers)
    estimator = (n // 2) * sum(min(rank, a, b) * a * b for a, b in layers)
    return forward + members + estimator


def rank_row(problem: str, ms: dict, layers, n: int, rows_per_member: int) -> dict:
    """Rank 4 over rank 1 in time and in multiply-adds, side by side."""
    macs = [generation_macs(layers, n, r, rows_per_member) for r in (1, 4)]
    ratio = ms["eggroll r4"] / ms["eggroll r1"]
    return {
        "problem": problem,
        "rank1_ms": ms["eggroll r1"],
        "rank4_ms": ms["eggroll r4"],
        "rank4_over_rank1": round(ratio, 2),
        "macs_rank4_over_rank1": round(macs[1] / macs[0], 2),
        "time_over_macs": round(ratio / (macs[1] / macs[0]), 2),
    }


def egg_compile(repeats: int) -> dict:
    """Median AOT seconds of the EGG LM step at the default ``pretrain.Config`` size."""
    from eggroll.train import pretrain

    config = pretrain.Config()
    params = egg_params(config)
    s = config.streams
    tokens = jnp.zeros((s, config.seq_len + 1), jnp.uint8)
    resets = jnp.zeros((s, config.seq_len), bool)
    hidden = jnp.zeros((config.population, config.layers, config.width), jnp.int8)
    times = []
    for round_ in range(repeats + 1):
        es = pretrain.make_strategy(config)
        state = es.init(jax.random.key(0), params)
        step = pretrain.make_step(es, config.group_size)
        a, b = aot_seconds(step, state, hidden, tokens, resets)
        if round_:
            times.append(a + b)
    return {
        "size": f"width {config.width}, {config.layers} layers, N={config.population}, "
        f"{config.seq_len} tokens",
        "compile_step_s": round(statistics.median(times), 3),
    }


def egg_params(config):
    from eggroll.models import egglm

    return egglm.init_params(jax.random.key(0), config.model)


# ---------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> dict:
    names = list(args.contenders)
    problems = {}
    parts = set(args.parts)
    for problem, builder, n in (
        ("cartpole", cartpole_problem, args.population),
        ("mlp", mlp_problem, args.mlp_population),
    ):
        if problem not in parts and not (problem == "cartpole" and "solve" in parts):
            continue
        make = builder(n)
        compiled = compile_table(make, names, args.compile_repeats)
        for name in names:
            print(problem, name, compiled[name], flush=True)
        ms = steady_ms(make, names, args.repeats)
        rows = []
        for name in names:
            rows.append({"contender": name, **compiled[name], "ms_per_generation": ms[name]})
            print(problem, name, "ms/gen", ms[name], flush=True)
        if problem == "cartpole" and "solve" in parts:
            solved = solve(make, names, compiled, args.generations)
            for row in rows:
                row.update(solved[row["contender"]])
                print(problem, row, flush=True)
        problems[problem] = {"population": n, "rows": rows}
    result = {"problems": problems}
    if "rank" in parts:
        result["rank"] = rank_rows(args.rank_populations, args.repeats)
        cartpole = {
            r["contender"]: r["ms_per_generation"]
            for r in problems.get("cartpole", {}).get("rows", [])
        }
        if "eggroll r1" in cartpole and "eggroll r4" in cartpole:
            steps = 500  # every member's episode runs the full masked length
            result["rank"].insert(
                0,
                rank_row(
                    f"CartPole harness, N={args.population}",
                    cartpole,
                    [(4, 64), (64, 64), (64, 2)],
                    args.population,
                    rows_per_member=steps,
                ),
            )
    if "egg" in parts:
        result["egg"] = egg_compile(args.compile_repeats)
        print("egg", result["egg"], flush=True)
    result = make_result(NAME, [], **result)
    if args.before:
        attach_before(result, json.loads(Path(args.before).read_text()))
    return result


def render(result: dict) -> str:
    out = []
    titles = {
        "cartpole": "CartPole-v1 (MLP 4-64-64-2, one 500-step episode per member)",
        "mlp": "2-layer MLP classifier black box (32-128-10, minibatch accuracy)",
    }
    columns = [
        "contender",
        "compile_gen_before_s",
        "compile_gen_s",
        "compile_mean_s",
        "ms_before",
        "ms_per_generation",
        "solved_at",
        "time_to_solve_s",
    ]
    for problem, data in result.get("problems", {}).items():
        cols = [c for c in columns if any(c in row for row in data["rows"])]
        out.append(f"**{titles.get(problem, problem)}**, population {data['population']}:\n")
        out.append(markdown_table(data["rows"], cols) + "\n")
    if result.get("rank"):
        out.append("**Rank 4 vs rank 1** (evaluate + tell in one jit):\n")
        out.append(
            markdown_table(
                result["rank"],
                [
                    "problem",
                    "rank1_ms",
                    "rank4_ms",
                    "rank4_over_rank1",
                    "macs_rank4_over_rank1",
                    "time_over_macs",
                ],
            )
            + "\n"
        )
    if result.get("egg"):
        e = result["egg"]
        before = result.get("egg_before_s")
        line = f"EGG LM step ({e['size']}): compiles in {e['compile_step_s']} s"
        if before:
            line += f" (before this change: {before} s)"
        out.append(line + ".\n")
    return "\n".join(out).rstrip()
