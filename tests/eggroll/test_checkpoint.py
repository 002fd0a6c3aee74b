"""Save at generation k, load, continue: bitwise identical; bad files give clear errors."""

import os

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll.checkpoint import CheckpointError


def _objective(view, x):
    return -jnp.sum((egg.nn.dense(x, view["w"]) + egg.nn.vector(view["b"]) - 1.0) ** 2)


ES = egg.EGGROLL(8, sigma=0.1, rank=2, optimizer=optax.adam(1e-2))
X = jax.random.normal(jax.random.key(1), (3, 4))


def _params():
    return {
        "w": jax.random.normal(jax.random.key(0), (4, 3)),
        "b": jnp.zeros(3, jnp.bfloat16).astype(jnp.float32),
    }


def _run(state, generations):
    for _ in range(generations):
        state, _ = ES.step(state, _objective, X)
    return state


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_bitwise_identical(tmp_path):
    template = ES.init(jax.random.key(5), _params())
    uninterrupted = _run(template, 6)
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, _run(template, 3), ES.config(), {"step": 3})
    restored, metadata = egg.checkpoint.load(path, template, ES.config())
    assert metadata == {"step": 3}
    assert int(restored.generation) == 3
    _assert_same(_run(restored, 3), uninterrupted)


def test_save_leaves_no_temp_file_and_overwrites_atomically(tmp_path):
    state = ES.init(jax.random.key(5), _params())
    path = tmp_path / "ck" / "state.msgpack"
    egg.checkpoint.save(path, state, ES.config())
    egg.checkpoint.save(path, _run(state, 1), ES.config())
    assert os.listdir(path.parent) == ["state.msgpack"]
    assert int(egg.checkpoint.load(path, state)[0].generation) == 1


def test_truncated_file_raises(tmp_path):
    state = ES.init(jax.random.key(5), _params())
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, state, ES.config())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        egg.checkpoint.load(path, state)


def test_flipped_byte_fails_checksum(tmp_path):
    state = ES.init(jax.random.key(5), _params())
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, state, ES.config())
    doc = msgpack.unpackb(path.read_bytes())
    leaves = bytearray(doc["leaves"])
    leaves[-3] ^= 0xFF
    doc["leaves"] = bytes(leaves)
    path.write_bytes(msgpack.packb(doc))
    with pytest.raises(CheckpointError, match="checksum"):
        egg.checkpoint.load(path, state)


def test_mismatched_config_names_the_fields(tmp_path):
    state = ES.init(jax.random.key(5), _params())
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, state, ES.config())
    other = egg.EGGROLL(16, sigma=0.1, rank=1)
    with pytest.raises(CheckpointError, match="population_size: saved 8, now 16.*rank: saved 2"):
        egg.checkpoint.load(path, state, other.config())


def test_mismatched_shapes_and_missing_files(tmp_path):
    state = ES.init(jax.random.key(5), _params())
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, state)
    bigger = ES.init(jax.random.key(5), {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)})
    with pytest.raises(CheckpointError, match="params/w"):
        egg.checkpoint.load(path, bigger)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        egg.checkpoint.load(tmp_path / "missing.msgpack", state)
    (tmp_path / "junk").write_bytes(msgpack.packb([1, 2, 3]))
    with pytest.raises(CheckpointError, match="not an eggroll checkpoint"):
        egg.checkpoint.load(tmp_path / "junk", state)


def test_bfloat16_and_integer_leaves_roundtrip(tmp_path):
    tree = {
        "a": jnp.arange(6, dtype=jnp.int8).reshape(2, 3),
        "b": jnp.ones(4, jnp.bfloat16) / 3,
        "k": jax.random.key(3),
    }
    egg.checkpoint.save(tmp_path / "t", tree)
    back, _ = egg.checkpoint.load(tmp_path / "t", tree)
    _assert_same(tree, back)
    assert back["b"].dtype == jnp.bfloat16
