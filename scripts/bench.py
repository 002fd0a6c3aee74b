"""Benchmarks that print ratios measured side by side in one run.

    python scripts/bench.py lowrank-vs-naive [--widths 256 1024] [--population 1024] [--rank 1]
    python scripts/bench.py int-noise          # integer noise: threefry keys vs seed-made table
    python scripts/bench.py member-project     # x @ A_i under vmap: batched dot vs block GEMM
    python scripts/bench.py vs-inference       # training as a share of inference throughput
    python scripts/bench.py scaling            # time per generation vs population and width
    python scripts/bench.py vs-evosax          # CartPole: evosax Open_ES vs ours (extra: bench)
    python scripts/bench.py llm-decode         # LLM decoding: N members vs the plain model
    python scripts/bench.py report             # rewrite docs/BENCHMARKS.md from results/*.json

Results go to ``results/<subcommand>.json`` (ignored by git); docs/BENCHMARKS.md records them
with the command that produced them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import eggroll as egg

RESULTS = Path(__file__).resolve().parent.parent / "results"


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


def dense_layer_fitness(view: dict, x: jax.Array) -> jax.Array:
    """One dense layer on this member's input row ``x (width,)``."""
    return jnp.sum(jnp.tanh(egg.nn.dense(x, view["w"])))


def layers_fitness(view: dict, x: jax.Array) -> jax.Array:
    """A stack of tanh dense layers ``w0, w1, ...`` on this member's input row."""
    for i in range(len(view)):
        x = jnp.tanh(egg.nn.dense(x, view[f"w{i}"]))
    return jnp.sum(x)


def _layer_params(width: int, depth: int) -> dict:
    keys = jax.random.split(jax.random.key(0), depth)
    return {
        f"w{i}": jax.random.normal(k, (width, width)) / jnp.sqrt(width) for i, k in enumerate(keys)
    }


