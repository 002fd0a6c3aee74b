"""``x @ A`` for per-member factors, with a batching rule that keeps it a GEMM.

Under ``vmap`` over members, ``x (T, n_in) @ A (n_in, r)`` becomes a batch of N skinny matrix-
vector products. For int8 the CPU backend runs those far below GEMM speed (10× slower than this
rule at n_in = 512 on 2 cores; ``python scripts/bench.py member-project``). The rule groups
``c`` members, multiplies their stacked rows by their stacked factors in one ``(c·T, n_in) @
(n_in, c·r)`` GEMM, and keeps the ``c`` diagonal blocks: ``c`` times the (tiny) useful FLOPs, at
GEMM speed. Up to 16 members (the draws of one evaluation slice) it is, on CPUs where that is
faster (:func:`default_one_gemm_draws`), a single 2-D GEMM over all of them, which reads the
rows exactly as the layer's own GEMM does (see :func:`_one_gemm`). Members that share a factor
(the two signs of a draw, an inner ``vmap``) become extra rows of the same product. Float32
batched mat-vecs are already fast there (the rule measured 0.6–0.8× of them), so float inputs
use the plain product.

:func:`matmul_and_project` goes further for int8 layers: a slice's shared ``x @ W`` and its
members' ``x @ A_i`` in one GEMM against ``[W | A_1 … A_B]`` (same condition).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_GROUP = 8  # members per block GEMM; 4–8 was fastest on a 2-core CPU for n_in 128–512


def _cpu_vendor() -> str:
    """``/proc/cpuinfo``'s ``vendor_id`` (e.g. ``AuthenticAMD``, ``GenuineIntel``), or ``""``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_one_gemm_draws(vendor: str | None = None) -> int:
    """Up to how many members (e.g. the draws of one evaluation slice) the rules below use one
    2-D GEMM of all rows against all factors; 0 turns that form off.

    Which form is faster depends on the CPU's int8 GEMMs (results are bitwise the same):
    on the Intel Xeon the one-GEMM forms took the default EGG generation from ~103 to ~79 ms,
    on the AMD EPYC they cost 89 against 77 ms for the blocked form (``bench vs-inference``,
    docs/BENCHMARKS.md), so AMD CPUs take the blocked form.
    """
    vendor = _cpu_vendor() if vendor is None else vendor
    return 0 if vendor == "AuthenticAMD" else 16


_ONE_GEMM = default_one_gemm_draws()


def _plain(x: Array, a: Array, out_dtype) -> Array:
    return jax.lax.dot_general(
        x, a, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=out_dtype
    )


def _local_members(members: int) -> int:
    """Members of this vmap each device may hold (all of them unless they could be split)."""
    devices = jax.device_count()
    return members // devices if members % devices == 0 else members


def _group_size(members: int) -> int:
    """Members per block: divides the members each device holds, so a block never spans
    devices (which would make the partitioner gather factors across them)."""
    local = _local_members(members)
    for c in range(min(_GROUP, local), 0, -1):
        if local % c == 0:
            return c
    return 1


def _blocked(x: Array, a: Array, out_dtype) -> Array:
    """``x (B, ..., n_in)``, ``a (B, n_in, r)`` → ``(B, ..., r)``, member b with factor b."""
    members, rest, n_in, rank = x.shape[0], x.shape[1:-1], x.shape[-1], a.shape[-1]
    rows = 1
    for size in rest:
        rows *= size
    if members <= _ONE_GEMM and _local_members(members) == members:
        return _one_gemm(x.reshape(members, rows, n_in), a, out_dtype).reshape(members, *rest, rank)
    c = _group_size(members)
    g = members // c
    xb = x.reshape(g, c * rows, n_in)
    ab = a.reshape(g, c, n_in, rank).transpose(0, 2, 1, 3).reshape(g, n_in, c * rank)
    out = jax.lax.dot_general(
        xb, ab, (((2,), (1,)), ((0,), (0,))), preferred_element_type=out_dtype
    ).reshape(g, c, rows, c, rank)
    diag = jnp.arange(c)
    out = out[:, diag, :, diag, :]  # (c, g, rows, rank): member (g, c) with its own factor
    return out.transpose(1, 0, 2, 3).reshape(members, *rest, rank)


