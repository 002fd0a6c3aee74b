"""Counter-based noise: nothing is stored, every perturbation is regenerated from keys.

The key of one noise draw is

    fold_in(fold_in(fold_in(seed, leaf_id), generation // noise_reuse), noise_index)

where ``leaf_id`` is a hash of the leaf's tree path (so adding an unrelated leaf does not
change the noise of the others) and ``noise_index`` is the antithetic pair ``i // 2`` (or the
member ``i`` itself without antithetic sampling). Members ``2p`` and ``2p + 1`` of a pair
share one draw with signs ``+1`` and ``-1``.

A draw's numbers come either straight from the key (threefry normals), or, with a noise table,
as a contiguous slice of a seed-made int8 table ``round(16 · N(0, 1))`` at a random offset:
one random integer per draw instead of one normal per entry. The table is made from the seed
(never shipped) and is the same on every device and process.

The float strategies derive a table draw's offset with one hash instead of the three fold-ins
and a ``randint`` (:func:`table_offsets`): the first word of Threefry-2x32 of the counter
``(leaf_id, noise_index)`` under the key ``fold_in(seed, epoch)``, modulo the number of valid
offsets (a bias below ``table_size / 2³²``, 2.4e-4 relative for the default table). The
integer strategy keeps the key-derived ``randint`` offsets of :func:`table_draw`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def leaf_id(path: str) -> int:
    """A stable 31-bit id of a leaf, derived from its tree path string only."""
    return zlib.crc32(path.encode("utf-8")) & 0x7FFFFFFF


def noise_index_and_sign(member: Array | int, antithetic: bool) -> tuple[Array, Array]:
    """Map a member index to ``(noise_index, sign)``.

    With antithetic sampling member ``i`` uses draw ``i // 2`` with sign ``+1`` for even
    ``i`` and ``-1`` for odd ``i``; without it every member has its own draw and sign ``+1``.
    """
    member = jnp.asarray(member, jnp.int32)
    if antithetic:
        return member // 2, 1 - 2 * (member % 2)
    return member, jnp.ones_like(member)


def draw_key(seed: Array, leaf: int, epoch: Array | int, noise_index: Array | int) -> Array:
    """The key of one noise draw for one leaf (see module docstring)."""
    key = jax.random.fold_in(seed, leaf)
    key = jax.random.fold_in(key, epoch)
    return jax.random.fold_in(key, noise_index)


def draw_keys(
    seed: Array, leaves: Sequence[int], epoch: Array | int, noise_index: Array | int
) -> Array:
    """The keys ``(L,)`` of one noise draw for several leaves: ``draw_key`` of each leaf id, bit
    for bit, computed for all leaves at once (for threefry keys: three hashes written as plain
    integer ops, which XLA fuses, instead of three hash loops per leaf)."""
    ids = np.asarray(leaves, np.uint32)
    data = _threefry_key_data(seed)
    if data is None:
        return jax.vmap(lambda leaf: draw_key(seed, leaf, epoch, noise_index))(jnp.asarray(ids))
    k1, k2 = _fold_in(data[0], data[1], jnp.asarray(ids))
    k1, k2 = _fold_in(k1, k2, epoch)
    k1, k2 = _fold_in(k1, k2, noise_index)
    return jax.random.wrap_key_data(jnp.stack([k1, k2], -1), impl="threefry2x32")


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 hash (20 rounds) of counters ``(x1, x2)`` under keys ``(k1, k2)``,
    broadcast elementwise, as plain uint32 ops: the numbers of jax's ``threefry2x32``."""
    u32 = jnp.uint32
    k1, k2, x1, x2 = (jnp.asarray(v).astype(u32) for v in (k1, k2, x1, x2))
    ks = (k1, k2, k1 ^ k2 ^ u32(0x1BD11BDA))
    x = [x1 + ks[0], x2 + ks[1]]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x[0] = x[0] + x[1]
            x[1] = (x[1] << u32(r)) | (x[1] >> u32(32 - r))
            x[1] = x[0] ^ x[1]
        x[0] = x[0] + ks[(i + 1) % 3]
        x[1] = x[1] + ks[(i + 2) % 3] + u32(i + 1)
    return x[0], x[1]