def generation_step(strategy: egg.Strategy, width: int, depth: int = 1):
    """A jitted generation (every member's forward on its own input row + ``tell``) and its
    initial state, for a stack of ``depth`` square layers."""
    params = {"w": _layer_params(width, 1)["w0"]} if depth == 1 else _layer_params(width, depth)
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
    stats = step.lower(state).compile().memory_analysis()
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def lowrank_vs_naive(args: argparse.Namespace) -> dict:
    """EGGROLL vs full-rank OpenES: time per generation and XLA's peak memory, measured for
    each (model, width, population, rank) in the same run with the same noise source."""
    rows = []
    models = {"dense": 1, "mlp3": 3}
    for model in args.models:
        depth = models[model]
        for width in args.widths:
            for population in args.populations:
                # Naive ES must evaluate in slices of members, or N full matrices exhaust memory.
                naive_batch = max(1, min(population, (1 << 26) // (depth * width * width)))
                while population % naive_batch:
                    naive_batch -= 1
                # The table must hold a full-rank draw of the biggest matrix for OpenES.
                naive_table = max(1 << 20, 1 << (2 * width * width - 1).bit_length())
                openes = egg.OpenES(
                    population,
                    sigma=0.01,
                    optimizer=optax.sgd(0.0),
                    eval_batch_size=naive_batch,
                    noise=args.noise,
                    table_size=naive_table,
                )
                open_step, open_state = generation_step(openes, width, depth)
                t_open = time_call(lambda s=open_step, st=open_state: s(st), args.naive_repeats)
                open_bytes = xla_peak_bytes(open_step, open_state)
                for rank in args.ranks:
                    eggroll = egg.EGGROLL(
                        population,
                        sigma=0.01,
                        rank=rank,
                        optimizer=optax.sgd(0.0),
                        noise=args.noise,
                    )
                    egg_step, egg_state = generation_step(eggroll, width, depth)
                    t_egg = time_call(lambda s=egg_step, st=egg_state: s(st), args.repeats)
                    egg_bytes = xla_peak_bytes(egg_step, egg_state)
                    row = {
                        "model": model,
                        "width": width,
                        "population": population,
                        "rank": rank,
                        "eggroll_ms": round(1e3 * t_egg, 2),
                        "openes_ms": round(1e3 * t_open, 2),
                        "speedup": round(t_open / t_egg, 1),
                        "eggroll_mib": round(egg_bytes / 2**20, 1),
                        "openes_mib": round(open_bytes / 2**20, 1),
                        "memory_ratio": round(open_bytes / egg_bytes, 1),
                    }
                    rows.append(row)
                    print(
                        f"{model:5s} width {width:5d} pop {population:5d} rank {rank}  "
                        f"EGGROLL {row['eggroll_ms']:9.2f} ms {row['eggroll_mib']:8.1f} MiB  "
                        f"OpenES {row['openes_ms']:10.2f} ms {row['openes_mib']:8.1f} MiB  "
                        f"speedup {row['speedup']:6.1f}x  memory {row['memory_ratio']:5.1f}x",
                        flush=True,
                    )
    return {
        "benchmark": "lowrank-vs-naive",
        "machine": machine_info(),
        "noise": args.noise,
        "rows": rows,
    }


def _egg_setup(population: int, width: int, layers: int, seq_len: int):
    from eggroll.models import egglm

    config = egglm.EggConfig(width=width, layers=layers)
    params = egglm.init_params(jax.random.key(0), config)
    tokens = jax.random.randint(jax.random.key(2), (population, seq_len + 1), 0, 256)
    resets = jnp.zeros((population, seq_len), bool)
    hidden = jnp.zeros((population, layers, width), jnp.int8)
    return egglm, params, tokens.astype(jnp.uint8), resets, hidden


def int_noise(args: argparse.Namespace) -> dict:
    """Integer EGGROLL generation time with threefry noise vs the seed-made noise table."""
    from eggroll import integer

    egg_model, params, tokens, resets, hidden = _egg_setup(
        args.population, args.width, args.layers, args.seq_len
    )
    rows = []
    for source in ("keys", "table"):
        es = integer.IntEGGROLL(
            args.population, rank=1, noise=source, eval_batch_size=args.member_batch
        )
        state = es.init(jax.random.key(1), params)

        def generation(state, hidden, es=es):
            scores, hidden = es.evaluate(
                state, egglm.fitness, tokens, resets, hidden, in_axes=0, has_aux=True
            )
            return es.tell(state, scores)[0], hidden

        step = jax.jit(generation)
        seconds = time_call(lambda step=step, state=state: step(state, hidden), args.repeats)
        table_bytes = int(state.noise_table.size)
        rows.append(
            {
                "noise": source,
                "generation_ms": round(1e3 * seconds, 1),
                "state_noise_bytes": table_bytes,
            }
        )
        print(
            f"noise={source:5s}  generation {1e3 * seconds:8.1f} ms  "
            f"table {table_bytes / 2**20:.1f} MiB",
            flush=True,
        )
    ratio = rows[0]["generation_ms"] / rows[1]["generation_ms"]
    print(f"keys / table time ratio: {ratio:.2f}")
    return {
        "benchmark": "int-noise",
        "machine": machine_info(),
        "population": args.population,
        "width": args.width,
        "layers": args.layers,
        "seq_len": args.seq_len,
        "rows": rows,
        "keys_over_table": round(ratio, 3),
    }


def member_project(args: argparse.Namespace) -> dict:
    """``x @ A_i`` under vmap: a plain batched dot vs eggroll.batching's block-GEMM rule."""
    from eggroll.batching import member_project as blocked

    rows = []
    for dtype in (jnp.int8, jnp.float32):
        for n_in in args.widths:
            x = jax.random.randint(
                jax.random.key(0), (args.population, args.seq_len, n_in), -127, 127
            ).astype(dtype)
            a = jax.random.randint(jax.random.key(1), (args.population, n_in, 1), -40, 40).astype(
                dtype
            )
            out = jnp.int32 if dtype == jnp.int8 else jnp.float32
            plain = jax.jit(
                jax.vmap(
                    lambda x, a, out=out: jax.lax.dot_general(
                        x, a, (((1,), (0,)), ((), ())), preferred_element_type=out
                    )
                )
            )
            rule = jax.jit(jax.vmap(blocked))
            t_plain = time_call(lambda plain=plain, x=x, a=a: plain(x, a), args.repeats)
            t_rule = time_call(lambda rule=rule, x=x, a=a: rule(x, a), args.repeats)
            row = {
                "dtype": jnp.dtype(dtype).name,
                "n_in": n_in,
                "plain_ms": round(1e3 * t_plain, 2),
                "blocked_ms": round(1e3 * t_rule, 2),
                "speedup": round(t_plain / t_rule, 1),
            }
            rows.append(row)
            print(
                f"{row['dtype']:8s} n_in {n_in:5d}  plain {row['plain_ms']:8.2f} ms  "
                f"blocked {row['blocked_ms']:8.2f} ms  speedup {row['speedup']:5.1f}x",
                flush=True,
            )
    return {
        "benchmark": "member-project",
        "machine": machine_info(),
        "population": args.population,
        "rows_per_member": args.seq_len,
        "rows": rows,
    }


def vs_inference(args: argparse.Namespace) -> dict:
    """Training throughput (perturbed forward + update) as a share of plain batched inference
    of the same model on the same inputs, timed alternately in one loop."""
    from eggroll import integer
    from eggroll.models import mlp

    rows = []

    def paired(train, infer, repeats):
        jax.block_until_ready((train(), infer()))
        t_train, t_infer = [], []
        for _ in range(repeats):
            for fn, times in ((train, t_train), (infer, t_infer)):
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times.append(time.perf_counter() - start)
        return statistics.median(t_train), statistics.median(t_infer)

    # MLP policy, the paper's 3 × 256: one observation per member (the worst case: the update
    # is a GEMM of half the inference's size) with both noise sources, and an RL-like batch of
    # observations per member (a rollout's steps share the member's noise and the update).
    config = mlp.MLPConfig((256, 256, 256))
    params = mlp.init_params(jax.random.key(0), 64, 8, config)
    fitness = lambda view, x: jnp.sum(mlp.apply(view, x))  # noqa: E731
    infer = jax.jit(jax.vmap(lambda x: jnp.sum(mlp.apply(params, x))))
    for source, per_member in (("keys", 1), ("table", 1), ("table", args.mlp_obs)):
        n = args.population if per_member == 1 else args.population // 8
        obs = jax.random.normal(jax.random.key(1), (n, per_member, 64))
        es = egg.EGGROLL(n, sigma=0.05, rank=1, optimizer=optax.sgd(1e-3), noise=source)
        state = es.init(jax.random.key(2), params)
        train = jax.jit(lambda s, es=es, obs=obs: es.step(s, fitness, obs, in_axes=0)[0])
        t_train, t_infer = paired(
            lambda train=train, state=state: train(state),
            lambda obs=obs: infer(obs),
            args.repeats,
        )
        rows.append(
            {
                "model": f"MLP 3x256 policy, noise={source}",
                "members": n,
                "tokens_per_member": per_member,
                "train_ms": round(1e3 * t_train, 2),
                "inference_ms": round(1e3 * t_infer, 2),
                "percent_of_inference": round(100 * t_infer / t_train, 1),
            }
        )

    # EGG int8 LM, 100 tokens per member.
    for width in args.egg_widths:
        egg_model, p, tokens, resets, hidden = _egg_setup(args.egg_population, width, 2, 100)
        ies = integer.IntEGGROLL(
            args.egg_population, rank=1, error_feedback=True, eval_batch_size=args.member_batch
        )
        istate = ies.init(jax.random.key(1), p)

        def generation(
            st, ies=ies, tokens=tokens, resets=resets, hidden=hidden, fitness=egglm.fitness
        ):
            scores, _ = ies.evaluate(st, fitness, tokens, resets, hidden, in_axes=0, has_aux=True)
            return ies.tell(st, scores)[0]

        step = jax.jit(generation)
        # Inference in the same cache-sized slices as the training step's evaluation.
        forward = jax.jit(
            functools.partial(egglm.batch_loss_bits, slice_size=args.member_batch)
        )
        t_train, t_infer = paired(
            lambda step=step, istate=istate: step(istate),
            lambda forward=forward, p=p, tokens=tokens, resets=resets, hidden=hidden: forward(
                p, tokens, resets, hidden
            ),
            args.repeats,
        )
        rows.append(
            {
                "model": f"EGG int8 LM d={width} L=2",
                "members": args.egg_population,
                "tokens_per_member": 100,
                "train_ms": round(1e3 * t_train, 2),
                "inference_ms": round(1e3 * t_infer, 2),
                "percent_of_inference": round(100 * t_infer / t_train, 1),
            }
        )
    # The float LM (tiny byte Llama-style decoder), 100 tokens per member, next-token loss.
    from eggroll.models import llm, lm_train

    lm_config = llm.tiny_byte_config()
    lm_params = llm.init_params(jax.random.key(0), lm_config)
    n = args.lm_population
    lm_tokens = jax.random.randint(jax.random.key(1), (n, 1, 101), 0, 256)
    les = egg.EGGROLL(
        n,
        sigma=0.01,
        rank=1,
        optimizer=optax.sgd(1e-3),
        noise="table",
        leaf_rule=llm.leaf_rule,
        eval_batch_size=args.member_batch,
    )
    lstate = les.init(jax.random.key(2), lm_params)
    lm_fitness = lambda view, t: -lm_train.loss_fn(view, lm_config, t)  # noqa: E731
    lm_train_step = jax.jit(lambda s: les.step(s, lm_fitness, lm_tokens, in_axes=0)[0])
    lm_infer = jax.jit(
        lambda p, t: jax.lax.map(
            lambda ti: lm_train.loss_fn(p, lm_config, ti), t, batch_size=args.member_batch
        )
    )
    t_train, t_infer = paired(
        lambda: lm_train_step(lstate), lambda: lm_infer(lm_params, lm_tokens), args.repeats
    )
    rows.append(
        {
            "model": f"float LM d={lm_config.hidden_size} L={lm_config.num_layers}",
            "members": n,
            "tokens_per_member": 100,
            "train_ms": round(1e3 * t_train, 2),
            "inference_ms": round(1e3 * t_infer, 2),
            "percent_of_inference": round(100 * t_infer / t_train, 1),
        }
    )
    for row in rows:
        print(
            f"{row['model']:32s} N={row['members']:5d}  train {row['train_ms']:9.2f} ms  "
            f"inference {row['inference_ms']:9.2f} ms  {row['percent_of_inference']:5.1f}%",
            flush=True,
        )
    return {"benchmark": "vs-inference", "machine": machine_info(), "rows": rows}


def scaling(args: argparse.Namespace) -> dict:
    """EGGROLL time per generation (one dense layer) against population and against width,
    with log-log fitted exponents."""
    import numpy as np

    def fit(xs, ts):
        return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])

    def inference_seconds(n: int, width: int) -> float:
        """The unperturbed layer on the same ``(n, width)`` rows: the reference curve."""
        params = {"w": _layer_params(width, 1)["w0"]}
        x = jax.random.normal(jax.random.key(1), (n, width))
        plain = jax.jit(lambda p: jax.vmap(lambda row: dense_layer_fitness(p, row))(x))
        return time_call(lambda: plain(params), args.repeats)

    population_sweeps = []
    for width in args.sweep_widths:
        by_pop, by_pop_inference = [], []
        for n in args.populations:
            es = egg.EGGROLL(n, sigma=0.01, rank=1, optimizer=optax.sgd(0.0), noise=args.noise)
            by_pop.append(generation_seconds(es, width, args.repeats))
            by_pop_inference.append(inference_seconds(n, width))
        population_sweeps.append(
            {
                "width": width,
                "populations": args.populations,
                "ms": [round(1e3 * t, 3) for t in by_pop],
                "exponent": round(fit(args.populations, by_pop), 3),
                "inference_ms": [round(1e3 * t, 3) for t in by_pop_inference],
                "inference_exponent": round(fit(args.populations, by_pop_inference), 3),
            }
        )
    by_width = []
    for w in args.widths:
        es = egg.EGGROLL(
            args.population, sigma=0.01, rank=1, optimizer=optax.sgd(0.0), noise=args.noise
        )
        by_width.append(generation_seconds(es, w, args.repeats))
    result = {
        "benchmark": "scaling",
        "machine": machine_info(),
        "noise": args.noise,
        "population_sweeps": population_sweeps,
        "width_sweep": {
            "population": args.population,
            "widths": args.widths,
            "ms": [round(1e3 * t, 3) for t in by_width],
            "exponent": round(fit(args.widths, by_width), 3),
        },
    }
    for sweep in population_sweeps:
        print("population_sweep", json.dumps(sweep), flush=True)
    print("width_sweep", json.dumps(result["width_sweep"]), flush=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
        for sweep in population_sweeps:
            for key, style, name in (("ms", "o-", "EGGROLL"), ("inference_ms", "s--", "inference")):
                axes[0].loglog(
                    args.populations, sweep[key], style, label=f"{name}, width {sweep['width']}"
                )
        axes[0].legend(fontsize=7)
        axes[0].set_xlabel("population")
        axes[1].loglog(args.widths, [1e3 * t for t in by_width], "o-")
        axes[1].set_xlabel(f"width (population {args.population})")
        axes[1].set_title(f"exponent {fit(args.widths, by_width):.2f}")
        for ax in axes:
            ax.set_ylabel("ms / generation")
            ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        RESULTS.mkdir(exist_ok=True)
        fig.savefig(RESULTS / "scaling.png")
        plt.close(fig)
    except ImportError:
        pass
    return result


def vs_evosax(args: argparse.Namespace) -> dict:
    """CartPole-v1 with the same policy, population, episodes, σ and optimiser through evosax's
    Open_ES and through our EGGROLL and OpenES: time per generation and time to 475."""
    import functools

    from evosax.algorithms import Open_ES

    from eggroll.envs import rl
    from eggroll.models import mlp

    task = rl.make_env("CartPole-v1")
    policy = functools.partial(mlp.apply, activation="tanh")
    params = mlp.init_params(
        jax.random.key(0), task.obs_size, task.action_size, mlp.MLPConfig((64, 64))
    )
    stats = rl.ObsStats.create(task.obs_size)  # no normalisation: identical for all three
    opts = dict(normalise=False)
    n, sigma, lr = args.population, 0.2, 0.1

    def returns_of(member_params, key):
        keys = jax.random.split(key, 1)
        return jnp.mean(rl.episodes(task, policy, member_params, keys, stats, **opts).ret)

    @jax.jit
    def eval_mean(p):
        keys = jax.random.split(jax.random.key(99), 32)
        return jnp.mean(rl.episodes(task, policy, p, keys, stats, **opts).ret)

    rows = []
    ours = {
        "eggroll": egg.EGGROLL(n, sigma=sigma, rank=1, optimizer=optax.sgd(lr)),
        "eggroll noise=table": egg.EGGROLL(
            n, sigma=sigma, rank=1, optimizer=optax.sgd(lr), noise="table"
        ),
        "eggroll OpenES": egg.OpenES(n, sigma=sigma, optimizer=optax.sgd(lr)),
    }
    fitness = rl.make_fitness(task, policy, **opts)
    for name, es in ours.items():
        state = es.init(jax.random.key(1), params)

        @jax.jit
        def gen(state, es=es):
            key = jax.random.fold_in(jax.random.key(5), state.generation)
            keys = jax.vmap(lambda k: jax.random.split(k, 1))(jax.random.split(key, n))
            scores, _ = es.evaluate(state, fitness, keys, stats, in_axes=(0, None), has_aux=True)
            return es.tell(state, scores)[0]

        rows.append(
            _solve(name, lambda s, gen=gen: gen(s), state, lambda s: s.params, eval_mean, args)
        )

    evo = Open_ES(n, params, optimizer=optax.sgd(lr), std_schedule=optax.constant_schedule(sigma))
    evo_params = evo.default_params
    evo_state = evo.init(jax.random.key(1), params, evo_params)

    @jax.jit
    def evo_gen(carry):
        state, counter = carry
        key = jax.random.fold_in(jax.random.key(5), counter)
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, state = evo.ask(ask_key, state, evo_params)
        scores = jax.vmap(returns_of)(population, jax.random.split(eval_key, n))
        state, _ = evo.tell(tell_key, population, -scores, state, evo_params)  # minimises
        return state, counter + 1

    rows.append(
        _solve(
            "evosax Open_ES",
            evo_gen,
            (evo_state, 0),
            lambda c: (
                evo.get_mean(c[0]) if hasattr(evo, "get_mean") else evo._unravel_solution(c[0].mean)
            ),
            eval_mean,
            args,
        )
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    return {
        "benchmark": "vs-evosax",
        "machine": machine_info(),
        "population": n,
        "sigma": sigma,
        "lr": lr,
        "policy": "MLP 4-64-64-2 tanh",
        "rows": rows,
    }


def _solve(name, step, state, mean_of, eval_mean, args) -> dict:
    """Run generations until the mean policy scores ≥ 475 (checked every 5) or the budget."""
    state = step(state)  # compile
    jax.block_until_ready(jax.tree_util.tree_leaves(state))
    per_gen, elapsed, reached, generation = [], 0.0, None, 1
    while generation < args.generations:
        start = time.perf_counter()
        state = step(state)
        jax.block_until_ready(jax.tree_util.tree_leaves(state))
        per_gen.append(time.perf_counter() - start)
        elapsed += per_gen[-1]
        generation += 1
        if generation % 5 == 0 and reached is None:
            score = float(eval_mean(mean_of(state)))
            if score >= 475:
                reached = {"generation": generation, "seconds": round(elapsed, 2)}
                break
    return {
        "strategy": name,
        "ms_per_generation": round(1e3 * statistics.median(per_gen), 2),
        "solved": reached,
        "generations_run": generation,
    }


def llm_decode(args: argparse.Namespace) -> dict:
    """Generated tokens/s of N EGGROLL members decoding together (each its own low-rank
    perturbation, all sharing one prompt batch, one ``vmap`` over members) against the
    unperturbed model decoding the same number of sequences (the prompt batch tiled N times).
    Prefill and the whole decode loop are timed; no stop tokens, so every row runs to the end."""
    import functools

    from eggroll.models import generate as gen
    from eggroll.models import llm

    config = llm.tiny_byte_config(compute_dtype=args.compute_dtype)
    params = llm.init_params(jax.random.key(0), config)
    prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt_len), 0, 256)
    key = jax.random.key(2)
    run = functools.partial(
        gen.generate,
        config=config,
        prompt_mask=None,
        key=key,
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
    )
    rows = []
    for n in args.members:
        # EGGROLL needs an even population >= 2; N = 1 evaluates member 0 of a pair.
        es = egg.EGGROLL(max(2, n + n % 2), sigma=0.01, rank=args.rank, leaf_rule=llm.leaf_rule)
        state = es.init(jax.random.key(3), params)
        members = jnp.arange(n, dtype=jnp.int32)

        def population(state, es=es, members=members):
            return jax.vmap(lambda i: run(es.member(state, i), prompt=prompt).tokens)(members)

        population = jax.jit(population)
        tiled = jnp.tile(prompt, (n, 1))
        plain = jax.jit(lambda p, tiled=tiled: run(p, prompt=tiled).tokens)
        t_pop = time_call(
            lambda population=population, state=state: population(state), args.repeats
        )
        t_plain = time_call(lambda plain=plain: plain(params), args.repeats)
        tokens = n * args.batch * args.new_tokens
        row = {
            "members": n,
            "sequences": n * args.batch,
            "eggroll_tok_s": round(tokens / t_pop, 1),
            "plain_tok_s": round(tokens / t_plain, 1),
            "eggroll_ms": round(1e3 * t_pop, 1),
            "plain_ms": round(1e3 * t_plain, 1),
            "eggroll_vs_plain": round(t_plain / t_pop, 3),
        }
        rows.append(row)
        print(
            f"N={n:4d}  sequences {row['sequences']:5d}  EGGROLL {row['eggroll_tok_s']:10.1f} "
            f"tok/s  plain {row['plain_tok_s']:10.1f} tok/s  ratio {row['eggroll_vs_plain']:.2f}",
            flush=True,
        )
    return {
        "benchmark": "llm-decode",
        "machine": machine_info(),
        "model": f"tiny byte LLM ({llm.count_params(params):,} params, {config.compute_dtype})",
        "prompt_batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "temperature": args.temperature,
        "rank": args.rank,
        "rows": rows,
    }


