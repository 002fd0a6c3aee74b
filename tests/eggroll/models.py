"""A tiny model used by several engine tests: embedding, dense layers, bias, scanned layers."""

import jax
import jax.numpy as jnp

import eggroll as egg


def make_params(key, vocab=11, width=8, depth=3, out=4):
    k = jax.random.split(key, 5)
    return {
        "emb": jax.random.normal(k[0], (vocab, width)),
        "w_in": jax.random.normal(k[1], (width, width)) / jnp.sqrt(width),
        "b_in": 0.1 * jax.random.normal(k[2], (width,)),
        "layers": {
            "w": jax.random.normal(k[3], (depth, width, width)) / jnp.sqrt(width),
            "scale": jnp.ones((depth, width)),
        },
        "w_out": jax.random.normal(k[4], (width, out)) / jnp.sqrt(width),
    }


def forward(params, ids):
    """ids (T,) int → logits (T, out)."""
    x = egg.nn.embed(ids, params["emb"])
    h = jnp.tanh(egg.nn.dense(x, params["w_in"]) + egg.nn.vector(params["b_in"]))

    def layer(h, p):
        return jnp.tanh(egg.nn.dense(h, p["w"]) * egg.nn.vector(p["scale"])) + h, None

    h, _ = jax.lax.scan(layer, h, params["layers"])
    return egg.nn.dense(h, params["w_out"])


def fitness(params, ids):
    """A smooth scalar of the whole forward pass."""
    return -jnp.mean((forward(params, ids) - 0.5) ** 2)


# Per-layer scales are stacked vectors (depth, width): full-rank noise, not a matrix.
RULE = {r"layers/scale$": "full"}
