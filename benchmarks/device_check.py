"""The one-command accelerator check: the paper's headline settings, measured side by side.

    python scripts/bench.py device-check            # on one GPU: the paper's sizes, < 8 min
    python scripts/bench.py device-check --tiny     # the same code at CPU test sizes

Three parts, each a ratio of two contenders timed alternately in one loop (medians):

- ``layer``: one ``width``-wide bf16 layer, ``batch`` inputs, rank 1 (the paper: 8192, 1024).
  EGGROLL evaluation (every input is its own member with its own perturbation) against plain
  batched inference, for the noise table and threefry keys (the paper: 91 % / 69 %), and the
  whole generation (evaluation + the estimator + the optax step) against inference.
- ``egg``: the paper's EGG preset (6 × 256, 100 tokens per member) at 2^14 and 2^16 members:
  training tokens/s (:func:`eggroll.train.pretrain.make_step`) against the unperturbed
  model's tokens/s on the same member tokens.
- ``llm``: decoding at the Qwen2.5-0.5B shape (random weights, bf16 compute, fp32 master
  weights): N members, each with its own perturbation, against the unperturbed model decoding
  the same number of sequences; compile seconds of both.

Each part is written to the results file as it finishes, so a run cut short keeps what it
measured.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg
from eggroll.benchmarks import common

NAME = "device-check"
HELP = "the paper's headline settings on this accelerator (layer, EGG preset, 0.5B decode)"
NOISE_VARIANT = False
SIZES = {
    "full": dict(
        width=8192, batch=1024, egg_populations=(1 << 14, 1 << 16), egg_slice=0, egg_model={},
        llm="qwen2.5-0.5b", llm_members=(8, 64), prompt_len=64, new_tokens=32,
    ),
    "tiny": dict(
        width=64, batch=16, egg_populations=(8,), egg_slice=4,
        egg_model=dict(width=32, layers=2), llm="tiny", llm_members=(2,), prompt_len=8,
        new_tokens=4,
    ),
}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="CPU test sizes (the same code paths)")
    p.add_argument("--parts", nargs="+", default=["layer", "egg", "llm"])
    p.add_argument("--repeats", type=int, default=5)


def _ratio(value: float) -> float:
    """A ratio to 4 significant digits (never rounded to 0)."""
    return float(f"{value:.4g}")


def compile_seconds(fn, *args) -> tuple[object, float]:
    """``(compiled, seconds)``: ``fn`` jitted and compiled ahead of time for ``args``."""
    started = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - started


def layer_part(width: int, batch: int, repeats: int) -> list[dict]:
    """One bf16 layer: EGGROLL evaluation and generation against plain inference."""
    key = jax.random.key(0)
    w = (jax.random.normal(key, (width, width)) / np.sqrt(width)).astype(jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (batch, width)).astype(jnp.bfloat16)

    def fitness(view, row):
        return jnp.sum(egg.nn.dense(row[None], view["w"]).astype(jnp.float32))

    def inference(params):
        return jnp.sum(jnp.dot(x, params["w"]).astype(jnp.float32), axis=-1)

    rows = []
    for noise in ("table", "keys"):
        es = egg.EGGROLL(batch, sigma=0.01, optimizer=optax.sgd(1e-3), rank=1, noise=noise)
        state = es.init(jax.random.key(2), {"w": w})
        evaluate, _ = compile_seconds(lambda s, es=es: es.evaluate(s, fitness, x, in_axes=0), state)
        step, _ = compile_seconds(
            lambda s, es=es: es.tell(s, es.evaluate(s, fitness, x, in_axes=0))[0].params, state
        )
        infer, _ = compile_seconds(inference, state.params)
        t = common.paired_seconds(
            {
                "inference": lambda infer=infer, p=state.params: infer(p),
                "evaluate": lambda evaluate=evaluate, s=state: evaluate(s),
                "generation": lambda step=step, s=state: step(s),
            },
            repeats,
        )
        row = {
            "part": "layer",
            "noise": noise,
            "width": width,
            "batch": batch,
            "inference_ms": round(1e3 * t["inference"], 3),
            "evaluate_ms": round(1e3 * t["evaluate"], 3),
            "generation_ms": round(1e3 * t["generation"], 3),
            "evaluate_vs_inference": _ratio(t["inference"] / t["evaluate"]),
            "generation_vs_inference": _ratio(t["inference"] / t["generation"]),
        }
        common.add_row(
            rows,
            row,
            "layer {width}, batch {batch}, {noise}: evaluation {evaluate_vs_inference:.1%} "
            "of inference, generation {generation_vs_inference:.1%}",
        )
    return rows


def egg_part(
    populations: tuple[int, ...], member_slice: int, model: dict, repeats: int
) -> list[dict]:
    """The paper's EGG preset (``model`` overrides its shape, for tests): training tokens/s
    against the unperturbed model's."""
    from eggroll.models import egglm
    from eggroll.train import pretrain

    rows = []
    for population in populations:
        slicing = {"member_batch": member_slice} if member_slice else {}
        config = pretrain.Config.from_preset("paper", population=population, **slicing, **model)
        es = pretrain.make_strategy(config)

        state = es.init(jax.random.key(0), egglm.init_params(jax.random.key(1), config.model))
        hidden = jnp.zeros((population, config.layers, config.width), jnp.int8)
        streams = config.streams
        tokens = jax.random.randint(
            jax.random.key(2), (streams, config.seq_len + 1), 0, 256
        ).astype(jnp.uint8)
        resets = jnp.zeros((streams, config.seq_len), bool)
        step = pretrain.make_step(es, config.group_size)
        started = time.perf_counter()
        jax.block_until_ready(step(state, hidden, tokens, resets))
        first = time.perf_counter() - started
        train, infer, infer_whole = pretrain.side_by_side(
            step, state, hidden, tokens, resets, config.group_size, config.member_slice, repeats
        )
        row = {
            "part": "egg",
            "population": population,
            "model": f"{config.layers} x {config.width}",
            "member_slice": config.member_slice,
            "train_tok_s": round(train, 1),
            "inference_tok_s": round(infer, 1),
            "one_vmap_inference_tok_s": round(infer_whole, 1),
            "train_vs_inference": _ratio(train / infer),
            "first_step_s": round(first, 2),
        }
        common.add_row(
            rows,
            row,
            "EGG {model}, N={population}: training {train_tok_s:,.0f} tok/s, inference "
            "{inference_tok_s:,.0f} tok/s ({train_vs_inference:.1%})",
        )
    return rows