def _one_gemm(x: Array, a: Array, out_dtype) -> Array:
    """``x (B, rows, n_in)``, ``a (B, n_in, r)`` → ``(B, rows, r)`` as one 2-D GEMM of all rows
    against all B factors, keeping each member's own columns.

    B times the useful FLOPs, but the rows enter as the ``(B·rows, n_in)`` matrix the layer's
    own GEMM reads, so XLA computes the int8 input once for both products; a batched block
    GEMM needs another view of it, and XLA recomputes the producing elementwise pass for it.
    """
    members, rows, n_in = x.shape
    rank = a.shape[-1]
    out = _plain(x.reshape(members * rows, n_in), a.transpose(1, 0, 2).reshape(n_in, -1), out_dtype)
    out = out.reshape(members, rows, members, rank)
    diag = jnp.arange(members)
    return out[diag, :, diag, :]  # (members, rows, rank): member b with factor b


def _make(out_dtype):
    @jax.custom_batching.custom_vmap
    def project(x: Array, a: Array) -> Array:
        return _plain(x, a, out_dtype)

    @project.def_vmap
    def _project_vmap(axis_size, in_batched, x, a):
        x_batched, a_batched = in_batched
        if a_batched and x_batched:
            return _blocked(x, a, out_dtype), True
        if a_batched:  # shared input, per-member factors
            x = jnp.broadcast_to(x, (axis_size, *x.shape))
            return _blocked(x, a, out_dtype), True
        if x_batched:  # per-member input, shared factor (e.g. the two signs of one draw)
            # One product with the members as rows; calling ``project`` (not the plain dot)
            # keeps it visible to an enclosing vmap over draws, which then takes the block
            # rule instead of batching a plain dot into mat-vecs.
            return project(x, a), True
        return _plain(x, a, out_dtype), False

    return project


_project_int = _make(jnp.int32)


def member_project(x: Array, a: Array) -> Array:
    """``x (..., n_in) @ a (n_in, r)``: int8 inputs give int32, float inputs ``x.dtype``.

    Equal to ``x @ a`` (exactly for integers); only its speed under ``vmap`` differs.
    """
    if jnp.issubdtype(x.dtype, jnp.integer):
        return _project_int(x, a)
    return _plain(x, a.astype(x.dtype), x.dtype)


@jax.custom_batching.custom_vmap
def matmul_and_project(x: Array, w: Array, a: Array) -> tuple[Array, Array]:
    """int32 ``(x @ w, x @ a)`` for int8 ``x (..., n_in)``, a shared ``w (n_in, n_out)`` and a
    per-member factor ``a (n_in, r)``: a perturbed layer's GEMM and its projection.

    Under a ``vmap`` of up to 16 members (one evaluation slice's draws) both are one GEMM of all
    rows against ``[w | a_1 … a_B]``: the input is read once and the projection costs only
    ``B·r`` extra output columns. Otherwise the two products go their own ways
    (:func:`member_project`'s rules for the projection).
    """
    return _plain(x, w, jnp.int32), _plain(x, a, jnp.int32)


@matmul_and_project.def_vmap
def _matmul_and_project_vmap(axis_size, in_batched, x, w, a):
    x_batched, w_batched, a_batched = in_batched
    if x_batched and not w_batched and not a_batched:  # members share w and a (signs of a draw)
        return matmul_and_project(x, w, a), (True, True)  # rows of the same products
    if (
        x_batched
        and a_batched
        and not w_batched
        and axis_size <= _ONE_GEMM
        and _local_members(axis_size) == axis_size
    ):
        members, rest, n_in = x.shape[0], x.shape[1:-1], x.shape[-1]
        n_out, rank = w.shape[-1], a.shape[-1]
        rows = x[0, ..., 0].size
        factors = a.transpose(1, 0, 2).reshape(n_in, members * rank)
        out = _plain(x.reshape(members * rows, n_in), jnp.concatenate([w, factors], 1), jnp.int32)
        main = out[:, :n_out].reshape(members, *rest, n_out)
        cross = out[:, n_out:].reshape(members, rows, members, rank)
        diag = jnp.arange(members)
        return (main, cross[diag, :, diag, :].reshape(members, *rest, rank)), (True, True)
    axes = tuple(0 if b else None for b in in_batched)
    both = jax.vmap(lambda xi, wi, ai: (_plain(xi, wi, jnp.int32), _project_int(xi, ai)), axes)
    return both(x, w, a), (True, True)
