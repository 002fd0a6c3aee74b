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
from eggroll.leaves import LeafRule, LeafSpec, all_full_rule, default_rule, leaf_specs, resolve_rule
from eggroll.nn import LowRank, materialize

Array = jax.Array
Schedule = Callable[[Array], Array]

# Estimator chunks aim to hold at most this many float32 noise entries per leaf at once.
_CHUNK_ELEMENT_BUDGET = 1 << 24


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ESState:
    """Everything a strategy carries between generations (a pytree: jit, scan, checkpoint).

    ``params``: the mean parameters θ. ``opt_state``: the optax state. ``key``: the noise seed
    (a typed JAX key). ``generation``: int32 scalar, number of completed ``tell`` calls.
    """

    params: Any
    opt_state: Any
    key: Array
    generation: Array


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _largest_divisor_at_most(n: int, bound: int) -> int:
    bound = max(1, min(n, bound))
    for d in range(bound, 0, -1):
        if n % d == 0:
            return d
    return 1


def _normalise_in_axes(in_axes: Any, n_args: int) -> tuple:
    """``in_axes`` for the extra arguments: None, 0, or a tuple with one entry per argument."""
    if in_axes is None or isinstance(in_axes, int):
        in_axes = (in_axes,) * n_args
    in_axes = tuple(in_axes)
    if len(in_axes) != n_args:
        raise ValueError(f"in_axes has {len(in_axes)} entries for {n_args} extra arguments")
    for axis in in_axes:
        if axis not in (None, 0):
            raise ValueError(
                f"in_axes entries must be None (shared by all members) or 0 (one slice per "
                f"member along a leading population axis), got {axis!r}"
            )
    return in_axes


