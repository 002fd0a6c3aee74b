"""LLM decoding: generated tokens/s of N EGGROLL members against the unperturbed model.

python scripts/bench.py llm-decode
python scripts/bench.py llm-decode --models rwkv7-0.1b --members 1 32 --batch 1 \
    --prompt-len 8 --new-tokens 8 --repeats 1      # the 0.1B RWKV-7 shape, random weights
python scripts/bench.py llm-decode --models qwen2.5-0.5b --compute-dtype bfloat16 \
    --members 8 32 64 --batch 1 --prompt-len 64 --new-tokens 32 --layers 2 24

Models: ``llama-tiny`` (the tiny byte Llama-style decoder, KV cache), ``rwkv7-tiny``
(:func:`eggroll.models.rwkv7.tiny_config`) and ``rwkv7-0.1b`` (12 layers, width 768, 12 heads
of 64, vocabulary 65,536: the RWKV-7 0.1B shape) and ``qwen2.5-0.5b``
(:func:`eggroll.models.llm.qwen2_5_0_5b_config`: 24 layers, width 896, 494 M parameters).
Weights are random float32 master weights; ``--compute-dtype`` is the dtype the forward pass
computes in. ``--layers`` overrides the number of layers (several values give one row each: the
layers run under ``lax.scan``, so compile time should not grow with them).

Columns: ``state_bytes`` is the decoding memory of one member (its KV cache at the end of
decoding, or its constant RWKV state) for the prompt batch; ``compile_s`` /
``plain_compile_s`` the compile times of the population and plain calls; ``xla_bytes`` XLA's
buffer assignment of the population call (arguments + outputs + temporaries − aliased);
``peak_rss_bytes`` the process's peak resident set while the row was compiled and run (Linux;
it includes the parameters).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

import eggroll as egg
from eggroll.benchmarks.common import (
    add_row,
    make_result,
    markdown_table,
    paired_seconds,
    peak_rss_bytes,
    reset_peak_rss,
    xla_memory,
)

NAME = "llm-decode"
HELP = "LLM decoding: N members vs the unperturbed model"
NOISE_VARIANT = False
MODELS = ("llama-tiny", "rwkv7-tiny", "rwkv7-0.1b", "qwen2.5-0.5b")
COLUMNS = [
    "model",
    "layers",
    "members",
    "sequences",
    "eggroll_tok_s",
    "plain_tok_s",
    "eggroll_ms",
    "plain_ms",
    "eggroll_vs_plain",
    "state_bytes",
    "compile_s",
    "plain_compile_s",
    "xla_bytes",
    "peak_rss_bytes",
]
PROGRESS = (  # a row's line
    "{model:12s} L={layers:3d} N={members:4d}  sequences {sequences:5d}  "
    "EGGROLL {eggroll_tok_s:10.1f} tok/s  plain {plain_tok_s:10.1f} tok/s  "
    "ratio {eggroll_vs_plain:.2f}  compile {compile_s:.1f} s"
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
    p.add_argument(
        "--layers", type=int, nargs="+", default=None,
        help="number of layers (one row set per value; default: the model's own)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    """Generated tokens/s of N EGGROLL members decoding together (each its own low-rank
    perturbation, all sharing one prompt batch, one ``vmap`` over members) against the
    unperturbed model decoding the same number of sequences (the prompt batch tiled N times).
    Prefill and the whole decode loop are timed, the two calls alternated (medians); no stop
    tokens, so every row runs to the end."""
    rows, described = [], []
    for name in args.models:
        for layers in args.layers or [None]:
            model = _model(name, args, layers)
            described.append(model["describe"])
            for n in args.members:
                add_row(rows, _row(name, model, n, args), PROGRESS)
            del model
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


def _model(name: str, args: argparse.Namespace, layers: int | None = None) -> dict:
    """Parameters, config, ``generate``, leaf rule and state bytes of one benchmark model
    (``layers``: its number of layers, default the model's own)."""
    from eggroll.models import generate as gen
    from eggroll.models import llm, rwkv7

    changes = {"compute_dtype": args.compute_dtype}
    if layers is not None:
        changes["num_layers"] = layers
    if name in ("llama-tiny", "qwen2.5-0.5b"):
        make = llm.tiny_byte_config if name == "llama-tiny" else llm.qwen2_5_0_5b_config
        config = make(**changes)
        params = llm.init_params(jax.random.key(0), config)
        cache = llm.init_cache(config, args.batch, args.prompt_len + args.new_tokens)
        state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(cache))
        kind = "tiny byte LLM" if name == "llama-tiny" else "Qwen2.5-0.5B shape"
        generate, rule = gen.generate, llm.leaf_rule
    else:
        if name == "rwkv7-tiny":
            config = rwkv7.tiny_config(**changes)
        else:
            shape = dict(vocab_size=65536, hidden_size=768, num_layers=12, head_size=64)
            config = rwkv7.RWKV7Config(**{**shape, **changes})
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
        "layers": config.num_layers,
        "describe": (
            f"{name}: {kind}, {config.num_layers} layers ({count:,} params, float32 master "
            f"weights, {config.compute_dtype} compute)"
        ),
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

    reset_peak_rss()
    start = time.perf_counter()
    population = jax.jit(population).lower(state).compile()
    compile_s = time.perf_counter() - start
    memory = xla_memory(population)
    tiled = jnp.tile(prompt, (n, 1))
    start = time.perf_counter()
    plain = jax.jit(lambda p: decode(p, prompt=tiled).tokens).lower(params).compile()
    plain_compile_s = time.perf_counter() - start
    # Alternated in one loop (medians), so a machine that slows down mid-run slows both.
    seconds = paired_seconds(
        {"population": lambda: population(state), "plain": lambda: plain(params)}, args.repeats
    )
    t_pop, t_plain = seconds["population"], seconds["plain"]
    tokens = n * args.batch * args.new_tokens
    return {
        "model": name,
        "layers": model["layers"],
        "members": n,
        "sequences": n * args.batch,
        "eggroll_tok_s": round(tokens / t_pop, 1),
        "plain_tok_s": round(tokens / t_plain, 1),
        "eggroll_ms": round(1e3 * t_pop, 1),
        "plain_ms": round(1e3 * t_plain, 1),
        "eggroll_vs_plain": round(t_plain / t_pop, 3),
        "state_bytes": model["state_bytes"],
        "compile_s": round(compile_s, 2),
        "plain_compile_s": round(plain_compile_s, 2),
        "xla_bytes": memory.get("total"),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def render(result: dict) -> str:
    return (
        f"{result['model']}; prompt batch {result['prompt_batch']} × {result['prompt_len']} "
        f"tokens, {result['new_tokens']} new tokens per sequence, temperature "
        f"{result['temperature']}, rank {result['rank']}.\n\n"
        + markdown_table(result["rows"], COLUMNS)
    )
