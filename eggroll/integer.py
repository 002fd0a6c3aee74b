"""Integer EGGROLL: int8 parameters, int8 low-rank noise, a ±1 update by Z-test.

Sarkar et al., "Evolution Strategies at the Hyperscale", arXiv 2511.16652 (2025), EGG section.

Every parameter is an int8 matrix (or a stack of them) in fixed point ``ONE = 16``. Member
``i`` perturbs matrix ``W`` by ``E = s_i · A Bᵀ / 2^(4 + sigma_shift)`` where ``A (n_in, r)``,
``B (n_out, r)`` are int8 factors ``round(16 · N(0, 1))``; with ``sigma_shift = 4`` an entry of
``E`` is about one int8 step (σ = 2^-4 in units of ``ONE``). The forward pass never builds
``W + E``: :func:`matmul` adds ``s · ((x @ A) >> 4) @ Bᵀ >> sigma_shift`` to the shared
``x @ W``.

The update: each antithetic pair ``p`` gets ``F_p = sign(f_{2p} − f_{2p+1})``; per leaf
``Z = Σ_p F_p A_p B_pᵀ`` (int32, one contraction over pairs and rank, chunked). Under the null
hypothesis (fitness independent of the noise) ``Z_ij`` has mean 0 and standard deviation
``√(#{F_p ≠ 0} · r) · E[a²]``; a weight moves by ``sign(Z_ij)`` where ``|Z_ij|`` passes the
two-sided threshold ``z_{1−α/2}`` of that null, so about a fraction ``α`` of weights would move by
chance; real signal moves more. ``α_t = alpha / (alpha_decay · t + 1)^alpha_power``.

With ``error_feedback=True`` the score a weight did not act on is kept: an int32 residual
``R ← R + Z`` per weight, a weight moves by ``sign(R)`` once ``|R|`` passes
``θ_t = std_null / √α_t`` and ``θ_t`` is taken off ``R``. A random walk needs about
``(θ/std)² = 1/α_t`` steps to cross ``θ``, so again about a fraction ``α_t`` of weights move by
chance, but weak, consistent signal adds up over generations instead of being dropped below
the threshold (``R / θ`` is the weight's fractional part: integer SGD with a learning rate of
``1/θ_t``).

Noise comes from counter-based keys (``noise="keys"``), or from an int8 table generated from the
seed at ``init`` (``noise="table"``): a draw is a contiguous slice at a key-derived offset.

Member views and dense weights: :meth:`IntLowRank.materialize` (and so
:func:`eggroll.materialize` and ``ask(state).materialize()``) gives the member's int8 weights
``saturate(W + s · round(A Bᵀ / 2^(4 + sigma_shift)))``. :func:`embed` on a view gathers
exactly those rows. :func:`matmul` on a view does not use them: it adds the correction in the
activation domain, rounding ``x @ A`` and the rank-r product separately, which no int8 matrix
reproduces for every input; see :meth:`IntLowRank.materialize` for the bound.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from eggroll import distributed, noise
from eggroll.batching import matmul_and_project
from eggroll.intmath import INT8_MAX, saturate, shift_round
from eggroll.intmath import matmul as int_matmul
from eggroll.leaves import LeafSpec
from eggroll.nn import MemberView
from eggroll.nn import materialize as _materialize
from eggroll.population import PopulationStrategy, check_positive_int, check_real, fitness_stats

Array = jax.Array

NOISE_SCALE = noise.TABLE_SCALE  # int8 factors are round(16 · N(0, 1)), clipped to ±127
FACTOR_SECOND_MOMENT = noise.TABLE_SECOND_MOMENT  # E[a²] of one factor entry (exact)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IntLowRank(MemberView):
    """An int8 matrix leaf seen by one member: ``base + sign · a @ bᵀ / 2^(4 + sigma_shift)``.

    Shapes: ``base (*lead, n_in, n_out)`` int8, ``a (*lead, n_in, r)`` int8,
    ``b (*lead, n_out, r)`` int8, ``sign (*lead)`` int32. ``sigma_shift`` is static.
    """

    base: Array
    a: Array
    b: Array
    sign: Array
    sigma_shift: int = dataclasses.field(metadata={"static": True}, default=4)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    def __getitem__(self, index) -> IntLowRank:
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > self.base.ndim - 2:
            raise IndexError("IntLowRank leaves can only be indexed on their stacking axes")
        return IntLowRank(
            self.base[index], self.a[index], self.b[index], self.sign[index], self.sigma_shift
        )

    def delta(self) -> Array:
        """The int32 perturbation ``sign · round(A Bᵀ / 2^(4 + sigma_shift))``."""
        product = jnp.einsum("...ir,...or->...io", self.a, self.b, preferred_element_type=jnp.int32)
        return shift_round(product, 4 + self.sigma_shift) * self.sign[..., None, None]

    def materialize(self) -> Array:
        """The member's int8 weights ``saturate(base + delta())``, shape of ``base``.

        What the perturbation means in weight space, and what :func:`embed` uses:
        ``embed(ids, view) == embed(ids, view.materialize())`` bitwise, and so is anything
        computed from the weights themselves. :func:`matmul` on the view instead computes
        ``x @ base + sign · round(round(x @ A / 16) @ Bᵀ / 2^sigma_shift)`` (rounded shifts,
        no saturation of ``base + delta``); no int8 matrix gives that for every ``x``. Where no
        entry of ``base + delta()`` saturates, ``matmul(x, view)`` and
        ``matmul(x, view.materialize())`` differ per output ``o`` by at most
        ``Σ_i |x_i| / 2 + Σ_k |B_ok| / 2^(sigma_shift + 1) + 1/2`` (the roundings of the two
        forms), so a model built on :func:`matmul` scores its materialised member within
        rounding of, not exactly at, the member's own score.
        """
        return saturate(self.base.astype(jnp.int32) + self.delta())


def _is_int_view(x: Any) -> bool:
    return isinstance(x, IntLowRank)


def matmul(x: Array, w: Array | IntLowRank) -> Array:
    """int32 ``x @ w`` for int8 ``x (..., n_in)`` and an int8 ``(n_in, n_out)`` leaf or view.

    For a view the low-rank term ``sign · (((x @ A) >> 4) @ Bᵀ >> sigma_shift)`` is added to
    the shared ``x @ W`` (rounded shifts, so it equals ``x @ E`` up to rounding; the sign is
    applied last, so antithetic members get exactly opposite terms).
    """
    if not _is_int_view(w):
        return int_matmul(x, w)
    if w.base.ndim != 2:
        raise ValueError(f"matmul expects a 2-D weight, got a stacked one of shape {w.shape}")
    xw, xa = matmul_and_project(x, w.base, w.a)  # one GEMM for a slice's members
    xa = shift_round(xa, 4)  # (..., r) int32
    # Rank is small: elementwise products fuse into the output pass (no (.., n_out) temp).
    correction = 0
    for k in range(w.a.shape[-1]):
        correction = correction + xa[..., k : k + 1] * w.b[:, k].astype(jnp.int32)
    # The sign comes last so antithetic members get exactly opposite corrections.
    return xw + shift_round(correction, w.sigma_shift) * w.sign


def embed(ids: Array, table: Array | IntLowRank) -> Array:
    """Row gather ``table[ids]`` of an int8 ``(vocab, d)`` table → int8 ``(*ids.shape, d)``."""
    if not _is_int_view(table):
        return table[ids]
    a_rows = table.a[ids].astype(jnp.int32)  # (*ids.shape, r)
    rows = 0
    for k in range(table.a.shape[-1]):  # broadcast products fuse into one pass (small rank)
        rows = rows + a_rows[..., k : k + 1] * table.b[:, k].astype(jnp.int32)
    delta = shift_round(rows, 4 + table.sigma_shift) * table.sign
    return saturate(table.base[ids].astype(jnp.int32) + delta)


def materialize(view: Any) -> Any:
    """Replace every view leaf in ``view`` by its dense weights (:func:`eggroll.materialize`;
    for :class:`IntLowRank` see :meth:`IntLowRank.materialize`)."""
    return _materialize(view)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IntState:
    """State of :class:`IntEGGROLL`: int8 ``params``, the noise ``key``, int32 ``generation``,
    ``noise_table`` (int8 with ``noise="table"``, else ``None``, as in
    :class:`eggroll.ESState`) and ``residual`` (int32 scores not yet acted on, shaped like
    ``params``; ``None`` unless ``error_feedback``)."""

    params: Any
    key: Array
    generation: Array
    noise_table: Array | None
    residual: Any = None


class IntEGGROLL(PopulationStrategy):
    """Integer EGGROLL for int8 models (see module docstring).

    Args:
      population_size: members N (even: antithetic pairs are required).
      rank: rank r of each member's perturbation.
      sigma_shift: perturbations are ``A Bᵀ >> (4 + sigma_shift)`` (σ = 2^-sigma_shift).
      alpha, alpha_decay, alpha_power: target fraction of weights moved by chance,
        ``α_t = alpha / (alpha_decay · t + 1)^alpha_power``; ``0 < alpha ≤ 1``. The paper's
        schedule is ``alpha_power = 1``; with ``error_feedback`` the step size goes as ``√α_t``,
        so ``alpha_power = 2`` gives the ``1/t`` decay of SGD.
      noise_reuse: noise changes every ``noise_reuse`` generations.
      error_feedback: keep the scores below the threshold and add them to the next
        generation's (see module docstring); ``False`` is the memoryless Z-test.
      noise: ``"keys"`` (threefry per draw) or ``"table"`` (slices of a seed-made int8 table of
        ``table_size`` entries kept in the state).
      leaf_rule: ``"lowrank"`` or ``"frozen"`` per leaf (default: int8 matrices are low-rank).
      chunk_size: antithetic pairs per chunk of the update contraction (divides N/2).
      eval_batch_size: members evaluated at once (``None``: all in one vmap).
      mesh: devices the population is split over (default: all of them).
    """

    name = "IntEGGROLL"
    score_dtype = jnp.int32

    def __init__(
        self, population_size: int, *, rank: int = 1, sigma_shift: int = 4,
        alpha: float = 1.0, alpha_decay: float = 0.015, alpha_power: float = 1.0,
        noise_reuse: int = 1, error_feedback: bool = False,
        noise: str = "table", table_size: int = 1 << 20, leaf_rule: Any = None,
        chunk_size: int | None = None, eval_batch_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ):  # fmt: skip
        super().__init__(
            population_size, antithetic=True, noise_reuse=noise_reuse, leaf_rule=leaf_rule,
            noise=noise, table_size=table_size, chunk_size=chunk_size,
            eval_batch_size=eval_batch_size, mesh=mesh,
        )  # fmt: skip
        rank = check_positive_int("rank", rank)
        sigma_shift = check_positive_int("sigma_shift", sigma_shift, 0)
        if sigma_shift > 12:
            raise ValueError(f"sigma_shift={sigma_shift} leaves no perturbation; use 0..12")
        if not 0 < _real_or_nan(alpha) <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        decay = _real_or_nan(alpha_decay)
        if not (decay >= 0 and math.isfinite(decay)):
            raise ValueError(f"alpha_decay must be a finite number ≥ 0, got {alpha_decay!r}")
        power = _real_or_nan(alpha_power)
        if not (power > 0 and math.isfinite(power)):
            raise ValueError(f"alpha_power must be a finite number > 0, got {alpha_power!r}")
        self.rank = rank
        self.sigma_shift = sigma_shift
        self.alpha = _real_or_nan(alpha)
        self.alpha_decay = decay
        self.alpha_power = power
        self.error_feedback = bool(error_feedback)

    def config(self) -> dict[str, Any]:
        names = ("rank", "sigma_shift", "alpha", "alpha_decay", "alpha_power", "error_feedback")
        return {**super().config(), **{name: getattr(self, name) for name in names}}

    def _check_leaf(self, spec: LeafSpec, leaf: Any) -> None:
        if spec.kind == "frozen":
            return
        if jnp.result_type(leaf) != jnp.int8:
            raise ValueError(
                f"leaf {spec.path!r} has dtype {jnp.result_type(leaf)}: integer EGGROLL trains "
                "int8 matrices only. Cast it to int8, or mark it 'frozen' in leaf_rule"
            )
        if spec.kind != "lowrank":
            raise ValueError(
                f"leaf {spec.path!r} is {spec.kind!r}: integer EGGROLL perturbs int8 matrices "
                "(ndim ≥ 2) only; mark vector leaves 'frozen'"
            )
        if self.rank > min(spec.n_in, spec.n_out):
            raise ValueError(
                f"rank={self.rank} exceeds min(n_in, n_out)={min(spec.n_in, spec.n_out)} of "
                f"leaf {spec.path!r}"
            )

    def _draw_elements(self, spec: LeafSpec) -> int:
        return math.prod(spec.lead) * (spec.n_in + spec.n_out) * self.rank

    # ------------------------------------------------------------------ noise
    def init(self, key: Array | int, params: Any) -> IntState:
        """Start from int8 ``params`` (a non-empty pytree) with noise seed ``key``."""
        key, params, table = self._start(key, params)
        residual = None
        if self.error_feedback:
            residual = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.int32), params)
        return IntState(params, key, jnp.zeros((), jnp.int32), table, residual)

    @staticmethod
    def _quantise(z: Array) -> Array:
        return jnp.clip(jnp.round(z * NOISE_SCALE), -INT8_MAX, INT8_MAX).astype(jnp.int8)

    def factors(self, state: IntState, spec: LeafSpec, key: Array) -> tuple[Array, Array]:
        """int8 ``A (*lead, n_in, r)`` and ``B (*lead, n_out, r)`` of one draw."""
        shape = (*spec.lead, spec.n_in + spec.n_out, self.rank)
        if self.noise == "keys":
            z = self._quantise(jax.random.normal(key, shape))
        else:
            z = noise.table_draw(state.noise_table, key, shape)
        return z[..., : spec.n_in, :], z[..., spec.n_in :, :]

    def _perturb(self, spec: LeafSpec, leaf: Array, key: Array, sign: Array, state: IntState):
        a, b = self.factors(state, spec, key)
        signs = jnp.broadcast_to(sign.astype(jnp.int32), spec.lead)
        return IntLowRank(leaf, a, b, signs, self.sigma_shift)

    # ------------------------------------------------------------------ the update
    def alpha_at(self, generation: Array) -> Array:
        """α_t, the fraction of weights that would move by chance at generation t."""
        base = self.alpha_decay * generation.astype(jnp.float32) + 1.0
        return self.alpha / base**self.alpha_power

    def tell(self, state: IntState, fitness: Array) -> tuple[IntState, dict[str, Array]]:
        """``fitness (N,)``, higher is better (int or float; only pair comparisons are used).

        Returns the new state and ``info``: ``fitness_mean/std/min/max`` (over the finite
        scores, NaN if none), ``nonfinite_scores`` (int32 count), ``nonfinite_fraction``,
        ``step_skipped`` (always 0.0: ±1 steps on int8 weights cannot be non-finite; the key
        is there so run loops read every strategy's info alike), ``alpha``, ``threshold`` (on
        ``|Z|``), ``moved_fraction`` (weights that changed), ``active_pairs`` (pairs whose
        members both scored finitely and differently).
        """
        return super().tell(state, fitness)

    def _tell(self, state: IntState, fitness: Array) -> tuple[IntState, dict[str, Array]]:
        # The update needs only each antithetic pair's sign, so the signs are formed where the
        # scores are (pairs 2p, 2p+1 sit on one device) and only they cross devices: one byte
        # per pair instead of a 32-bit score per member. The statistics are scalar reductions.
        f = fitness.astype(jnp.float32)
        pairs = fitness.reshape(-1, 2)
        # A pair with a non-finite member carries no signal. The pair is compared in the
        # scores' own dtype: int32 scores above 2^24 would round together in float32.
        pair_ok = jnp.all(jnp.isfinite(f).reshape(-1, 2), axis=1)
        first, second = pairs[:, 0], pairs[:, 1]
        signs = (first > second).astype(jnp.int8) - (first < second).astype(jnp.int8)
        pair_sign = jnp.where(pair_ok, signs, 0).astype(jnp.int8)  # F_p ∈ {-1, 0, 1}
        if self.mesh is not None:  # keep the sign computation where the scores are
            pair_sign = jax.lax.with_sharding_constraint(
                pair_sign, distributed.member_sharding(self.mesh)
            )
        pair_sign = self.gather_scores(pair_sign)
        active = jnp.sum(pair_sign != 0)
        alpha = self.alpha_at(state.generation)
        null_std = jnp.sqrt(active.astype(jnp.float32) * self.rank) * FACTOR_SECOND_MOMENT
        if self.error_feedback:
            threshold = null_std / jnp.sqrt(alpha)
        else:
            threshold = ndtri(1.0 - alpha / 2.0) * null_std
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        residuals = (
            treedef.flatten_up_to(state.residual) if self.error_feedback else [None] * len(leaves)
        )

        def chunk_sum(spec: LeafSpec, idx: Array, w: Array) -> Array:
            """``Σ_p F_p A_p B_pᵀ`` over one chunk of pairs (int32, one int8 contraction)."""
            keys = self._draw_keys(state, spec, idx)
            a, b = jax.vmap(lambda k: self.factors(state, spec, k))(keys)
            weighted = a * w.reshape((-1,) + (1,) * (a.ndim - 1))
            return jnp.einsum("c...ir,c...or->...io", weighted, b, preferred_element_type=jnp.int32)

        scores = iter(self._sum_over_draws(specs, pair_sign, chunk_sum, jnp.int32))
        moved = jnp.zeros((), jnp.int32)
        total = 0
        new_leaves, new_residuals = [], []
        for spec, leaf, residual in zip(specs, leaves, residuals, strict=True):
            if spec.kind == "frozen":
                new_leaves.append(leaf)
                new_residuals.append(residual)
                continue
            z = next(scores)
            if residual is not None:
                z = residual + z
            step = jnp.where(jnp.abs(z).astype(jnp.float32) > threshold, jnp.sign(z), 0)
            step = jnp.where(active > 0, step, 0)
            if residual is not None:
                # Take θ off where the weight moved (saturated ones too, so R stays bounded).
                new_residuals.append(z - step * jnp.round(threshold).astype(jnp.int32))
            new = jnp.clip(leaf.astype(jnp.int32) + step, -INT8_MAX, INT8_MAX).astype(jnp.int8)
            moved = moved + jnp.sum(new != leaf)
            total += leaf.size
            new_leaves.append(new)
        info = {
            **fitness_stats(f),
            "step_skipped": jnp.zeros((), jnp.float32),
            "alpha": alpha,
            "threshold": threshold,
            "moved_fraction": moved.astype(jnp.float32) / max(total, 1),
            "active_pairs": active,
        }
        new_state = IntState(
            jax.tree_util.tree_unflatten(treedef, new_leaves),
            state.key,
            state.generation + 1,
            state.noise_table,
            jax.tree_util.tree_unflatten(treedef, new_residuals) if self.error_feedback else None,
        )
        return new_state, info


def _real_or_nan(value: Any) -> float:
    """``value`` as a float (any real type), or NaN when it is not a real number, so the
    caller's range check fails with its own message."""
    try:
        return check_real("value", value)
    except ValueError:
        return math.nan