class Strategy:
    """Shared machinery of EGGROLL and OpenES; subclasses choose how matrix leaves are perturbed.

    Args:
      population_size: number of members N per generation (even with antithetic sampling).
      sigma: noise scale σ > 0, or an optax-style schedule ``generation -> σ``.
      optimizer: any ``optax.GradientTransformation`` (default ``optax.sgd(1e-2)``).
      antithetic: members 2p and 2p+1 share noise with signs +1/−1.
      noise_reuse: noise changes every ``noise_reuse`` generations (1 = fresh every time).
      shaping: fitness shaping ``(N,) -> (N,)``, see :mod:`eggroll.shaping`.
      leaf_rule: which leaves are ``"lowrank"``, ``"full"`` or ``"frozen"``
        (see :mod:`eggroll.leaves`).
      chunk_size: noise draws per chunk of the estimator (must divide the number of draws,
        N/2 with antithetic sampling, else N); ``None`` picks one within a memory budget.
      eval_batch_size: members evaluated at once by ``evaluate`` (``None``: all, one vmap).
    """

    name = "Strategy"
    _default_rule: Callable[[str, Any], str] = staticmethod(default_rule)

    def __init__(
        self,
        population_size: int,
        sigma: float | Schedule,
        optimizer: optax.GradientTransformation | None = None,
        *,
        antithetic: bool = True,
        noise_reuse: int = 1,
        shaping: shaping_lib.Shaping = shaping_lib.centered_rank,
        leaf_rule: LeafRule = None,
        chunk_size: int | None = None,
        eval_batch_size: int | None = None,
    ):
        _check_positive_int("population_size", population_size, 2)
        if antithetic and population_size % 2:
            raise ValueError(
                f"population_size={population_size} is odd but antithetic=True pairs members "
                "(2p, 2p+1): use an even population_size or antithetic=False"
            )
        if callable(sigma):
            self._sigma_schedule = sigma
        else:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
                raise ValueError(f"sigma must be a positive number or a schedule, got {sigma!r}")
            if not math.isfinite(sigma):
                raise ValueError(f"sigma must be finite, got {sigma!r}")
            self._sigma_schedule = None
        _check_positive_int("noise_reuse", noise_reuse)
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
        self.population_size = population_size
        self.sigma = sigma
        self.optimizer = optimizer if optimizer is not None else optax.sgd(1e-2)
        self.antithetic = bool(antithetic)
        self.noise_reuse = noise_reuse
        self.shaping = shaping
        self.leaf_rule = leaf_rule
        self._rule = resolve_rule(leaf_rule, self._default_rule)
        self.num_draws = population_size // 2 if self.antithetic else population_size
        if chunk_size is not None:
            _check_positive_int("chunk_size", chunk_size)
            if self.num_draws % chunk_size:
                raise ValueError(
                    f"chunk_size={chunk_size} does not divide the {self.num_draws} noise draws "
                    f"per generation (population_size{' / 2' if self.antithetic else ''}); "
                    f"pick a divisor of {self.num_draws}"
                )
        self.chunk_size = chunk_size
        if eval_batch_size is not None:
            _check_positive_int("eval_batch_size", eval_batch_size)
        self.eval_batch_size = eval_batch_size
        self._evaluate_jit = jax.jit(self._evaluate, static_argnums=(1, 2))
        self._tell_jit = jax.jit(self._tell)

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """JSON-able description of the configuration (stored in checkpoints as a fingerprint)."""
        sigma = self.sigma if self._sigma_schedule is None else "schedule"
        return {
            "strategy": self.name,
            "population_size": self.population_size,
            "sigma": sigma,
            "antithetic": self.antithetic,
            "noise_reuse": self.noise_reuse,
            "shaping": shaping_lib.shaping_name(self.shaping),
        }

    def sigma_at(self, generation: Array) -> Array:
        """σ for a generation (float32 scalar)."""
        if self._sigma_schedule is None:
            return jnp.asarray(self.sigma, jnp.float32)
        return jnp.asarray(self._sigma_schedule(generation), jnp.float32)

    def leaf_specs(self, params: Any) -> list[LeafSpec]:
        """The kind, noise id and shape of every leaf of ``params`` (validated)."""
        specs = leaf_specs(params, self._rule)
        for spec, leaf in zip(specs, jax.tree_util.tree_leaves(params), strict=True):
            if spec.kind != "frozen" and not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(
                    f"leaf {spec.path!r} has dtype {jnp.result_type(leaf)}: float ES perturbs only "
                    "floating leaves. Cast it to float, mark it 'frozen' in leaf_rule, or use "
                    "eggroll.integer for int8 models"
                )
            self._check_leaf(spec)
        return specs

    def _check_leaf(self, spec: LeafSpec) -> None:
        """Subclass hook for per-leaf validation."""

    def _chunk(self, specs: list[LeafSpec]) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        per_draw = max([self._draw_elements(s) for s in specs if s.kind != "frozen"] or [1])
        return _largest_divisor_at_most(self.num_draws, max(1, _CHUNK_ELEMENT_BUDGET // per_draw))

    def _draw_elements(self, spec: LeafSpec) -> int:
        return math.prod(spec.shape)

    # ------------------------------------------------------------------ lifecycle
    def init(self, key: Array, params: Any) -> ESState:
        """Start from ``params`` (a pytree of float arrays) with noise seed ``key``."""
        if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
            key = (
                jax.random.wrap_key_data(jnp.asarray(key)) if jnp.ndim(key) else jax.random.key(key)
            )
        params = jax.tree_util.tree_map(jnp.asarray, params)
        self.leaf_specs(params)
        return ESState(
            params=params,
            opt_state=self.optimizer.init(params),
            key=key,
            generation=jnp.zeros((), jnp.int32),
        )

    def member(self, state: ESState, member: Array | int) -> Any:
        """The parameters seen by one member: low-rank leaves as :class:`LowRank`, the rest
        as perturbed arrays. ``member`` may be traced (this is what ``evaluate`` vmaps)."""
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        epoch = state.generation // self.noise_reuse
        index, sign = noise.noise_index_and_sign(member, self.antithetic)
        sigma = self.sigma_at(state.generation)
        out = []
        for spec, leaf in zip(specs, leaves, strict=True):
            if spec.kind == "frozen":
                out.append(leaf)
                continue
            key = noise.draw_key(state.key, spec.id, epoch, index)
            out.append(self._perturb(spec, leaf, key, sigma * sign))
        return jax.tree_util.tree_unflatten(treedef, out)

    def _perturb(self, spec: LeafSpec, leaf: Array, key: Array, signed_sigma: Array) -> Any:
        eps = self._noise(spec, key)
        return (leaf.astype(jnp.float32) + signed_sigma * eps).astype(leaf.dtype)

    def _noise(self, spec: LeafSpec, key: Array) -> Array:
        """Dense noise ``E`` of one draw for a leaf (shape ``spec.shape``, float32)."""
        return noise.fullrank_noise(key, spec.shape)

    def ask(self, state: ESState) -> Population:
        """The population of this generation, for callers that evaluate members themselves."""
        return Population(self, state)

    def evaluate(
        self, state: ESState, fitness_fn: Callable[..., Array], *args: Any, in_axes: Any = None
    ) -> Array:
        """Scores ``(N,)`` float32 of every member: ``fitness_fn(member_view, *args)``.

        ``in_axes`` follows ``jax.vmap`` for the extra arguments: ``None`` (default) shares an
        argument with all members, ``0`` gives member ``i`` slice ``i`` of its leading axis; a
        tuple sets it per argument. Compiled once per ``(fitness_fn, in_axes)`` and shapes:
        pass the same function object every generation.
        """
        in_axes = _normalise_in_axes(in_axes, len(args))
        for arg, axis in zip(args, in_axes, strict=True):
            if axis == 0:
                for leaf in jax.tree_util.tree_leaves(arg):
                    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != self.population_size:
                        raise ValueError(
                            f"an argument with in_axes=0 needs a leading axis of "
                            f"population_size={self.population_size}, got shape {jnp.shape(leaf)}"
                        )
        return self._evaluate_jit(state, fitness_fn, in_axes, *args)

    def _evaluate(self, state: ESState, fitness_fn: Callable, in_axes: tuple, *args: Any) -> Array:
        shared = [None if axis == 0 else arg for arg, axis in zip(args, in_axes, strict=True)]
        mapped = [arg for arg, axis in zip(args, in_axes, strict=True) if axis == 0]

        def one(member, member_args):
            it = iter(member_args)
            full_args = [
                next(it) if axis == 0 else s for s, axis in zip(shared, in_axes, strict=True)
            ]
            score = jnp.asarray(fitness_fn(self.member(state, member), *full_args))
            if score.shape != ():
                raise ValueError(f"fitness_fn must return a scalar per member, got {score.shape}")
            return score.astype(jnp.float32)

        members = jnp.arange(self.population_size, dtype=jnp.int32)
        if self.eval_batch_size is None:
            return jax.vmap(one)(members, mapped)
        return jax.lax.map(lambda xs: one(*xs), (members, mapped), batch_size=self.eval_batch_size)

    def tell(self, state: ESState, fitness: Array) -> tuple[ESState, dict[str, Array]]:
        """Shape the scores, estimate the ascent direction, take one optax step.

        ``fitness`` has shape ``(N,)``; higher is better. Non-finite scores count as the worst
        finite score of the generation (see :func:`eggroll.shaping.clean_nonfinite`).
        Returns the new state and ``info``: ``fitness_mean/std/min/max`` (over finite scores),
        ``nonfinite_fraction``, ``sigma``, ``update_norm_lowrank`` and ``update_norm_full``.
        """
        fitness = jnp.asarray(fitness)
        if fitness.shape != (self.population_size,):
            raise ValueError(
                f"tell expects fitness of shape ({self.population_size},), got {fitness.shape}"
            )
        return self._tell_jit(state, fitness)

    def step(
        self, state: ESState, fitness_fn: Callable[..., Array], *args: Any, in_axes: Any = None
    ) -> tuple[ESState, dict[str, Array]]:
        """One generation: ``evaluate`` then ``tell``."""
        return self.tell(state, self.evaluate(state, fitness_fn, *args, in_axes=in_axes))

    # ------------------------------------------------------------------ the estimator
    def _draw_weights(self, fitness: Array) -> tuple[Array, Array]:
        """Per-draw weights ``w_p = Σ_{i uses draw p} F_i s_i`` and the non-finite fraction."""
        cleaned, nonfinite = shaping_lib.clean_nonfinite(fitness)
        shaped = jnp.asarray(self.shaping(cleaned), jnp.float32)
        if self.antithetic:
            return shaped[0::2] - shaped[1::2], nonfinite
        return shaped, nonfinite

    def _accumulate(self, spec: LeafSpec, key: _EpochKey, indices: Array, weights: Array) -> Array:
        """``Σ_p w_p E_p`` over one chunk of draws, shape ``spec.shape`` (float32)."""
        keys = jax.vmap(lambda i: key_for(key, spec, i))(indices)
        eps = jax.vmap(lambda k: self._noise(spec, k))(keys)
        return jnp.tensordot(weights, eps, axes=1)

    def _estimate_scale(self, spec: LeafSpec) -> float:
        """Constant folded into ``1/(N σ)`` for a leaf (``1/√r`` for low-rank leaves)."""
        return 1.0

    def estimate(self, state: ESState, fitness: Array) -> tuple[Any, Array]:
        """The ascent direction ``ĝ`` (pytree like ``params``, float32), non-finite fraction."""
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        weights, nonfinite = self._draw_weights(fitness)
        chunk = self._chunk(specs)
        n_chunks = self.num_draws // chunk
        indices = jnp.arange(self.num_draws, dtype=jnp.int32).reshape(n_chunks, chunk)
        weights = weights.reshape(n_chunks, chunk)
        epoch = state.generation // self.noise_reuse
        active = [s for s in specs if s.kind != "frozen"]
        epoch_key = _EpochKey(state.key, epoch)

        def body(acc, chunk_data):
            idx, w = chunk_data
            new = [
                a + self._accumulate(s, epoch_key, idx, w) for a, s in zip(acc, active, strict=True)
            ]
            return new, None

        init = [jnp.zeros(s.shape, jnp.float32) for s in active]
        if n_chunks == 1:
            sums, _ = body(init, (indices[0], weights[0]))
        else:
            sums, _ = jax.lax.scan(body, init, (indices, weights))
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
        grads, nonfinite = self.estimate(state, fitness)
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
        norms = {}
        for kind in ("lowrank", "full"):
            sq = [
                jnp.sum(jnp.square(u.astype(jnp.float32)))
                for u, s in zip(leaves_u, specs, strict=True)
                if s.kind == kind
            ]
            norms[f"update_norm_{kind}"] = jnp.sqrt(sum(sq)) if sq else jnp.zeros((), jnp.float32)
        info = {
            **_fitness_stats(fitness),
            "nonfinite_fraction": nonfinite,
            "sigma": self.sigma_at(state.generation),
            **norms,
        }
        new_state = ESState(new_params, opt_state, state.key, state.generation + 1)
        return new_state, info


@dataclasses.dataclass(frozen=True)
class _EpochKey:
    seed: Array
    epoch: Array


def key_for(epoch_key: _EpochKey, spec: LeafSpec, index: Array) -> Array:
    return noise.draw_key(epoch_key.seed, spec.id, epoch_key.epoch, index)


def _fitness_stats(fitness: Array) -> dict[str, Array]:
    f = jnp.asarray(fitness, jnp.float32)
    finite = jnp.isfinite(f)
    count = jnp.maximum(jnp.sum(finite), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(finite, f, 0.0)) / count
    var = jnp.sum(jnp.where(finite, (f - mean) ** 2, 0.0)) / count
    any_finite = jnp.any(finite)
    return {
        "fitness_mean": jnp.where(any_finite, mean, jnp.nan),
        "fitness_std": jnp.where(any_finite, jnp.sqrt(var), jnp.nan),
        "fitness_min": jnp.where(any_finite, jnp.min(jnp.where(finite, f, jnp.inf)), jnp.nan),
        "fitness_max": jnp.where(any_finite, jnp.max(jnp.where(finite, f, -jnp.inf)), jnp.nan),
    }


class Population:
    """The members of one generation, for callers that run evaluation themselves.

    ``population[i]`` is member ``i``'s view (as passed to a fitness function);
    ``population.materialize()`` returns plain perturbed parameters with a leading ``(N,)``
    axis (``O(N · params)`` memory: for small models or host-side evaluation).
    """

    def __init__(self, strategy: Strategy, state: ESState):
        self.strategy = strategy
        self.state = state
        self.size = strategy.population_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, member: int) -> Any:
        if not 0 <= member < self.size:
            raise IndexError(f"member {member} outside population of {self.size}")
        return self.strategy.member(self.state, member)

    def materialize(self) -> Any:
        members = jnp.arange(self.size, dtype=jnp.int32)
        return jax.jit(jax.vmap(lambda i: materialize(self.strategy.member(self.state, i))))(
            members
        )


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
      rank: rank r of each member's perturbation (1 ≤ r ≤ min(n_in, n_out) of every
        low-rank leaf). The population's update has rank up to ``min(N r, n_in, n_out)``.
    """

    name = "EGGROLL"

    def __init__(
        self,
        population_size: int,
        sigma: float | Schedule,
        optimizer: optax.GradientTransformation | None = None,
        *,
        rank: int = 1,
        **kwargs: Any,
    ):
        _check_positive_int("rank", rank)
        self.rank = rank
        super().__init__(population_size, sigma, optimizer, **kwargs)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}

    def _check_leaf(self, spec: LeafSpec) -> None:
        if spec.kind == "lowrank" and self.rank > min(spec.n_in, spec.n_out):
            raise ValueError(
                f"rank={self.rank} exceeds min(n_in, n_out)={min(spec.n_in, spec.n_out)} of leaf "
                f"{spec.path!r} with shape {spec.shape}: lower rank, or mark the leaf 'full'"
            )

    def _draw_elements(self, spec: LeafSpec) -> int:
        if spec.kind != "lowrank":
            return math.prod(spec.shape)
        return math.prod(spec.lead) * (spec.n_in + spec.n_out) * self.rank

    def _perturb(self, spec: LeafSpec, leaf: Array, key: Array, signed_sigma: Array) -> Any:
        if spec.kind != "lowrank":
            return super()._perturb(spec, leaf, key, signed_sigma)
        a, b = noise.lowrank_factors(key, spec.lead, spec.n_in, spec.n_out, self.rank)
        scale = jnp.broadcast_to(signed_sigma / math.sqrt(self.rank), spec.lead)
        return LowRank(leaf, a, b, scale.astype(jnp.float32))

    def _noise(self, spec: LeafSpec, key: Array) -> Array:
        if spec.kind != "lowrank":
            return super()._noise(spec, key)
        a, b = noise.lowrank_factors(key, spec.lead, spec.n_in, spec.n_out, self.rank)
        return jnp.einsum("...ir,...or->...io", a, b)

    def _estimate_scale(self, spec: LeafSpec) -> float:
        return 1.0 / math.sqrt(self.rank) if spec.kind == "lowrank" else 1.0

    def _accumulate(self, spec: LeafSpec, key: _EpochKey, indices: Array, weights: Array) -> Array:
        if spec.kind != "lowrank":
            return super()._accumulate(spec, key, indices, weights)
        # One contraction over (draw, rank): Σ_p w_p A_p B_pᵀ, never an (chunk, n_in, n_out) tensor.
        keys = jax.vmap(lambda i: key_for(key, spec, i))(indices)
        a, b = jax.vmap(
            lambda k: noise.lowrank_factors(k, spec.lead, spec.n_in, spec.n_out, self.rank)
        )(keys)
        weighted = a * weights.reshape((-1,) + (1,) * (a.ndim - 1))
        return jnp.einsum("c...ir,c...or->...io", weighted, b)
