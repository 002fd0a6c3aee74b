"""Checkpoints: any state pytree as a versioned msgpack file, written atomically. No pickle.

File layout, version 2 (one msgpack map, its entries in this order)::

    {"format": "eggroll-checkpoint", "version": 2,
     "config": {...strategy.config()...},       # the fingerprint checked on load
     "metadata": {...JSON-able user data...},
     "leaves": [{"path": str, "dtype": str, "shape": [int], "key_impl": str | None,
                 "data": bytes}, ...],
     "checksum": crc32 of every byte of the file before the checksum's own 4 bytes}

The checksum is always stored as a msgpack ``uint32`` (``0xce`` and 4 big-endian bytes), the
last 5 bytes of the file, so it covers every field: format, version, config, metadata and
leaves, and the keys themselves; any one changed byte (CRC-32 catches every error burst of
up to 32 bits) makes :func:`read` refuse the file.

Version 1 files (eggroll before the whole-file checksum) are still read, so existing runs
resume: there ``"leaves"`` is a msgpack-packed byte string and ``"checksum"`` covers only those
bytes, not the config or the metadata. ``save`` always writes version 2.

``load`` needs a template pytree of the same structure (e.g. ``strategy.init(...)``): paths,
shapes and dtypes are checked leaf by leaf, so a mismatch names the offending leaf.

Files are written by :func:`write_atomic` / :func:`write_atomic_with`: a temp file in the same
folder, fsync, rename. A new file gets the permissions ``open(path, "w")`` would give
(``0o666`` less the umask, e.g. ``0o644``); replacing a file keeps its permission bits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from eggroll.leaves import path_string

FORMAT = "eggroll-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
# A temp file left by a killed save is removed by a later save to the same path once it is
# this old (seconds since its last write) and no process holds its lock.
STALE_TEMP_SECONDS = 600.0
_TEMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_UINT32 = 0xCE  # msgpack's marker of a 4-byte unsigned integer


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted, or does not fit the running config."""


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _encode_leaf(path: str, leaf: Any) -> dict[str, Any]:
    key_impl = None
    if _is_key(leaf):
        key_impl = str(jax.random.key_impl(leaf))
        leaf = jax.random.key_data(leaf)
    array = np.asarray(jax.device_get(leaf))
    return {
        "path": path,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "key_impl": key_impl,
        "data": np.ascontiguousarray(array).tobytes(),
    }


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(getattr(jnp, name))  # bfloat16 and friends via ml_dtypes