def _fold_in(k1: Array, k2: Array, data: Array | int) -> tuple[Array, Array]:
    """``jax.random.fold_in`` on threefry key data ``(k1, k2)`` and 32-bit ``data``."""
    data = jnp.asarray(data).astype(jnp.uint32)
    return _threefry2x32(k1, k2, jnp.zeros_like(data), data)


def lowrank_factors(
    key: Array, lead: tuple[int, ...], n_in: int, n_out: int, rank: int, table: Array | None = None
) -> tuple[Array, Array]:
    """Low-rank factors ``A (*lead, n_in, rank)`` and ``B (*lead, n_out, rank)``.

    Entries are i.i.d. N(0, 1) in float32; the perturbation of a matrix is ``A Bᵀ / √rank``.
    ``lead`` holds stacking axes (e.g. layers consumed by ``lax.scan``): every stacked matrix
    gets its own factors. With ``table`` the entries come from the noise table (see
    :func:`normal`).
    """
    z = normal(key, (*lead, n_in + n_out, rank), table)
    return z[..., :n_in, :], z[..., n_in:, :]


def fullrank_noise(key: Array, shape: tuple[int, ...], table: Array | None = None) -> Array:
    """Full-rank unit-variance noise in float32 of the given shape (see :func:`normal`)."""
    return normal(key, shape, table)


TABLE_SCALE = 16.0  # table entries are round(16 · N(0, 1)), clipped to ±127
_TABLE_MAX = 127


def _table_second_moment() -> float:
    """``E[t²]`` of a table entry (exact for the quantised, clipped normal)."""
    values = np.arange(-_TABLE_MAX, _TABLE_MAX + 1, dtype=np.float64)
    edges = (values[:, None] + np.array([-0.5, 0.5])) / TABLE_SCALE
    cdf = 0.5 * (1 + np.vectorize(math.erf)(edges / math.sqrt(2)))
    pmf = cdf[:, 1] - cdf[:, 0]
    tail = (1 - pmf.sum()) / 2  # mass beyond ±127.5/16 is clipped onto ±127
    pmf[0] += tail
    pmf[-1] += tail
    return float(np.sum(pmf * values**2))


TABLE_SECOND_MOMENT = _table_second_moment()
# Multiply table entries by this for unit-variance float noise.
TABLE_UNIT = 1.0 / math.sqrt(TABLE_SECOND_MOMENT)


def make_table(key: Array, size: int) -> Array:
    """The int8 noise table ``round(16 · z)``, ``z ~ N(0, 1)`` i.i.d., shape ``(size,)``."""
    z = jax.random.normal(jax.random.fold_in(key, 0x7AB1E), (size,))
    return jnp.clip(jnp.round(z * TABLE_SCALE), -_TABLE_MAX, _TABLE_MAX).astype(jnp.int8)


def table_draw(table: Array, key: Array, shape: tuple[int, ...]) -> Array:
    """One draw of ``shape`` from the table: a contiguous int8 slice at a random offset."""
    size = math.prod(shape)
    if size > table.shape[0]:
        raise ValueError(f"a draw of {size} entries does not fit a noise table of {table.shape[0]}")
    offset = jax.random.randint(key, (), 0, table.shape[0] - size + 1)
    return jax.lax.dynamic_slice(table, (offset,), (size,)).reshape(shape)


