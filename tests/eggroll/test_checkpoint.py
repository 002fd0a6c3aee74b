"""Save at generation k, load, continue: bitwise identical; bad files give clear errors."""

import os
import stat
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
import pytest

import eggroll as egg
from eggroll.checkpoint import CheckpointError
from eggroll.leaves import path_string


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
    data = bytearray(path.read_bytes())
    at = bytes(data).index(np.asarray(state.params["w"]).tobytes())  # a parameter's bytes
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="failed its checksum: it is corrupted"):
        egg.checkpoint.load(path, state)


TINY = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "key": jax.random.key(7)}
TINY_META = {"step": 1234, "streams": [70000, 3, 2**40], "name": "run"}


def test_every_flipped_byte_is_refused(tmp_path):
    """Config, metadata integers, keys, leaves, the checksum itself: any one changed byte of
    the file makes it refused (the version-1 checksum let metadata flips through)."""
    path = tmp_path / "t.msgpack"
    egg.checkpoint.save(path, TINY, {"population_size": 8}, TINY_META)
    raw = path.read_bytes()
    assert egg.checkpoint.parse(raw)["metadata"] == TINY_META
    step_at = raw.index(msgpack.packb(1234))  # the step counter, as stored
    assert step_at < raw.index(b"leaves")  # in the metadata, outside the leaves
    accepted = []
    for i in range(len(raw)):
        for mask in (0x01, 0xFF):
            flipped = bytearray(raw)
            flipped[i] ^= mask
            try:
                egg.checkpoint.parse(bytes(flipped))
                accepted.append((i, mask))
            except CheckpointError:
                pass
    assert not accepted, accepted


def test_flipped_metadata_integer_is_refused(tmp_path):
    path = tmp_path / "t.msgpack"
    egg.checkpoint.save(path, TINY, {}, TINY_META)
    data = bytearray(path.read_bytes())
    data[data.index(msgpack.packb(1234)) + 2] ^= 0x01  # step 1234 -> 1235
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="failed its checksum"):
        egg.checkpoint.load(path, TINY)


