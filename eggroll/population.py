"""The population machinery every strategy shares: member views, ``evaluate``, ``ask``.

A subclass decides how one leaf is perturbed for one member (``_perturb``) and how scores turn
into an update (``tell``); this base class owns the noise bookkeeping (which draw and sign a
member uses, the per-leaf keys), the leaf rule, and the one-``vmap`` evaluation under ``jit``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from eggroll import distributed, noise
from eggroll.leaves import LeafRule, LeafSpec, default_rule, leaf_specs, resolve_rule
from eggroll.nn import materialize

Array = jax.Array


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def as_key(key: Array | int) -> Array:
    """Accept a typed key, raw uint32 key data, or an int seed; return a typed key."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if jnp.ndim(key):
        return jax.random.wrap_key_data(jnp.asarray(key))
    return jax.random.key(int(key))


def normalise_in_axes(in_axes: Any, n_args: int) -> tuple:
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


class PopulationStrategy(abc.ABC):
    """Base of all strategies: N members, each a perturbation of the state's ``params``.

    Args:
      population_size: members N per generation (even with antithetic sampling).
      antithetic: members 2p and 2p+1 share noise draw p with signs +1/−1.
      noise_reuse: noise changes every ``noise_reuse`` generations (1 = fresh every time).
      leaf_rule: which leaves are ``"lowrank"``, ``"full"`` or ``"frozen"``
        (see :mod:`eggroll.leaves`).
      eval_batch_size: members evaluated at once by ``evaluate`` (``None``: all, one vmap).
      mesh: devices the population is split over (see :mod:`eggroll.distributed`); default:
        every device when there are several, nothing to do on one. ``population_size`` must
        be a multiple of the device count.

    The state must have fields ``params``, ``key`` (typed JAX key) and ``generation``.
    """

    name = "PopulationStrategy"
    score_dtype = jnp.float32
    _default_rule: Callable[[str, Any], str] = staticmethod(default_rule)

    def __init__(
        self,
        population_size: int,
        *,
        antithetic: bool = True,
        noise_reuse: int = 1,
        leaf_rule: LeafRule = None,
        eval_batch_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ):
        check_positive_int("population_size", population_size, 2)
        if antithetic and population_size % 2:
            raise ValueError(
                f"population_size={population_size} is odd but antithetic=True pairs members "
                "(2p, 2p+1): use an even population_size or antithetic=False"
            )
        check_positive_int("noise_reuse", noise_reuse)
        if eval_batch_size is not None:
            check_positive_int("eval_batch_size", eval_batch_size)
        self.population_size = population_size
        self.antithetic = bool(antithetic)
        self.noise_reuse = noise_reuse
        self.leaf_rule = leaf_rule
        self._rule = resolve_rule(leaf_rule, self._default_rule)
        self.eval_batch_size = eval_batch_size
        self.num_draws = population_size // 2 if self.antithetic else population_size
        if mesh is None and jax.device_count() > 1:
            mesh = distributed.population_mesh()
        if mesh is not None:
            distributed.check_divisible(population_size, mesh)
        self.mesh = mesh
        self._evaluate_jit = jax.jit(self._evaluate, static_argnums=(1, 2, 3))

    def config(self) -> dict[str, Any]:
        """JSON-able description of the configuration (stored in checkpoints as a fingerprint)."""
        return {
            "strategy": self.name,
            "population_size": self.population_size,
            "antithetic": self.antithetic,
            "noise_reuse": self.noise_reuse,
        }

    def leaf_specs(self, params: Any) -> list[LeafSpec]:
        """The kind, noise id and shape of every leaf of ``params`` (validated)."""
        specs = leaf_specs(params, self._rule)
        for spec, leaf in zip(specs, jax.tree_util.tree_leaves(params), strict=True):
            self._check_leaf(spec, leaf)
        return specs

    def _check_leaf(self, spec: LeafSpec, leaf: Any) -> None:
        """Subclass hook: raise ``ValueError`` for a leaf this strategy cannot handle."""
        return None

    @abc.abstractmethod
    def _perturb(self, spec: LeafSpec, leaf: Array, key: Array, sign: Array, state: Any):
        """One member's view of one leaf, from its draw ``key`` and antithetic ``sign``."""

    def member(self, state: Any, member: Array | int) -> Any:
        """The parameters seen by one member (``member`` may be traced: ``evaluate`` vmaps it).

        Low-rank leaves become view leaves (:class:`eggroll.LowRank` or its integer twin),
        full-rank leaves perturbed arrays, frozen leaves stay as they are.
        """
        index, sign = noise.noise_index_and_sign(member, self.antithetic)
        return self._view(state, index, sign)

    def _view(self, state: Any, index: Array, sign: Array) -> Any:
        """The parameters perturbed by noise draw ``index`` with sign ``sign`` (±1)."""
        specs = self.leaf_specs(state.params)
        leaves, treedef = jax.tree_util.tree_flatten(state.params)
        epoch = state.generation // self.noise_reuse
        out = []
        for spec, leaf in zip(specs, leaves, strict=True):
            if spec.kind == "frozen":
                out.append(leaf)
                continue
            key = noise.draw_key(state.key, spec.id, epoch, index)
            out.append(self._perturb(spec, leaf, key, sign, state))
        return jax.tree_util.tree_unflatten(treedef, out)

    def gather_scores(self, fitness: Array) -> Array:
        """The ``(N,)`` scores replicated on every device: the only data that crosses devices.

        Everything computed from them (shaping, the estimator, the update) then runs
        identically on every device from the seeds, instead of being split and all-reduced.
        """
        if self.mesh is None:
            return fitness
        return jax.lax.with_sharding_constraint(fitness, distributed.replicated(self.mesh))

    def ask(self, state: Any) -> Population:
        """The population of this generation, for callers that evaluate members themselves."""
        return Population(self, state)

    def evaluate(
        self,
        state: Any,
        fitness_fn: Callable[..., Any],
        *args: Any,
        in_axes: Any = None,
        has_aux: bool = False,
    ) -> Any:
        """Scores ``(N,)`` of every member: ``fitness_fn(member_view, *args)``.

        ``in_axes`` follows ``jax.vmap`` for the extra arguments: ``None`` (default) shares an
        argument with all members, ``0`` gives member ``i`` slice ``i`` of its leading axis; a
        tuple sets it per argument. With ``has_aux=True`` the function returns
        ``(score, aux)`` and ``evaluate`` returns ``(scores, aux)`` with aux stacked on a leading
        ``(N,)`` axis (e.g. a recurrent state carried to the next generation). Compiled once per
        ``(fitness_fn, in_axes, has_aux)`` and shapes: pass the same function object every time.
        """
        in_axes = normalise_in_axes(in_axes, len(args))
        for arg, axis in zip(args, in_axes, strict=True):
            if axis == 0:
                for leaf in jax.tree_util.tree_leaves(arg):
                    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != self.population_size:
                        raise ValueError(
                            f"an argument with in_axes=0 needs a leading axis of "
                            f"population_size={self.population_size}, got shape {jnp.shape(leaf)}"
                        )
        return self._evaluate_jit(state, fitness_fn, in_axes, bool(has_aux), *args)

    def _evaluate(
        self, state: Any, fitness_fn: Callable, in_axes: tuple, has_aux: bool, *args: Any
    ) -> Any:
        shared = [None if axis == 0 else arg for arg, axis in zip(args, in_axes, strict=True)]
        mapped = [arg for arg, axis in zip(args, in_axes, strict=True) if axis == 0]

        def one(index, sign, member_args):
            it = iter(member_args)
            full_args = [
                next(it) if axis == 0 else s for s, axis in zip(shared, in_axes, strict=True)
            ]
            out = fitness_fn(self._view(state, index, sign), *full_args)
            score, aux = out if has_aux else (out, None)
            score = jnp.asarray(score)
            if score.shape != ():
                raise ValueError(f"fitness_fn must return a scalar per member, got {score.shape}")
            return score.astype(self.score_dtype), aux

        # The unit of evaluation is a noise draw: with antithetic sampling a draw's two members
        # (signs +1, −1) are an inner vmap of size 2, so the draw's noise, which does not
        # depend on the sign, is generated once for both.
        devices = 1 if self.mesh is None else self.mesh.devices.size
        paired = self.antithetic and (self.population_size // 2) % devices == 0
        per_unit = 2 if paired else 1
        units = self.population_size // per_unit
        draws = jnp.arange(units, dtype=jnp.int32)

        def unit(draw, unit_args):
            if paired:
                signs = jnp.array([1, -1], jnp.int32)
                return jax.vmap(lambda sign, a: one(draw, sign, a))(signs, unit_args)
            index, sign = noise.noise_index_and_sign(draw, self.antithetic)
            return one(index, sign, unit_args)

        def split(x, parts):
            return x.reshape(parts, x.shape[0] // parts, *x.shape[1:])

        def merge(x):
            return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

        if paired:
            mapped = jax.tree_util.tree_map(lambda x: split(x, units), mapped)
        if self.mesh is not None:  # split draws (and their members' data) over devices
            sharding = distributed.member_sharding(self.mesh)
            draws, mapped = jax.lax.with_sharding_constraint((draws, mapped), sharding)
        if self.eval_batch_size is None:
            out = jax.vmap(unit)(draws, mapped)
        else:
            # Slices of draws in a loop, each slice one vmap: activations of a slice stay in
            # cache (or in memory at all). With several devices the loop runs per device over
            # its own draws: (devices, draws per device) with the device axis vmapped.
            grouped = jax.tree_util.tree_map(lambda x: split(x, devices), (draws, mapped))
            if self.mesh is not None:
                grouped = jax.lax.with_sharding_constraint(grouped, sharding)
            batch = max(1, self.eval_batch_size // per_unit)
            out = jax.vmap(
                lambda d, a: jax.lax.map(lambda xs: unit(*xs), (d, a), batch_size=batch)
            )(*grouped)
            out = jax.tree_util.tree_map(merge, out)
        if paired:
            out = jax.tree_util.tree_map(merge, out)
        scores, aux = out
        return (scores, aux) if has_aux else scores


class Population:
    """The members of one generation, for callers that run evaluation themselves.

    ``population[i]`` is member ``i``'s view (as passed to a fitness function);
    ``population.materialize()`` returns plain perturbed parameters with a leading ``(N,)``
    axis (``O(N · params)`` memory: for small models or host-side evaluation).
    """

    def __init__(self, strategy: PopulationStrategy, state: Any):
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
        view = jax.vmap(lambda i: materialize(self.strategy.member(self.state, i)))
        return jax.jit(view)(members)
