"""Counter-based noise: nothing is stored, every perturbation is regenerated from keys.

The key of one noise draw is

    fold_in(fold_in(fold_in(seed, leaf_id), generation // noise_reuse), noise_index)

where ``leaf_id`` is a hash of the leaf's tree path (so adding an unrelated leaf does not
change the noise of the others) and ``noise_index`` is the antithetic pair ``i // 2`` (or the
member ``i`` itself without antithetic sampling). Members ``2p`` and ``2p + 1`` of a pair
share one draw with signs ``+1`` and ``-1``.

A draw's numbers come either straight from the key (threefry normals), or, with a noise table,
as a contiguous slice of a seed-made int8 table ``round(16 · N(0, 1))`` at a key-derived offset:
one random integer per draw instead of one normal per entry. The table is made from the seed
(never shipped) and is the same on every device and process.
"""

from __future__ import annotations

import math
import zlib

import jax
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


def normal(key: Array, shape: tuple[int, ...], table: Array | None = None) -> Array:
    """Unit-variance float32 noise of ``shape`` for one draw: threefry normals from ``key``, or
    (with ``table``) a table slice scaled to unit variance."""
    if table is None:
        return jax.random.normal(key, shape, jnp.float32)
    return table_draw(table, key, shape).astype(jnp.float32) * TABLE_UNIT