def table_offsets(
    seed: Array,
    leaves: Sequence[int],
    epoch: Array | int,
    noise_index: Array | int,
    sizes: Sequence[int],
    table_size: int,
) -> Array:
    """Offsets ``(L,)`` int32 of one draw of ``sizes[j]`` table entries for each leaf id.

    One Threefry-2x32 hash for all leaves (see the module docstring); a seed of another key
    implementation falls back to ``draw_keys`` + ``randint``. Every offset ``o`` satisfies
    ``0 ≤ o ≤ table_size − sizes[j]``; a draw larger than the table is a ``ValueError``.
    """
    for size in sizes:
        if size > table_size:
            raise ValueError(f"a draw of {size} entries does not fit a noise table of {table_size}")
    spans = np.asarray([table_size - n + 1 for n in sizes], np.uint32)
    if str(jax.random.key_impl(seed)) != "threefry2x32":
        keys = draw_keys(seed, leaves, epoch, noise_index)
        highs = jnp.asarray(spans.astype(np.int32))
        return jax.vmap(lambda k, hi: jax.random.randint(k, (), 0, hi))(keys, highs)
    data = jax.random.key_data(seed)
    k1, k2 = _fold_in(data[..., 0], data[..., 1], epoch)
    ids = jnp.asarray(np.asarray(leaves, np.uint32))
    index = jnp.broadcast_to(jnp.asarray(noise_index).astype(jnp.uint32), ids.shape)
    word, _ = _threefry2x32(k1, k2, ids, index)
    return (word % jnp.asarray(spans)).astype(jnp.int32)


def table_slices(table: Array, offsets: Array, shapes: Sequence[tuple[int, ...]]) -> list[Array]:
    """Unit-variance float32 draws: ``shapes[j]`` entries of ``table`` from ``offsets[j]``."""
    out = []
    for j, shape in enumerate(shapes):
        n = math.prod(shape)
        piece = jax.lax.dynamic_slice(table, (offsets[j],), (n,)).reshape(shape)
        out.append(piece.astype(jnp.float32) * TABLE_UNIT)
    return out


def _threefry_key_data(keys: Array) -> Array | None:
    """``(2, ...)`` uint32 key data when ``keys`` are threefry keys drawn the partitionable way
    (jax's default), the layout :func:`normals` reproduces; else ``None``."""
    if not jax.config.jax_threefry_partitionable:
        return None
    if str(jax.random.key_impl(keys)) != "threefry2x32":
        return None
    return jnp.moveaxis(jax.random.key_data(keys), -1, 0)


def normals(
    keys: Array, shapes: Sequence[tuple[int, ...]], table: Array | None = None
) -> list[Array]:
    """``[normal(keys[j], shapes[j], table) for j]``: every leaf's draw of one member.

    With a table, the leaves' offsets are one ``randint`` call. Without one, each leaf is its
    own threefry call: one call over all leaves' concatenated counters compiled faster but
    ran about 2× slower under the member ``vmap`` (keys took 6.85× the table's time per
    generation with it, 3.27× without, ``bench noise-default``), so the run-time fast path is
    kept.
    """
    shapes = [tuple(s) for s in shapes]
    sizes = [math.prod(s) for s in shapes]
    if table is None:
        return [normal(keys[j], s) for j, s in enumerate(shapes)]
    for size in sizes:
        if size > table.shape[0]:
            raise ValueError(
                f"a draw of {size} entries does not fit a noise table of {table.shape[0]}"
            )
    highs = jnp.asarray(np.asarray([table.shape[0] - n + 1 for n in sizes], np.int32))
    offsets = jax.vmap(lambda k, hi: jax.random.randint(k, (), 0, hi))(keys, highs)
    return table_slices(table, offsets, shapes)


def normal(key: Array, shape: tuple[int, ...], table: Array | None = None) -> Array:
    """Unit-variance float32 noise of ``shape`` for one draw: threefry normals from ``key``, or
    (with ``table``) a table slice scaled to unit variance."""
    if table is None:
        return jax.random.normal(key, shape, jnp.float32)
    return table_draw(table, key, shape).astype(jnp.float32) * TABLE_UNIT
