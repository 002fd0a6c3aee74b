"""LLM decoding: generated tokens/s of N EGGROLL members against the unperturbed model.

python scripts/bench.py llm-decode
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

import eggroll as egg
from eggroll.benchmarks.common import add_row, make_result, markdown_table, time_call

NAME = "llm-decode"
HELP = "LLM decoding: N members vs the unperturbed model"
NOISE_VARIANT = False
COLUMNS = [
    "members",
    "sequences",
    "eggroll_tok_s",
    "plain_tok_s",
    "eggroll_ms",
    "plain_ms",
    "eggroll_vs_plain",
]
PROGRESS = (  # a row's line
    "N={members:4d}  sequences {sequences:5d}  EGGROLL {eggroll_tok_s:10.1f} tok/s  "
    "plain {plain_tok_s:10.1f} tok/s  ratio {eggroll_vs_plain:.2f}"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--members", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--batch", type=int, default=4, help="prompts shared by every member")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--compute-dtype", default="float32")
    p.add_argument("--repeats", type=int, default=5)


def run(args: argparse.Namespace) -> dict:
    """Generated tokens/s of N EGGROLL members decoding together (each its own low-rank
    perturbation, all sharing one prompt batch, one ``vmap`` over members) against the
    unperturbed model decoding the same number of sequences (the prompt batch tiled N times).
    Prefill and the whole decode loop are timed; no stop tokens, so every row runs to the end."""
    from eggroll.models import generate as gen
    from eggroll.models import llm

    config = llm.tiny_byte_config(compute_dtype=args.compute_dtype)
    params = llm.init_params(jax.random.key(0), config)
    prompt = jax.random.randint(jax.random.key(1), (args.batch, args.prompt_len), 0, 256)
    key = jax.random.key(2)
    decode = functools.partial(
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
            return jax.vmap(lambda i: decode(es.member(state, i), prompt=prompt).tokens)(members)

        population = jax.jit(population)
        tiled = jnp.tile(prompt, (n, 1))
        plain = jax.jit(lambda p, tiled=tiled: decode(p, prompt=tiled).tokens)
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
        add_row(rows, row, PROGRESS)
    return make_result(
        NAME,
        rows,
        model=f"tiny byte LLM ({llm.count_params(params):,} params, {config.compute_dtype})",
        prompt_batch=args.batch,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        temperature=args.temperature,
        rank=args.rank,
    )


def render(result: dict) -> str:
    return (
        f"{result['model']}; prompt batch {result['prompt_batch']} × {result['prompt_len']} "
        f"tokens, {result['new_tokens']} new tokens per sequence, temperature "
        f"{result['temperature']}, rank {result['rank']}.\n\n"
        + markdown_table(result["rows"], COLUMNS)
    )
