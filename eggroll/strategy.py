"""EGGROLL and the full-rank OpenES baseline: ``init`` / ``ask`` / ``evaluate`` / ``tell``.

EGGROLL: Sarkar et al., "Evolution Strategies at the Hyperscale", arXiv 2511.16652 (2025).
OpenES: Salimans et al., "Evolution Strategies as a Scalable Alternative to Reinforcement
Learning", arXiv 1703.03864 (2017).

Both optimise ``J(θ) = E_ε[f(θ + σε)]`` with the estimator

    ĝ = 1/(N σ) Σ_i F_i s_i E_i

where ``F`` are shaped fitnesses, ``s_i = ±1`` the antithetic signs and ``E_i`` the member's
perturbation: ``A_i B_iᵀ / √r`` for EGGROLL's low-rank leaves, full Gaussian noise otherwise.
The step goes through optax as ``optimizer.update(-ĝ, ...)`` (optax minimises), so
``optax.sgd(lr)`` gives ``θ ← θ + lr · ĝ``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from eggroll import noise
from eggroll import shaping as shaping_lib
from eggroll.leaves import LeafRule, LeafSpec, all_full_rule
from eggroll.nn import LowRank
from eggroll.population import (
    PopulationStrategy,
    check_positive_int,
    check_real,
    fitness_stats,
)

Array = jax.Array
Schedule = Callable[[Array], Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ESState:
    """Everything a strategy carries between generations (a pytree: jit, scan, checkpoint).

    ``params``: the mean parameters θ. ``opt_state``: the optax state. ``key``: the noise seed
    (a typed JAX key). ``generation``: int32 scalar, number of completed ``tell`` calls.
    ``noise_table``: the seed-made int8 noise table (``noise="table"``), else ``None`` (the
    same convention as :class:`eggroll.integer.IntState`).
    """

    params: Any
    opt_state: Any
    key: Array
    generation: Array
    noise_table: Array | None = None


def check_optimizer(optimizer: Any) -> optax.GradientTransformation:
    """``optimizer`` unchanged if it has optax's ``init``/``update``; else a ``ValueError``."""
    if isinstance(optimizer, str):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation such as optax.adam(1e-2), got "
            f"the string {optimizer!r}"
        )
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ValueError(
            "optimizer must be an optax.GradientTransformation such as optax.adam(1e-2), got "
            f"{type(optimizer).__name__} {optimizer!r:.60}"
        )
    return optimizer


