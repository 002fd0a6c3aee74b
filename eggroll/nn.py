"""Perturbation-aware ops: the same model code runs on plain parameters and on member views.

A member view replaces every low-rank matrix leaf ``W`` by a :class:`LowRank` holding the
shared base ``W`` and this member's factors. The ops never build ``W + σE``:

    dense(x, W) = x @ W + scale · (x @ A) @ Bᵀ         scale = σ · sign / √rank

so under ``jax.vmap`` over members the big product ``x @ W`` is one GEMM shared by the whole
population, and each member pays only ``O(rank · (n_in + n_out))`` per row. Full-rank leaves
(biases, norms, or every leaf under OpenES) arrive already perturbed as plain arrays.

Every view type (:class:`LowRank` here, :class:`eggroll.integer.IntLowRank` for int8 models)
is a :class:`MemberView`: it has ``materialize()``, the member's exact dense weights, and
:func:`materialize` turns every view in a pytree into plain arrays through that method.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from eggroll.batching import member_project

Array = jax.Array


class MemberView(abc.ABC):
    """The protocol of every member view leaf: one member's perturbed version of one leaf.

    A view is a pytree (it goes through ``jit``, ``vmap`` and ``lax.scan``) and the
    perturbation-aware ops dispatch on its type. ``materialize()`` returns the member's exact
    dense weights as a plain array of the base's shape and dtype; each view type documents
    how those relate to its forward pass.
    """

    __slots__ = ()

    @abc.abstractmethod
    def materialize(self) -> Array:
        """The member's dense perturbed weights (shape and dtype of the shared base)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LowRank(MemberView):
    """A matrix leaf seen by one population member: ``base + scale · a @ bᵀ``.

    Shapes: ``base (*lead, n_in, n_out)``, ``a (*lead, n_in, r)``, ``b (*lead, n_out, r)``,
    ``scale (*lead)``. ``lead`` are stacking axes (layers); ``lax.scan`` over a pytree holding
    a ``LowRank`` slices all four fields together, so a scanned layer sees a 2-D ``LowRank``.
    """

    base: Array
    a: Array
    b: Array
    scale: Array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def dtype(self):
        return self.base.dtype

    def __getitem__(self, index) -> LowRank:
        """Index the leading (stacking) axes, e.g. ``view["layers"]["w"][3]``."""
        if not isinstance(index, tuple):
            index = (index,)
        lead = self.base.ndim - 2
        if len(index) > lead:
            raise IndexError(
                f"LowRank leaves can only be indexed on their {lead} stacking axes; "
                "use eggroll.materialize(view) to get a plain array"
            )
        return LowRank(self.base[index], self.a[index], self.b[index], self.scale[index])

    def materialize(self) -> Array:
        """The dense perturbed matrix ``base + scale · a @ bᵀ`` (costs ``O(n_in · n_out)``).

        :func:`dense` and :func:`embed` on the view compute the same function of their input
        as on this array, up to float rounding (they factor the product instead).
        """
        delta = jnp.einsum("...ir,...or->...io", self.a, self.b)
        delta = delta * self.scale[..., None, None]
        return (self.base.astype(jnp.float32) + delta).astype(self.base.dtype)


def _is_lowrank(x: Any) -> bool:
    return isinstance(x, LowRank)


def dense(x: Array, w: Array | LowRank) -> Array:
    """``x @ w`` for ``x (..., n_in)`` and ``w (n_in, n_out)``, returning ``(..., n_out)``."""
    if not _is_lowrank(w):
        return x @ w
    if w.base.ndim != 2:
        raise ValueError(
            f"dense expects a 2-D weight, got a stacked one of shape {w.base.shape}; "
            "index the stacking axis or scan over it"
        )
    rank, rows = w.a.shape[-1], math.prod(x.shape[:-1])
    if 1 < rank <= _COLUMN_MAX_RANK and rows <= _COLUMN_MAX_ROWS:
        return x @ w.base + _correction_by_columns(x, w)
    xa = member_project(x, w.a)
    correction = (xa * w.scale.astype(x.dtype)) @ w.b.T.astype(x.dtype)
    return x @ w.base + correction


# Rank > 1 with few rows per member: under the member vmap, ``x @ A`` is a batch of tiny
# (rows × n_in) @ (n_in × r) products, which the CPU backend runs one small GEMM call per
# member; r separate mat-vecs ``x @ A[:, j]`` become fused multiply-reduces instead. Measured
# (64-wide layer in a 500-step scan, 256 members, AMD EPYC 2 cores): rank 4 took 2.4× rank 1
# as one product and 1.5× as columns; columns stay ahead up to 64 rows and lose ~6 % at 256.
_COLUMN_MAX_RANK = 8
_COLUMN_MAX_ROWS = 64


def _correction_by_columns(x: Array, w: LowRank) -> Array:
    """``scale · (x @ a) @ bᵀ`` as a sum of ``rank`` rank-1 terms (same value, other kernels)."""
    a, b = w.a.astype(x.dtype), w.b.astype(x.dtype)
    scale = w.scale.astype(x.dtype)
    terms = [((x @ a[:, j]) * scale)[..., None] * b[:, j] for j in range(a.shape[-1])]
    return sum(terms[1:], terms[0])


def embed(ids: Array, table: Array | LowRank) -> Array:
    """Row gather ``table[ids]`` for a ``(vocab, d)`` table: returns ``(*ids.shape, d)``."""
    if not _is_lowrank(table):
        return table[ids]
    if table.base.ndim != 2:
        raise ValueError(f"embed expects a 2-D table, got shape {table.base.shape}")
    rows = table.a[ids] * table.scale
    return table.base[ids] + (rows @ table.b.T).astype(table.base.dtype)


def vector(v: Array | LowRank) -> Array:
    """A bias/scale leaf as a plain array.

    Full-rank leaves are perturbed when the member view is built, so this is the identity for
    them; a matrix leaf used elementwise is materialised.
    """
    if is_view(v):
        return v.materialize()
    return v


def is_view(x: Any) -> bool:
    """Whether ``x`` is a member view leaf (any :class:`MemberView`)."""
    return isinstance(x, MemberView)


def materialize(view: Any) -> Any:
    """Return the pytree with every :class:`MemberView` leaf replaced by ``leaf.materialize()``.

    Works for every view type (float :class:`LowRank`, int8
    :class:`eggroll.integer.IntLowRank`); plain arrays (full-rank leaves arrive already
    perturbed, frozen ones unchanged) pass through. Costs ``O(n_in · n_out)`` per matrix. Use it
    to hand member parameters to code that needs real arrays (a black-box simulator, a library
    model).
    """
    return jax.tree_util.tree_map(
        lambda leaf: leaf.materialize() if is_view(leaf) else leaf, view, is_leaf=is_view
    )