def llm_part(shape: str, members: tuple[int, ...], prompt_len: int, new_tokens: int, repeats: int):
    """Members decoding against the unperturbed model at one LLM shape."""
    from eggroll.models import generate, llm

    if shape == "tiny":
        config = llm.tiny_byte_config(
            hidden_size=32, num_layers=1, intermediate_size=64, num_heads=2, num_kv_heads=1,
            compute_dtype="bfloat16",
        )  # fmt: skip
    else:
        config = llm.qwen2_5_0_5b_config(compute_dtype="bfloat16")
    params = llm.init_params(jax.random.key(0), config)  # float32 master weights
    prompt = jax.random.randint(jax.random.key(1), (1, prompt_len), 0, config.vocab_size)
    rows = []
    for n in members:
        es = egg.EGGROLL(max(2, n + n % 2), sigma=1e-3, rank=1, leaf_rule=llm.leaf_rule)
        state = es.init(jax.random.key(3), params)

        def decode(p, prompts):
            out = generate.generate(
                p, config, prompts, None, jax.random.key(4), max_new_tokens=new_tokens
            )
            return out.tokens

        def population(state, es=es, n=n):
            return jax.vmap(lambda i: decode(es.member(state, i), prompt))(jnp.arange(n))

        tiled = jnp.tile(prompt, (n, 1))
        pop, pop_compile = compile_seconds(population, state)
        plain, plain_compile = compile_seconds(decode, params, tiled)
        t = common.paired_seconds(
            {
                "members": lambda pop=pop, s=state: pop(s),
                "plain": lambda plain=plain, tiled=tiled: plain(params, tiled),
            },
            repeats,
        )
        tokens = n * new_tokens
        row = {
            "part": "llm",
            "model": f"{shape} ({llm.count_params(params):,} params, bf16 compute)",
            "members": n,
            "members_tok_s": round(tokens / t["members"], 1),
            "plain_tok_s": round(tokens / t["plain"], 1),
            "members_vs_plain": _ratio(t["plain"] / t["members"]),
            "members_compile_s": round(pop_compile, 2),
            "plain_compile_s": round(plain_compile, 2),
        }
        common.add_row(
            rows,
            row,
            "LLM {model}, N={members}: members {members_tok_s:,.0f} tok/s, plain "
            "{plain_tok_s:,.0f} tok/s ({members_vs_plain:.1%})",
        )
    return rows


def run(args: argparse.Namespace) -> dict:
    sizes = SIZES["tiny" if args.tiny else "full"]
    unknown = sorted(set(args.parts) - {"layer", "egg", "llm"})
    if unknown:
        raise SystemExit(f"--parts: unknown {unknown}; choose from layer, egg, llm")
    rows: list[dict] = []
    path = common.results_path(args.results_dir, NAME)
    parts = {
        "layer": lambda: layer_part(sizes["width"], sizes["batch"], args.repeats),
        "egg": lambda: egg_part(
            sizes["egg_populations"], sizes["egg_slice"], sizes["egg_model"], args.repeats
        ),
        "llm": lambda: llm_part(
            sizes["llm"], sizes["llm_members"], sizes["prompt_len"], sizes["new_tokens"],
            args.repeats,
        ),
    }  # fmt: skip
    result = common.make_result(NAME, rows, sizes="tiny" if args.tiny else "full")
    for part in args.parts:
        rows.extend(parts[part]())
        common.write_result(path, result)  # a run cut short keeps the parts it finished
    return result


def render(result: dict) -> str:
    lines = [f"Sizes: {result.get('sizes')}.", ""]
    for part in ("layer", "egg", "llm"):
        rows = [r for r in result["rows"] if r["part"] == part]
        if rows:
            columns = [k for k in rows[0] if k != "part"]
            lines += [common.markdown_table(rows, columns), ""]
    return "\n".join(lines).rstrip()
