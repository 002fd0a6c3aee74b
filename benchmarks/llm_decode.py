"""LLM decoding: generated tokens/s of N EGGROLL members against the unperturbed model.

python scripts/bench.py llm-decode
python scripts/bench.py llm-decode --models rwkv7-0.1b --members 1 32 --batch 1 \
    --prompt-len 8 --new-tokens 8 --repeats 1      # the 0.1B RWKV-7 shape, random weights

Models: ``llama-tiny`` (the tiny byte Llama-style decoder, KV cache), ``rwkv7-tiny``
(:func:`eggroll.models.rwkv7.tiny_config`) and ``rwkv7-0.1b`` (12 layers, width 768, 12 heads
of 64, vocabulary 65,536: the RWKV-7 0.1B shape). ``state_bytes`` is the decoding memory of one
member (its KV cache at the end of decoding, or its constant RWKV state) for the prompt batch;
``compile_s`` the compile time of the population call.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

import eggroll as egg
from eggroll.benchmarks.common import add_row, make_result, markdown_table, paired_seconds

NAME = "llm-decode"
HELP = "LLM decoding: N members vs the unperturbed model"
NOISE_VARIANT = False
MODELS = ("llama-tiny", "rwkv7-tiny", "rwkv7-0.1b")
COLUMNS = [
    "model",
    "members",
    "sequences",
    "eggroll_tok_s",
    "plain_tok_s",
    "eggroll_ms",
    "plain_ms",
    "eggroll_vs_plain",
    "state_bytes",
    "compile_s",
]
PROGRESS = (  # a row's line
    "{model:11s} N={members:4d}  sequences {sequences:5d}  EGGROLL {eggroll_tok_s:10.1f} tok/s  "
    "plain {plain_tok_s:10.1f} tok/s  ratio {eggroll_vs_plain:.2f}"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", choices=MODELS, default=["llama-tiny", "rwkv7-tiny"])
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
    Prefill and the whole decode loop are timed, the two calls alternated (medians); no stop
    tokens, so every row runs to the end."""
    rows, described = [], []
    for name in args.models:
        model = _model(name, args)
        described.append(model["describe"])
        for n in args.members:
            add_row(rows, _row(name, model, n, args), PROGRESS)
    return make_result(
        NAME,
        rows,
        model="; ".join(described),
        prompt_batch=args.batch,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        temperature=args.temperature,
        rank=args.rank,
    )


def _model(name: str, args: argparse.Namespace) -> dict:
    """Parameters, config, ``generate``, leaf rule and state bytes of one benchmark model."""
    from eggroll.models import generate as gen
    from eggroll.models import llm, rwkv7

    if name == "llama-tiny":
        config = llm.tiny_byte_config(compute_dtype=args.compute_dtype)
        params = llm.init_params(jax.random.key(0), config)
        cache = llm.init_cache(config, args.batch, args.prompt_len + args.new_tokens)
        state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(cache))
        generate, rule, kind = gen.generate, llm.leaf_rule, "tiny byte LLM"
    else:
        if name == "rwkv7-tiny":
            config = rwkv7.tiny_config(compute_dtype=args.compute_dtype)
        else:
            config = rwkv7.RWKV7Config(
                vocab_size=65536, hidden_size=768, num_layers=12, head_size=64,
                compute_dtype=args.compute_dtype,
            )  # fmt: skip
        params = rwkv7.init_params(jax.random.key(0), config)
        state_bytes = rwkv7.state_bytes(config, args.batch)
        generate, rule, kind = rwkv7.generate, rwkv7.leaf_rule, f"RWKV-7 {name[6:]}"
    count = llm.count_params(params)
    return {
        "config": config,
        "params": params,
        "generate": generate,
        "leaf_rule": rule,
        "state_bytes": state_bytes,
        "describe": f"{name}: {kind} ({count:,} params, {config.compute_dtype})",
    }


def _row(name: str, model: dict, n: int, args: argparse.Namespace) -> dict:
    config, params = model["config"], model["params"]
    prompt = jax.random.randint(
        jax.random.key(1), (args.batch, args.prompt_len), 0, min(256, config.vocab_size)
    )
    decode = functools.partial(
        model["generate"],
        config=config,
        prompt_mask=None,
        key=jax.random.key(2),
        max_new_tokens=args.new_tokens,
        temperature=args.temperature,
    )
    # EGGROLL needs an even population >= 2; N = 1 evaluates member 0 of a pair.
    es = egg.EGGROLL(max(2, n + n % 2), sigma=0.01, rank=args.rank, leaf_rule=model["leaf_rule"])
    state = es.init(jax.random.key(3), params)
    members = jnp.arange(n, dtype=jnp.int32)

    def population(state):
        return jax.vmap(lambda i: decode(es.member(state, i), prompt=prompt).tokens)(members)

    start = time.perf_counter()
    population = jax.jit(population).lower(state).compile()
    compile_s = time.perf_counter() - start
    tiled = jnp.tile(prompt, (n, 1))
    plain = jax.jit(lambda p: decode(p, prompt=tiled).tokens)
    # Alternated in one loop (medians), so a machine that slows down mid-run slows both.
    seconds = paired_seconds(
        {"population": lambda: population(state), "plain": lambda: plain(params)}, args.repeats
    )
    t_pop, t_plain = seconds["population"], seconds["plain"]
    tokens = n * args.batch * args.new_tokens
    return {
        "model": name,
        "members": n,
        "sequences": n * args.batch,
        "eggroll_tok_s": round(tokens / t_pop, 1),
        "plain_tok_s": round(tokens / t_plain, 1),
        "eggroll_ms": round(1e3 * t_pop, 1),
        "plain_ms": round(1e3 * t_plain, 1),
        "eggroll_vs_plain": round(t_plain / t_pop, 3),
        "state_bytes": model["state_bytes"],
        "compile_s": round(compile_s, 2),
    }


def render(result: dict) -> str:
    return (
        f"{result['model']}; prompt batch {result['prompt_batch']} × {result['prompt_len']} "
        f"tokens, {result['new_tokens']} new tokens per sequence, temperature "
        f"{result['temperature']}, rank {result['rank']}.\n\n"
        + markdown_table(result["rows"], COLUMNS)
    )
