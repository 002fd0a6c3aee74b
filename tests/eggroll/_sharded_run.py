"""Helper run in a subprocess by test_distributed.py: K generations of the float and integer
engines on however many (simulated) CPU devices the environment gives, params saved to npz."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import eggroll as egg
from eggroll import integer


def float_objective(view, x):
    h = jnp.tanh(egg.nn.dense(x, view["w1"]) + egg.nn.vector(view["b1"]))
    return -jnp.sum((egg.nn.dense(h, view["w2"]) - 0.3) ** 2)


def int_objective(view, x):
    return jnp.sum(integer.matmul(x, view["w"]) % 7)


def main(out_path: str) -> None:
    es = egg.EGGROLL(16, sigma=0.1, rank=2, optimizer=optax.adam(0.05))
    params = {
        "w1": jax.random.normal(jax.random.key(0), (6, 8)),
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(jax.random.key(1), (8, 3)),
    }
    state = es.init(jax.random.key(2), params)
    x = jax.random.normal(jax.random.key(3), (16, 6))
    for _ in range(4):
        state, _ = es.step(state, float_objective, x, in_axes=0)

    ies = integer.IntEGGROLL(16, rank=1, alpha=0.5)
    istate = ies.init(jax.random.key(4), {"w": jnp.zeros((6, 5), jnp.int8)})
    xi = jax.random.randint(jax.random.key(5), (16, 6), -100, 100).astype(jnp.int8)
    for _ in range(4):
        istate, _ = ies.tell(istate, ies.evaluate(istate, int_objective, xi, in_axes=0))
    np.savez(
        out_path,
        devices=jax.device_count(),
        w1=state.params["w1"],
        b1=state.params["b1"],
        w2=state.params["w2"],
        iw=istate.params["w"],
    )


if __name__ == "__main__":
    main(sys.argv[1])