def _temp_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.[{_TEMP_ALPHABET}]{{8}}\.tmp")


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty ``.NAME.XXXXXXXX.tmp`` in ``folder``, opened for writing with mode
    ``0o666`` so the umask (and the folder's default ACL) apply as for ``open(path, "w")``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        suffix = "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(8))
        tmp = folder / f".{name}.{suffix}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(folder / f".{name}.*"))


def _try_lock(fd: int) -> bool:
    """Take an advisory lock on ``fd`` without waiting; False when another process holds it.
    Where the file system has no locks, True (the age rule alone then guards a live writer's
    temp file)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def remove_stale_temps(path: str | os.PathLike, max_age: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temp files that killed saves to ``path`` left behind; returns them.

    Only files named like this module's temp files for exactly this target
    (``.NAME.XXXXXXXX.tmp`` next to it) are considered, and one is removed only when both hold:
    it was last written more than ``max_age`` seconds ago, and no process holds its lock (a
    live save locks its temp file until it is renamed). The lock guards live writers on file
    systems with working ``flock``; the age guards them where locks are local to one host.
    Should a live writer's file still be removed, that save fails with an error on rename:
    the previous file at ``path`` is never damaged.
    """
    path = Path(path)
    pattern = _temp_pattern(path.name)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    now = time.time()
    for entry in names:
        if not pattern.fullmatch(entry):
            continue
        tmp = path.parent / entry
        try:  # NFS emulates flock with POSIX locks, which need a file open for writing
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except PermissionError:
            try:
                fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                continue
        except OSError:
            continue
        try:
            if now - os.fstat(fd).st_mtime <= max_age or not _try_lock(fd):
                continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def write_atomic_with(path: str | os.PathLike, writer: Callable[[IO[bytes]], Any]) -> None:
    """Call ``writer(file)`` on a new temp file next to ``path``, fsync it, then rename it
    onto ``path``: readers see the old file or the complete new one, never a part.

    A new file gets the permissions ``open(path, "w")`` would give (``0o666`` less the
    umask); replacing a file keeps its permission bits. Stale temp files of the same target
    left by killed saves are removed first (:func:`remove_stale_temps`). On any error (a
    full disk, a read-only folder, an exception in ``writer``) the temp file is removed, the
    previous file at ``path`` is left as it was, and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        _try_lock(fd)  # held until closed, after the rename: see remove_stale_temps
        try:
            os.fchmod(fd, os.stat(path).st_mode & 0o777)
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb", closefd=False) as handle:
            writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (see :func:`write_atomic_with`)."""
    write_atomic_with(path, lambda handle: handle.write(payload))


def save(
    path: str | os.PathLike,
    state: Any,
    config: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save a state pytree (``ESState`` or any pytree of arrays) to ``path`` atomically.

    ``config`` is the strategy's fingerprint (``strategy.config()``), checked by ``load``;
    ``metadata`` is free JSON-able data returned by ``load`` (step counters, run settings).
    """
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    leaves = [_encode_leaf(path_string(p), leaf) for p, leaf in flat]
    packer = msgpack.Packer(use_bin_type=True)
    entries = (
        ("format", FORMAT),
        ("version", VERSION),
        ("config", config or {}),
        ("metadata", metadata or {}),
        ("leaves", leaves),
    )
    pieces = [packer.pack_map_header(len(entries) + 1)]
    for key, value in entries:
        pieces += [packer.pack(key), packer.pack(value)]
    pieces += [packer.pack("checksum"), bytes([_UINT32])]
    checksum = 0
    for piece in pieces:
        checksum = zlib.crc32(piece, checksum)
    pieces.append(checksum.to_bytes(4, "big"))
    write_atomic_with(path, lambda handle: [handle.write(piece) for piece in pieces])


def _unpack(raw: bytes, name: str) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types for bad bytes
        raise CheckpointError(
            f"checkpoint {name!r} is truncated or corrupted ({type(err).__name__}: {err}); "
            "delete it or resume from an earlier one"
        ) from None


def parse(raw: bytes, name: str = "<bytes>") -> dict[str, Any]:
    """Verify and decode the bytes of a checkpoint file (``name`` is used in messages);
    returns the document with ``leaves`` as a list of dicts. See :func:`read`."""
    intact = (
        len(raw) > 5
        and raw[-5] == _UINT32
        and zlib.crc32(memoryview(raw)[:-4]) == int.from_bytes(raw[-4:], "big")
    )
    document = _unpack(raw, name)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{name!r} is not an eggroll checkpoint")
    version = document.get("version")
    corrupted = CheckpointError(f"checkpoint {name!r} failed its checksum: it is corrupted")
    if version == 1:  # the checksum covers the packed leaves only
        packed = document.get("leaves")
        if not isinstance(packed, bytes) or zlib.crc32(packed) != document.get("checksum"):
            raise corrupted
        document["leaves"] = _unpack(packed, name)
        return document
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {name!r} has format version {version}, this eggroll reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if not intact or not isinstance(document.get("leaves"), list):
        raise corrupted
    return document


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint file (version 2, or version 1 with its leaves-only
    checksum); returns the raw document with decoded ``leaves``. Raises
    :class:`CheckpointError` when the file is missing, not a checkpoint, of an unknown
    version, or when any byte fails the checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    return parse(path.read_bytes(), str(path))


def _config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: saved {saved.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


def load(
    path: str | os.PathLike, template: Any, config: dict[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint into the structure of ``template``; returns ``(state, metadata)``.

    Raises :class:`CheckpointError` when the file is missing, truncated or corrupted, when
    ``config`` is given and differs from the saved fingerprint (the message lists the fields),
    or when a leaf's path, shape or dtype differs from the template's.
    """
    document = read(path)
    if config is not None:
        diff = _config_diff(document.get("config", {}), config)
        if diff:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with a different configuration ("
                + "; ".join(diff)
                + "): resume with the saved settings or start a new run"
            )
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    saved = document["leaves"]
    if len(saved) != len(flat):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds {len(saved)} leaves, the template has {len(flat)}"
        )
    out = []
    for entry, (tpath, tleaf) in zip(saved, flat, strict=True):
        name = path_string(tpath)
        if entry["path"] != name:
            raise CheckpointError(f"checkpoint leaf {entry['path']!r} where {name!r} was expected")
        dtype = _dtype(entry["dtype"])
        array = np.frombuffer(entry["data"], dtype=dtype).reshape(entry["shape"])
        if _is_key(tleaf):
            expect_shape = jax.random.key_data(tleaf).shape
            if array.shape != expect_shape:
                raise CheckpointError(f"key leaf {name!r} has shape {array.shape}")
            out.append(jax.random.wrap_key_data(jnp.asarray(array), impl=entry["key_impl"]))
            continue
        tshape = tuple(jnp.shape(tleaf))
        tdtype = jnp.result_type(tleaf)
        if tuple(array.shape) != tshape or np.dtype(tdtype) != array.dtype:
            raise CheckpointError(
                f"leaf {name!r}: checkpoint has {array.dtype}{list(array.shape)}, the running "
                f"model expects {np.dtype(tdtype)}{list(tshape)}"
            )
        out.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, out), document.get("metadata", {})
