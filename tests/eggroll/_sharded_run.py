"""Helper run in subprocesses by test_distributed.py: K generations of the float and integer
engines on however many (simulated) CPU devices and processes it is given; params to npz.

    python _sharded_run.py OUT.npz [PROCESS_ID NUM_PROCESSES PORT]
"""

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eggroll import distributed


def float_objective(view, x):
    import eggroll as egg

    h = jnp.tanh(egg.nn.dense(x, view["w1"]) + egg.nn.vector(view["b1"]))
    return -jnp.sum((egg.nn.dense(h, view["w2"]) - 0.3) ** 2)


def int_objective(view, x):
    from eggroll import integer

    return jnp.sum(integer.matmul(x, view["w"]) % 7)


def main(out_path: str) -> None:
    import eggroll as egg
    from eggroll import integer

    es = egg.EGGROLL(16, sigma=0.1, rank=2, optimizer=optax.adam(0.05))
    params = {
        "w1": jax.random.normal(jax.random.key(0), (6, 8)),
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(jax.random.key(1), (8, 3)),
    }
    state = es.init(jax.random.key(2), params)
    x = np.asarray(jax.random.normal(jax.random.key(3), (16, 6)))
    for _ in range(4):
        state, _ = es.step(state, float_objective, x, in_axes=0)

    ies = integer.IntEGGROLL(16, rank=1, alpha=0.5)
    istate = ies.init(jax.random.key(4), {"w": jnp.zeros((6, 5), jnp.int8)})
    xi = np.asarray(jax.random.randint(jax.random.key(5), (16, 6), -100, 100), np.int8)
    for _ in range(4):
        istate, _ = ies.tell(istate, ies.evaluate(istate, int_objective, xi, in_axes=0))
    # Members evaluated in slices (a loop per device) with error feedback.
    ses = integer.IntEGGROLL(16, rank=1, alpha=0.5, error_feedback=True, eval_batch_size=2)
    sstate = ses.init(jax.random.key(4), {"w": jnp.zeros((6, 5), jnp.int8)})
    for _ in range(4):
        sstate, _ = ses.tell(sstate, ses.evaluate(sstate, int_objective, xi, in_axes=0))
    fetch = lambda a: np.asarray(jax.device_get(a))  # noqa: E731
    np.savez(
        out_path,
        devices=jax.device_count(),
        processes=jax.process_count(),
        w1=fetch(state.params["w1"]),
        b1=fetch(state.params["b1"]),
        w2=fetch(state.params["w2"]),
        iw=fetch(istate.params["w"]),
        sliced_iw=fetch(sstate.params["w"]),
        sliced_residual=fetch(sstate.residual["w"]),
    )


COLLECTIVE = re.compile(
    r"= (\(?[^=]*?\)?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
    r"(-start)?\("
)


def collective_sizes() -> list[list]:
    """[engine, op, dtype, elements] for every cross-device collective of a compiled float and
    integer generation whose parameters (≥ 4096 entries per matrix) dwarf the population
    (16)."""
    import eggroll as egg
    from eggroll import integer

    es = egg.EGGROLL(16, sigma=0.1, rank=2, optimizer=optax.adam(0.05))
    params = {"w1": jnp.zeros((64, 96)), "b1": jnp.zeros(96), "w2": jnp.zeros((96, 48))}
    state = es.init(jax.random.key(2), params)
    x = jnp.zeros((16, 64))
    step = jax.jit(lambda s, x: es.step(s, float_objective, x, in_axes=0))
    texts = {"float": step.lower(state, x).compile().as_text()}
    ies = integer.IntEGGROLL(16, rank=1)
    istate = ies.init(jax.random.key(4), {"w": jnp.zeros((64, 80), jnp.int8)})
    xi = jnp.zeros((16, 64), jnp.int8)
    istep = jax.jit(lambda s, x: ies.tell(s, ies.evaluate(s, int_objective, x, in_axes=0)))
    texts["integer"] = istep.lower(istate, xi).compile().as_text()
    found = []
    for engine, text in texts.items():
        for match in COLLECTIVE.finditer(text):
            shapes = re.findall(r"([a-z0-9]+)\[([0-9,]*)\]", match.group(1))
            sizes = [
                (int(np.prod([int(d) for d in dims.split(",") if d] or [1])), dtype)
                for dtype, dims in shapes
            ]
            elements, dtype = max(sizes)
            found.append([engine, match.group(2), dtype, elements])
    return found


if __name__ == "__main__":
    if sys.argv[1] == "--collectives":
        import json

        print(json.dumps(collective_sizes()))
    elif len(sys.argv) == 5:
        pid, count, port = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        distributed.initialize(f"127.0.0.1:{port}", count, pid)
        main(sys.argv[1].replace(".npz", f".p{pid}.npz"))
    else:
        main(sys.argv[1])