def _save_version_1(path, state, config, metadata):
    """How eggroll wrote checkpoints before format version 2 (checksum of the leaves only)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    leaves = [egg.checkpoint._encode_leaf(path_string(p), leaf) for p, leaf in flat]
    packed = msgpack.packb(leaves, use_bin_type=True)
    document = {
        "format": "eggroll-checkpoint",
        "version": 1,
        "config": config,
        "metadata": metadata,
        "leaves": packed,
        "checksum": zlib.crc32(packed),
    }
    path.write_bytes(msgpack.packb(document, use_bin_type=True))


def test_version_1_files_still_load(tmp_path):
    template = ES.init(jax.random.key(5), _params())
    state = _run(template, 2)
    path = tmp_path / "old.msgpack"
    _save_version_1(path, state, ES.config(), {"step": 2})
    restored, metadata = egg.checkpoint.load(path, template, ES.config())
    assert metadata == {"step": 2}
    _assert_same(restored, state)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(np.asarray(state.params["w"]).tobytes())
    data[at + 5] ^= 0xFF  # a parameter byte: the version-1 checksum still guards the leaves
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="failed its checksum"):
        egg.checkpoint.load(path, template)
    egg.checkpoint.save(path, restored, ES.config(), metadata)  # re-saved as version 2
    assert egg.checkpoint.read(path)["version"] == egg.checkpoint.VERSION == 2


def test_unknown_version_is_named(tmp_path):
    path = tmp_path / "new.msgpack"
    path.write_bytes(msgpack.packb({"format": "eggroll-checkpoint", "version": 9}))
    with pytest.raises(CheckpointError, match="format version 9, this eggroll reads versions 1"):
        egg.checkpoint.read(path)


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


def _temp(folder, name, age):
    tmp = folder / f".{name}.{'abcd_123' if age else 'fresh_99'}.tmp"
    tmp.write_bytes(b"partial")
    if age:
        os.utime(tmp, (time.time() - age, time.time() - age))
    return tmp


def test_save_removes_stale_temp_files_of_its_target_only(tmp_path):
    """A killed save leaves ``.NAME.XXXXXXXX.tmp``: the next save to NAME removes it once it
    is STALE_TEMP_SECONDS old; a fresh one (a live writer's) and other targets' stay."""
    path = tmp_path / "state.msgpack"
    stale = _temp(tmp_path, path.name, egg.checkpoint.STALE_TEMP_SECONDS + 60)
    fresh = _temp(tmp_path, path.name, 0)
    other = _temp(tmp_path, "other.msgpack", egg.checkpoint.STALE_TEMP_SECONDS + 60)
    longer = _temp(tmp_path, "state.msgpack.bak", egg.checkpoint.STALE_TEMP_SECONDS + 60)
    egg.checkpoint.save(path, TINY, {}, TINY_META)
    assert not stale.exists()
    assert fresh.exists() and other.exists() and longer.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, fresh.name, other.name, longer.name])


def test_stale_temp_file_locked_by_a_live_writer_is_kept(tmp_path):
    path = tmp_path / "state.msgpack"
    stale = _temp(tmp_path, path.name, egg.checkpoint.STALE_TEMP_SECONDS + 60)
    code = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'rb+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(stale)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert egg.checkpoint.remove_stale_temps(path) == []
        assert stale.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert egg.checkpoint.remove_stale_temps(path) == [stale]


def test_written_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        egg.checkpoint.save(tmp_path / "a.msgpack", TINY)
        egg.checkpoint.write_atomic(tmp_path / "summary.json", b"{}")
        for name in ("a.msgpack", "summary.json"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
        os.umask(0o027)
        egg.checkpoint.write_atomic(tmp_path / "b.json", b"{}")
        assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o640
        os.chmod(tmp_path / "a.msgpack", 0o600)  # replacing a file keeps its permissions
        egg.checkpoint.save(tmp_path / "a.msgpack", TINY)
        assert stat.S_IMODE(os.stat(tmp_path / "a.msgpack").st_mode) == 0o600
    finally:
        os.umask(old)


def test_corpus_cache_writes_share_the_atomic_writer(tmp_path):
    from eggroll.data import text

    old = os.umask(0o022)
    try:
        stale = _temp(tmp_path, "c.u8", egg.checkpoint.STALE_TEMP_SECONDS + 60)
        text._atomic_write(tmp_path / "c.u8", lambda f: f.write(b"abc"))
    finally:
        os.umask(old)
    assert (tmp_path / "c.u8").read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(tmp_path / "c.u8").st_mode) == 0o644
    assert not stale.exists()
    with pytest.raises(ZeroDivisionError):  # a failing writer leaves the old file and no temp
        text._atomic_write(tmp_path / "c.u8", lambda f: f.write(b"x") and 1 / 0)
    assert os.listdir(tmp_path) == ["c.u8"] and (tmp_path / "c.u8").read_bytes() == b"abc"


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state.msgpack"
    egg.checkpoint.save(path, TINY, {}, TINY_META)
    before = path.read_bytes()

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        egg.checkpoint.save(path, TINY, {}, {"step": 99})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]

    def short_write(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        egg.checkpoint.write_atomic_with(path, short_write)
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]
    assert egg.checkpoint.read(path)["metadata"] == TINY_META


def test_read_only_folder_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ro" / "state.msgpack"
    egg.checkpoint.save(path, TINY, {}, TINY_META)
    before = path.read_bytes()
    if os.geteuid() != 0:  # root writes into read-only folders: simulated below
        os.chmod(path.parent, 0o555)
        try:
            with pytest.raises(PermissionError):
                egg.checkpoint.save(path, TINY, {}, {"step": 99})
        finally:
            os.chmod(path.parent, 0o755)
    real_open = os.open

    def read_only(name, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(name))
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OSError, match="Read-only"):
        egg.checkpoint.save(path, TINY, {}, {"step": 99})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]