def _all_finite(leaves: list[Array]) -> Array:
    """True when every entry of every (floating) array in ``leaves`` is finite."""
    checks = [
        jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


class Strategy(PopulationStrategy):
    """Shared machinery of EGGROLL and OpenES; subclasses choose how matrix leaves are perturbed.

    Args:
      population_size: number of members N per generation (even with antithetic sampling);
        any integer type (Python, NumPy, a 0-d array).
      sigma: noise scale σ, a finite real number > 0 (any real type: Python, NumPy, a 0-d
        array; checked here), or an optax-style schedule ``generation -> σ`` (checked every
        generation by ``tell``, see below).
      optimizer: any ``optax.GradientTransformation`` (default ``optax.sgd(1e-2)``).
      antithetic: members 2p and 2p+1 share noise with signs +1/−1.
      noise_reuse: noise changes every ``noise_reuse`` generations (1 = fresh every time).
      shaping: fitness shaping ``(N,) -> (N,)``, see :mod:`eggroll.shaping`.
      noise: ``"keys"`` (threefry normals per draw, exact Gaussian) or ``"table"`` (slices of a
        seed-made int8 table of ``table_size`` entries ``round(16·N(0, 1))``, scaled to unit
        variance: one random offset per draw instead of one normal per entry; see
        :mod:`eggroll.noise`). Every draw must fit the table.
      leaf_rule: which leaves are ``"lowrank"``, ``"full"`` or ``"frozen"``
        (see :mod:`eggroll.leaves`).
      chunk_size: noise draws per chunk of the estimator (must divide the number of draws,
        N/2 with antithetic sampling, else N); ``None`` picks one within a memory budget.
      eval_batch_size: members evaluated at once by ``evaluate`` (``None``: all, one vmap).
      mesh: devices the population is split over (default: all of them).

    Skipped steps: ``tell`` never writes non-finite parameters. When σ of the generation is
    not a finite number > 0 (a schedule that decays to 0, goes negative or NaN), or the
    candidate update or new parameters have a NaN/inf entry (e.g. an infinite learning rate),
    it keeps the previous parameters and optimiser state, still advances ``generation``, and
    reports ``info["step_skipped"] = 1.0``. ``info["sigma"]`` is the σ it used, so on the
    host ``not (info["sigma"] > 0 and isfinite(info["sigma"]))`` says the cause was σ; else
    it was the update (learning rate or optimiser). Learning rates live inside optax and are
    only checked through this guard.
    """

    name = "Strategy"

    def __init__(
        self,
        population_size: int,
        sigma: float | Schedule,
        optimizer: optax.GradientTransformation | None = None,
        *,
        antithetic: bool = True,
        noise_reuse: int = 1,
        shaping: shaping_lib.Shaping = shaping_lib.centered_rank,
        noise: str = "keys",
        table_size: int = 1 << 20,
        leaf_rule: LeafRule = None,
        chunk_size: int | None = None,
        eval_batch_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ):
        super().__init__(
            population_size,
            antithetic=antithetic,
            noise_reuse=noise_reuse,
            leaf_rule=leaf_rule,
            noise=noise,
            table_size=table_size,
            chunk_size=chunk_size,
            eval_batch_size=eval_batch_size,
            mesh=mesh,
        )
        population_size = self.population_size
        if callable(sigma):
            self._sigma_schedule = sigma
        else:
            try:
                value = check_real("sigma", sigma)
            except ValueError:
                raise ValueError(
                    f"sigma must be a positive number or a schedule, got {sigma!r}"
                ) from None
            if not value > 0:
                raise ValueError(f"sigma must be a positive number or a schedule, got {sigma!r}")
            if not math.isfinite(value):
                raise ValueError(f"sigma must be finite, got {sigma!r}")
            sigma = value
            self._sigma_schedule = None
        if not callable(shaping):
            raise ValueError(f"shaping must be a callable (N,) -> (N,), got {shaping!r}")
        group = getattr(shaping, "group_size", None)
        if group is not None:
            if population_size % group:
                raise ValueError(
                    f"shaping groups of {group} do not divide population_size={population_size}"
                )
            if antithetic and group % 2:
                raise ValueError(
                    f"shaping group_size={group} is odd and would split antithetic pairs: "
                    "use an even group size"
                )
        self.sigma = sigma
        self.optimizer = check_optimizer(optimizer) if optimizer is not None else optax.sgd(1e-2)
        self.shaping = shaping

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """JSON-able description of the configuration (stored in checkpoints as a fingerprint)."""
        sigma = self.sigma if self._sigma_schedule is None else "schedule"
        return {
            **super().config(),
            "sigma": sigma,
            "shaping": shaping_lib.shaping_name(self.shaping),
        }

    def sigma_at(self, generation: Array) -> Array:
        """σ for a generation (float32 scalar; a schedule's value is not checked here)."""
        if self._sigma_schedule is None:
            return jnp.asarray(self.sigma, jnp.float32)
        return jnp.asarray(self._sigma_schedule(generation), jnp.float32)

    def _check_leaf(self, spec: LeafSpec, leaf: Any) -> None:
        if spec.kind != "frozen" and not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"leaf {spec.path!r} has dtype {jnp.result_type(leaf)}: float ES perturbs only "
                "floating leaves. Cast it to float, mark it 'frozen' in leaf_rule, or use "
                "eggroll.integer for int8 models"
            )

    # ------------------------------------------------------------------ lifecycle
    def init(self, key: Array | int, params: Any) -> ESState:
        """Start from ``params`` (a non-empty pytree of float arrays) with noise seed ``key``.

        Raises ``ValueError`` for empty params (``{}``, ``None``), non-array leaves and leaves
        the strategy cannot perturb (see the class docstring of the leaf rules).
        """
        key, params, table = self._start(key, params)
        return ESState(
            params=params,
            opt_state=self.optimizer.init(params),
            key=key,
            generation=jnp.zeros((), jnp.int32),
            noise_table=table,
        )

    # One member's view and one chunk of the estimator draw every leaf's noise together
    # (``_draws``: one hash computation in the program for all leaves instead of one per leaf;
    # hashing dominated the compile time of small problems).
    def _draw_shape(self, spec: LeafSpec) -> tuple[int, ...]:
        """Shape of the unit normals one draw of a (non-frozen) leaf takes."""
        return spec.shape

    def _view_leaf(self, spec: LeafSpec, leaf: Array, z: Array, signed_sigma: Array) -> Any:
        """One member's view of a leaf from its draw ``z`` (shape ``_draw_shape(spec)``)."""
        return (leaf.astype(jnp.float32) + signed_sigma * z).astype(leaf.dtype)

    def _draws(self, state: ESState, active: list[LeafSpec], index: Array) -> list[Array]:
        """Draw ``index`` of every leaf in ``active`` (unit normals, ``_draw_shape`` each)."""
        shapes = [self._draw_shape(s) for s in active]
        table = state.noise_table
        if table is None:
            return noise.normals(self._all_draw_keys(state, active, index), shapes)
        # One hash for the offsets of all leaves: half the compile time of a small problem's
        # generation went to key derivation + randint (``bench latency``).
        offsets = noise.table_offsets(
            state.key,
            [s.id for s in active],
            state.generation // self.noise_reuse,
            index,
            [math.prod(shape) for shape in shapes],
            table.shape[0],
        )
        return noise.table_slices(table, offsets, shapes)

    def _view(self, state: ESState, index: Array, sign: Array) -> Any:
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        active = [s for s in specs if s.kind != "frozen"]
        draws = iter(self._draws(state, active, index) if active else [])
        signed_sigma = self.sigma_at(state.generation) * sign
        out = [
            leaf
            if spec.kind == "frozen"
            else self._view_leaf(spec, leaf, next(draws), signed_sigma)
            for spec, leaf in zip(specs, leaves, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, out)

    def _chunk_sum(self, spec: LeafSpec, z: Array, weights: Array) -> Array:
        """``Σ_p w_p E_p`` over a chunk from its draws ``z (c, *_draw_shape(spec))``."""
        return jnp.tensordot(weights, z, axes=1)

    def tell(self, state: ESState, fitness: Array) -> tuple[ESState, dict[str, Array]]:
        """Shape the scores, estimate the ascent direction, take one optax step.

        ``fitness`` has shape ``(N,)``; higher is better. Non-finite scores count as the worst
        finite score of the generation (see :func:`eggroll.shaping.clean_nonfinite`).
        Returns the new state and ``info``: ``fitness_mean/std/min/max`` (over finite scores,
        NaN if none), ``nonfinite_scores`` (int32 count), ``nonfinite_fraction``, ``sigma``
        (the σ used), ``step_skipped`` (1.0 when the step was refused because σ was not a
        finite number > 0 or the update was not finite; the parameters and optimiser state are
        then unchanged, see the class docstring; else 0.0), ``update_norm_lowrank`` and
        ``update_norm_full`` (norms of the step taken: 0 when skipped).
        """
        return super().tell(state, fitness)

    # ------------------------------------------------------------------ the estimator
    def _draw_weights(self, fitness: Array) -> tuple[Array, Array]:
        """Per-draw weights ``w_p = Σ_{i uses draw p} F_i s_i`` and the non-finite fraction."""
        cleaned, nonfinite = shaping_lib.clean_nonfinite(fitness)
        shaped = jnp.asarray(self.shaping(cleaned), jnp.float32)
        if self.antithetic:
            return shaped[0::2] - shaped[1::2], nonfinite
        return shaped, nonfinite

    def _estimate_scale(self, spec: LeafSpec) -> float:
        """Constant folded into ``1/(N σ)`` for a leaf (``1/√r`` for low-rank leaves)."""
        return 1.0

    def estimate(self, state: ESState, fitness: Array) -> tuple[Any, Array]:
        """The ascent direction ``ĝ`` (pytree like ``params``, float32), non-finite fraction.

        Divides by σ of the generation: not finite when σ is not a finite number > 0.
        """
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        weights, nonfinite = self._draw_weights(self.gather_scores(fitness))

        active = [s for s in specs if s.kind != "frozen"]

        def chunk_sums(idx: Array, w: Array) -> list[Array]:
            draws = jax.vmap(lambda i: self._draws(state, active, i))(idx)
            return [self._chunk_sum(s, z, w) for s, z in zip(active, draws, strict=True)]

        sums = self._sum_over_draws_all(specs, weights, chunk_sums, jnp.float32)
        sigma = self.sigma_at(state.generation)
        grads, it = [], iter(sums)
        for spec, leaf in zip(specs, leaves, strict=True):
            if spec.kind == "frozen":
                grads.append(jnp.zeros(leaf.shape, jnp.float32))
            else:
                scale = self._estimate_scale(spec) / (self.population_size * sigma)
                grads.append(next(it) * scale)
        return jax.tree_util.tree_unflatten(treedef, grads), nonfinite

    def _tell(self, state: ESState, fitness: Array) -> tuple[ESState, dict[str, Array]]:
        specs = self.leaf_specs(state.params)
        fitness = self.gather_scores(fitness)
        grads, _ = self.estimate(state, fitness)
        params = state.params
        descent = jax.tree_util.tree_map(
            lambda g, p: (-g).astype(jnp.result_type(p)), grads, params
        )
        updates, opt_state = self.optimizer.update(descent, state.opt_state, params)
        leaves_u, treedef = jax.tree_util.tree_flatten(updates)
        leaves_u = [
            jnp.zeros_like(u) if s.kind == "frozen" else u
            for u, s in zip(leaves_u, specs, strict=True)
        ]
        updates = jax.tree_util.tree_unflatten(treedef, leaves_u)
        new_params = optax.apply_updates(params, updates)
        # The guard: never write non-finite parameters (see the class docstring).
        sigma = self.sigma_at(state.generation)
        trained = [s.kind != "frozen" for s in specs]
        new_leaves = jax.tree_util.tree_leaves(new_params)
        ok = (
            jnp.isfinite(sigma)
            & (sigma > 0)
            & _all_finite([u for u, t in zip(leaves_u, trained, strict=True) if t])
            & _all_finite([p for p, t in zip(new_leaves, trained, strict=True) if t])
        )

        def keep(new: Any, old: Any) -> Any:
            return jnp.where(ok, new, old) if isinstance(new, jax.Array) else new

        new_params = jax.tree_util.tree_map(keep, new_params, params)
        opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
        norms = {}
        for kind in ("lowrank", "full"):
            sq = [
                jnp.sum(jnp.square(u.astype(jnp.float32)))
                for u, s in zip(leaves_u, specs, strict=True)
                if s.kind == kind
            ]
            norm = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), jnp.float32)
            norms[f"update_norm_{kind}"] = jnp.where(ok, norm, 0.0)
        info = {
            **fitness_stats(fitness),
            "sigma": sigma,
            "step_skipped": jnp.where(ok, 0.0, 1.0).astype(jnp.float32),
            **norms,
        }
        new_state = ESState(
            new_params, opt_state, state.key, state.generation + 1, state.noise_table
        )
        return new_state, info


