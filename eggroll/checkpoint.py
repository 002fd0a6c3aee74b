"""Checkpoints: any state pytree as a versioned msgpack file, written atomically. No pickle.

File layout (one msgpack map)::

    {"format": "eggroll-checkpoint", "version": 1,
     "config": {...strategy.config()...},       # the fingerprint checked on load
     "metadata": {...JSON-able user data...},
     "leaves": [{"path": str, "dtype": str, "shape": [int], "key_impl": str | None,
                 "data": bytes}, ...],
     "checksum": crc32 of the packed "leaves" entry}

``load`` needs a template pytree of the same structure (e.g. ``strategy.init(...)``): paths,
shapes and dtypes are checked leaf by leaf, so a mismatch names the offending leaf.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import msgpack
import numpy as np

from eggroll.leaves import path_string

FORMAT = "eggroll-checkpoint"
VERSION = 1


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


def write_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    packed_leaves = msgpack.packb(leaves, use_bin_type=True)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "config": config or {},
        "metadata": metadata or {},
        "leaves": packed_leaves,
        "checksum": zlib.crc32(packed_leaves),
    }
    write_atomic(path, msgpack.packb(document, use_bin_type=True))


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint file; returns the raw document with decoded ``leaves``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    raw = path.read_bytes()
    try:
        document = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types for bad bytes
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupted ({type(err).__name__}: {err}); "
            "delete it or resume from an earlier one"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an eggroll checkpoint")
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {document.get('version')}, this "
            f"eggroll reads version {VERSION}"
        )
    packed = document.get("leaves")
    if not isinstance(packed, bytes) or zlib.crc32(packed) != document.get("checksum"):
        raise CheckpointError(f"checkpoint {str(path)!r} failed its checksum: it is corrupted")
    document["leaves"] = msgpack.unpackb(packed, raw=False)
    return document


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
