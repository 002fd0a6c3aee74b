"""Counter-based noise: nothing is stored, every perturbation is regenerated from keys.

The key of one noise draw is

    fold_in(fold_in(fold_in(seed, leaf_id), generation // noise_reuse), noise_index)

where ``leaf_id`` is a hash of the leaf's tree path (so adding an unrelated leaf does not
change the noise of the others) and ``noise_index`` is the antithetic pair ``i // 2`` (or the
member ``i`` itself without antithetic sampling). Members ``2p`` and ``2p + 1`` of a pair
share one draw with signs ``+1`` and ``-1``.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp

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
    key: Array, lead: tuple[int, ...], n_in: int, n_out: int, rank: int
) -> tuple[Array, Array]:
    """Low-rank factors ``A (*lead, n_in, rank)`` and ``B (*lead, n_out, rank)``.

    Entries are i.i.d. N(0, 1) in float32; the perturbation of a matrix is ``A Bᵀ / √rank``.
    ``lead`` holds stacking axes (e.g. layers consumed by ``lax.scan``): every stacked matrix
    gets its own factors.
    """
    z = jax.random.normal(key, (*lead, n_in + n_out, rank), jnp.float32)
    return z[..., :n_in, :], z[..., n_in:, :]


def fullrank_noise(key: Array, shape: tuple[int, ...]) -> Array:
    """Full-rank N(0, 1) noise in float32 of the given shape."""
    return jax.random.normal(key, shape, jnp.float32)