class OpenES(Strategy):
    """Full-rank OpenES: every leaf gets dense Gaussian noise (the naive baseline).

    Each member's matrices differ in every entry, so the forward pass is a batched matmul over
    N distinct weight matrices; memory and time grow with ``N · n_in · n_out``.
    """

    name = "OpenES"
    _default_rule = staticmethod(all_full_rule)


class EGGROLL(Strategy):
    """EGGROLL: low-rank perturbations ``A Bᵀ/√r`` for matrix leaves.

    Args (beyond :class:`Strategy`):
      rank: rank r of each member's perturbation. A leaf narrower than r (e.g. a 64 × 2
        output layer at r = 4) is perturbed at rank ``min(n_in, n_out)``, which already
        reaches every matrix of its shape (:meth:`leaf_rank`). The population's update has
        rank up to ``min(N r, n_in, n_out)``.
      noise: ``"table"`` by default (OpenES keeps ``"keys"``): EGGROLL's draws are
        ``(n_in + n_out)·r`` numbers, tiny against the 2^20-entry table, and the table learns
        as well as threefry keys while a generation runs 2–7× faster (docs/BENCHMARKS.md,
        ``bench noise-default``); ``"keys"`` for exactly independent draws.
    """

    name = "EGGROLL"

    def __init__(
        self, population_size: int, sigma: float | Schedule,
        optimizer: optax.GradientTransformation | None = None, *, rank: int = 1,
        noise: str = "table", **kwargs: Any,
    ):  # fmt: skip
        self.rank = check_positive_int("rank", rank)
        super().__init__(population_size, sigma, optimizer, noise=noise, **kwargs)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}

    def leaf_rank(self, spec: LeafSpec) -> int:
        """The rank a low-rank leaf is perturbed at: ``min(rank, n_in, n_out)``."""
        return min(self.rank, spec.n_in, spec.n_out)

    def _draw_elements(self, spec: LeafSpec) -> int:
        if spec.kind != "lowrank":
            return math.prod(spec.shape)
        return math.prod(spec.lead) * (spec.n_in + spec.n_out) * self.leaf_rank(spec)

    def _estimate_scale(self, spec: LeafSpec) -> float:
        return 1.0 / math.sqrt(self.leaf_rank(spec)) if spec.kind == "lowrank" else 1.0

    def _draw_shape(self, spec: LeafSpec) -> tuple[int, ...]:
        if spec.kind != "lowrank":
            return spec.shape
        return (*spec.lead, spec.n_in + spec.n_out, self.leaf_rank(spec))

    def _view_leaf(self, spec: LeafSpec, leaf: Array, z: Array, signed_sigma: Array) -> Any:
        if spec.kind != "lowrank":
            return super()._view_leaf(spec, leaf, z, signed_sigma)
        a, b = z[..., : spec.n_in, :], z[..., spec.n_in :, :]
        scale = jnp.broadcast_to(signed_sigma / math.sqrt(self.leaf_rank(spec)), spec.lead)
        return LowRank(leaf, a, b, scale.astype(jnp.float32))

    def _chunk_sum(self, spec: LeafSpec, z: Array, weights: Array) -> Array:
        if spec.kind != "lowrank":
            return super()._chunk_sum(spec, z, weights)
        # One contraction over (draw, rank): Σ_p w_p A_p B_pᵀ, never a (chunk, n_in, n_out) tensor.
        a, b = z[..., : spec.n_in, :], z[..., spec.n_in :, :]
        weighted = a * weights.reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.einsum("c...ir,c...or->...io", weighted, b)