COMMANDS = {
    "lowrank-vs-naive": "python scripts/bench.py lowrank-vs-naive",
    "int-noise": "python scripts/bench.py int-noise",
    "member-project": "python scripts/bench.py member-project",
    "vs-inference": "python scripts/bench.py vs-inference",
    "scaling": "python scripts/bench.py scaling",
    "vs-evosax": "python scripts/bench.py vs-evosax",
    "llm-decode": "python scripts/bench.py llm-decode",
}
# Benchmarks with a --noise flag: a keys run is written to and reported from NAME-keys.json.
NOISE_VARIANTS = ("lowrank-vs-naive", "scaling")


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _machine(result: dict) -> str:
    m = result.get("machine", {})
    return (
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, jax {m.get('jax', '?')},"
        f" {m.get('date', '?')}."
    )


def report(args: argparse.Namespace) -> dict:
    """Regenerate the measured sections of docs/BENCHMARKS.md from results/*.json.

    The file keeps everything outside the markers ``<!-- bench:NAME -->`` ...
    ``<!-- /bench:NAME -->``; each marked section is rewritten from results/NAME.json."""
    doc_path = Path(args.doc)
    doc = doc_path.read_text()
    renderers = {
        "lowrank-vs-naive": lambda r: (
            f"Noise source for both: `{r.get('noise', 'keys')}`.\n\n"
            + _table(
                r["rows"],
                [
                    "model",
                    "width",
                    "population",
                    "rank",
                    "eggroll_ms",
                    "openes_ms",
                    "speedup",
                    "eggroll_mib",
                    "openes_mib",
                    "memory_ratio",
                ],
            )
        ),
        "int-noise": lambda r: (
            _table(r["rows"], ["noise", "generation_ms", "state_noise_bytes"])
            + f"\n\nthreefry keys / table time: {r['keys_over_table']}"
        ),
        "member-project": lambda r: _table(
            r["rows"], ["dtype", "n_in", "plain_ms", "blocked_ms", "speedup"]
        ),
        "vs-inference": lambda r: _table(
            r["rows"],
            [
                "model",
                "members",
                "tokens_per_member",
                "train_ms",
                "inference_ms",
                "percent_of_inference",
            ],
        ),
        "scaling": lambda r: _table(
            [
                row
                for sweep in r["population_sweeps"]
                for row in (
                    {
                        "sweep": f"population, EGGROLL (width {sweep['width']})",
                        "values": sweep["populations"],
                        "ms": sweep["ms"],
                        "fitted exponent": sweep["exponent"],
                    },
                    {
                        "sweep": f"population, inference (width {sweep['width']})",
                        "values": sweep["populations"],
                        "ms": sweep["inference_ms"],
                        "fitted exponent": sweep["inference_exponent"],
                    },
                )
            ]
            + [
                {
                    "sweep": f"width (population {r['width_sweep']['population']})",
                    "values": r["width_sweep"]["widths"],
                    "ms": r["width_sweep"]["ms"],
                    "fitted exponent": r["width_sweep"]["exponent"],
                }
            ],
            ["sweep", "values", "ms", "fitted exponent"],
        ),
        "vs-evosax": lambda r: _table(
            r["rows"], ["strategy", "ms_per_generation", "solved", "generations_run"]
        ),
        "llm-decode": lambda r: (
            f"{r['model']}; prompt batch {r['prompt_batch']} × {r['prompt_len']} tokens, "
            f"{r['new_tokens']} new tokens per sequence, temperature {r['temperature']}, "
            f"rank {r['rank']}.\n\n"
            + _table(
                r["rows"],
                [
                    "members",
                    "sequences",
                    "eggroll_tok_s",
                    "plain_tok_s",
                    "eggroll_ms",
                    "plain_ms",
                    "eggroll_vs_plain",
                ],
            )
        ),
    }
    updated = []
    variants = [(name, render) for name, render in renderers.items()]
    variants += [(f"{name}-keys", renderers[name]) for name in NOISE_VARIANTS]
    for name, render in variants:
        path = RESULTS / f"{name}.json"
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if not path.exists() or start not in doc:
            continue
        result = json.loads(path.read_text())
        command = result.get("command", COMMANDS.get(name, name))
        body = f"`{command}`. {_machine(result)}\n\n{render(result)}"
        head, rest = doc.split(start, 1)
        doc = head + start + "\n" + body + "\n" + end + rest.split(end, 1)[1]
        updated.append(name)
    doc_path.write_text(doc)
    print(f"updated {', '.join(updated) or 'nothing'} in {doc_path}")
    return {"benchmark": "report", "updated": updated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lowrank-vs-naive", help="EGGROLL vs OpenES time and memory per generation")
    p.add_argument("--models", nargs="+", default=["dense", "mlp3"], choices=["dense", "mlp3"])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--populations", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4])
    p.add_argument("--noise", choices=["keys", "table"], default="table")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naive-repeats", type=int, default=1)
    p.set_defaults(run=lowrank_vs_naive)
    p = sub.add_parser("int-noise", help="integer EGGROLL: threefry noise vs noise table")
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--member-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.set_defaults(run=int_noise)
    p = sub.add_parser("member-project", help="x @ A_i under vmap: batched dot vs block GEMM")
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512])
    p.add_argument("--population", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(run=member_project)
    p = sub.add_parser("vs-inference", help="training throughput as a share of inference")
    p.add_argument("--population", type=int, default=4096)
    p.add_argument("--egg-population", type=int, default=512)
    p.add_argument("--egg-widths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--lm-population", type=int, default=128)
    p.add_argument("--mlp-obs", type=int, default=100, help="observations per member, RL-like row")
    p.add_argument("--member-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.set_defaults(run=vs_inference)
    p = sub.add_parser("scaling", help="time per generation against population and width")
    p.add_argument("--populations", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--population", type=int, default=1024, help="of the width sweep")
    p.add_argument(
        "--sweep-widths", type=int, nargs="+", default=[512, 1024], help="of the population sweeps"
    )
    p.add_argument("--noise", choices=["keys", "table"], default="table")
    p.add_argument("--repeats", type=int, default=20)
    p.set_defaults(run=scaling)
    p = sub.add_parser("vs-evosax", help="CartPole-v1: evosax Open_ES vs ours")
    p.add_argument("--population", type=int, default=256)
    p.add_argument("--generations", type=int, default=200)
    p.set_defaults(run=vs_evosax)
    p = sub.add_parser("llm-decode", help="LLM decoding: N members vs the unperturbed model")
    p.add_argument("--members", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--batch", type=int, default=4, help="prompts shared by every member")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--compute-dtype", default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(run=llm_decode)
    p = sub.add_parser("report", help="rewrite docs/BENCHMARKS.md sections from results/")
    p.add_argument("--doc", default=str(RESULTS.parent / "docs" / "BENCHMARKS.md"))
    p.set_defaults(run=report)
    args = parser.parse_args()
    for name, value in vars(args).items():  # sizes, counts and repeats: all must be ≥ 1
        values = value if isinstance(value, list) else [value]
        if all(type(v) is int for v in values) and any(v < 1 for v in values):
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    result = args.run(args)
    if args.command == "report":
        return
    RESULTS.mkdir(exist_ok=True)
    result["command"] = " ".join(["python scripts/bench.py", *sys.argv[1:]])
    # A run with threefry-key noise keeps its own file, next to the default (table) one.
    keys = args.command in NOISE_VARIANTS and args.noise == "keys"
    out = RESULTS / f"{args.command}{'-keys' if keys else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
