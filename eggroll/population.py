"""The population machinery every strategy shares: member views, ``evaluate``, ``ask``,
``tell``/``step``, the noise source and the chunked sum over noise draws.

A subclass decides how one leaf is perturbed for one member (``_perturb``, or ``_view`` for all
leaves of a member at once), how many noise numbers one draw of a leaf takes
(``_draw_elements``) and how scores turn into an update (``_tell``); this base class owns the
noise bookkeeping (which draw and sign a member uses, the per-leaf keys, the optional noise
table), the leaf rule, the validation they share, the one-``vmap`` evaluation under ``jit`` and
the chunked estimator loop.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eggroll import distributed, noise
from eggroll.leaves import LeafRule, LeafSpec, default_rule, leaf_specs, path_string, resolve_rule
from eggroll.nn import materialize

Array = jax.Array

NOISE_SOURCES = ("keys", "table")
# Estimator chunks aim to hold at most this many noise entries per leaf at once.
CHUNK_ELEMENT_BUDGET = 1 << 24


def _scalar(value: Any) -> Any:
    """A 0-d NumPy/JAX array as a NumPy scalar (so ``numbers`` checks apply); else ``value``.

    A traced value (inside ``jit``) cannot be a configuration constant and stays as it is.
    """
    if isinstance(value, np.ndarray | jax.Array) and not isinstance(value, jax.core.Tracer):
        if value.shape == ():
            return np.asarray(value)[()]
    return value


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as a Python ``int``; ``ValueError`` unless it is an integer ≥ ``minimum``.

    Accepts Python ints, NumPy integer scalars and 0-d integer arrays (NumPy or JAX); refuses
    bools and floats (``8.0``: pass ``int(...)``).
    """
    scalar = _scalar(value)
    if isinstance(scalar, bool | np.bool_) or not isinstance(scalar, numbers.Integral):
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    if int(scalar) < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(scalar)


def check_real(name: str, value: Any) -> float:
    """``value`` as a Python ``float``; ``ValueError`` unless it is a real number.

    Accepts Python and NumPy ints and floats and 0-d real arrays (NumPy or JAX); refuses
    bools, complex numbers, strings and arrays with more than one element. The caller checks
    the range (the value may be NaN or ±inf here).
    """
    scalar = _scalar(value)
    if isinstance(scalar, bool | np.bool_) or not isinstance(scalar, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(scalar)


def fitness_stats(fitness: Array) -> dict[str, Array]:
    """Summary of one generation's scores ``(N,)``, non-finite scores left out.

    ``fitness_mean``, ``fitness_std``, ``fitness_min``, ``fitness_max`` (float32) over the
    finite scores, NaN when none is finite; ``nonfinite_scores`` (int32, how many scores are
    NaN or ±inf) and ``nonfinite_fraction`` (float32, the same over N).
    """
    f = jnp.asarray(fitness, jnp.float32)
    finite = jnp.isfinite(f)
    count = jnp.maximum(jnp.sum(finite), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(finite, f, 0.0)) / count
    var = jnp.sum(jnp.where(finite, (f - mean) ** 2, 0.0)) / count
    any_finite = jnp.any(finite)
    nonfinite = jnp.sum(~finite).astype(jnp.int32)
    return {
        "fitness_mean": jnp.where(any_finite, mean, jnp.nan),
        "fitness_std": jnp.where(any_finite, jnp.sqrt(var), jnp.nan),
        "fitness_min": jnp.where(any_finite, jnp.min(jnp.where(finite, f, jnp.inf)), jnp.nan),
        "fitness_max": jnp.where(any_finite, jnp.max(jnp.where(finite, f, -jnp.inf)), jnp.nan),
        "nonfinite_scores": nonfinite,
        "nonfinite_fraction": nonfinite.astype(jnp.float32) / f.shape[0],
    }


def _largest_divisor_at_most(n: int, bound: int) -> int:
    bound = max(1, min(n, bound))
    for d in range(bound, 0, -1):
        if n % d == 0:
            return d
    return 1


def check_params(params: Any) -> Any:
    """``params`` with every leaf as a JAX array; ``ValueError`` for a tree with no leaves
    (``{}``, ``None``) or a leaf that is not an array or a number."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if not flat:
        raise ValueError(
            f"params has no array leaves (got {params!r:.80}): pass a pytree of arrays to "
            "train, e.g. {'w': jnp.zeros((4, 3))}"
        )
    for path, leaf in flat:
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | numbers.Number) or (
            isinstance(leaf, np.ndarray | np.generic) and leaf.dtype.kind not in "biuf"
        ):
            raise ValueError(
                f"params leaf {path_string(path)!r} is a {type(leaf).__name__}, not an array of "
                "numbers: every leaf must be an array (or a number)"
            )
    return jax.tree_util.tree_map(jnp.asarray, params)


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
      noise: ``"keys"`` (every draw made from its key) or ``"table"`` (a draw is a slice of a
        seed-made int8 table of ``table_size`` entries kept in the state; see
        :mod:`eggroll.noise`). Every draw must fit the table (checked at ``init``).
      table_size: entries of the noise table (≥ 1024; only used with ``noise="table"``).
      chunk_size: noise draws per chunk of the estimator's sum over draws (must divide the
        number of draws: N/2 with antithetic sampling, else N); ``None`` picks the largest
        divisor whose noise fits a budget of ``CHUNK_ELEMENT_BUDGET`` entries per leaf.
      eval_batch_size: members evaluated at once by ``evaluate`` (``None``: all, one vmap).
      mesh: devices the population is split over (see :mod:`eggroll.distributed`); default:
        every device when there are several, nothing to do on one. ``population_size`` must
        be a multiple of the device count.

    The state must have fields ``params``, ``key`` (typed JAX key), ``generation`` and
    ``noise_table`` (the int8 table with ``noise="table"``, ``None`` with ``noise="keys"``:
    one convention for every strategy).
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
        noise: str = "keys",
        table_size: int = 1 << 20,
        chunk_size: int | None = None,
        eval_batch_size: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ):
        population_size = check_positive_int("population_size", population_size, 2)
        if antithetic and population_size % 2:
            raise ValueError(
                f"population_size={population_size} is odd but antithetic=True pairs members "
                "(2p, 2p+1): use an even population_size or antithetic=False"
            )
        noise_reuse = check_positive_int("noise_reuse", noise_reuse)
        if eval_batch_size is not None:
            eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
        if noise not in NOISE_SOURCES:
            raise ValueError(f"noise must be 'keys' or 'table', got {noise!r}")
        table_size = check_positive_int("table_size", table_size, 1024)
        self.population_size = population_size
        self.antithetic = bool(antithetic)
        self.noise_reuse = noise_reuse
        self.leaf_rule = leaf_rule
        self._rule = resolve_rule(leaf_rule, self._default_rule)
        self.eval_batch_size = eval_batch_size
        self.num_draws = population_size // 2 if self.antithetic else population_size
        self.noise = noise
        self.table_size = table_size
        if chunk_size is not None:
            chunk_size = check_positive_int("chunk_size", chunk_size)
            if self.num_draws % chunk_size:
                per = "antithetic pairs: population_size / 2" if self.antithetic else "members"
                raise ValueError(
                    f"chunk_size={chunk_size} does not divide the {self.num_draws} noise draws "
                    f"per generation ({per}); pick a divisor of {self.num_draws}"
                )
        self.chunk_size = chunk_size
        if mesh is None and jax.device_count() > 1:
            mesh = distributed.population_mesh()
        if mesh is not None:
            distributed.check_divisible(population_size, mesh)
        self.mesh = mesh
        self._evaluate_jit = jax.jit(self._evaluate, static_argnums=(1, 2, 3))
        self._tell_jit = jax.jit(self._tell)

    def config(self) -> dict[str, Any]:
        """JSON-able description of the configuration (stored in checkpoints as a fingerprint)."""
        return {
            "strategy": self.name,
            "population_size": self.population_size,
            "antithetic": self.antithetic,
            "noise_reuse": self.noise_reuse,
            "noise": self.noise,
            "table_size": self.table_size if self.noise == "table" else None,
        }

    def leaf_specs(self, params: Any) -> list[LeafSpec]:
        """The kind, noise id and shape of every leaf of ``params`` (validated)."""
        specs = leaf_specs(params, self._rule)
        for spec, leaf in zip(specs, jax.tree_util.tree_leaves(params), strict=True):
            self._check_leaf(spec, leaf)
            self._check_table(spec)
        return specs

    def _check_leaf(self, spec: LeafSpec, leaf: Any) -> None:
        """Subclass hook: raise ``ValueError`` for a leaf this strategy cannot handle."""
        return None

    def _draw_elements(self, spec: LeafSpec) -> int:
        """Noise numbers one draw of a leaf takes (dense noise: the leaf's size)."""
        return math.prod(spec.shape)

    def _check_table(self, spec: LeafSpec) -> None:
        if spec.kind == "frozen" or self.noise != "table":
            return
        if self._draw_elements(spec) > self.table_size:
            raise ValueError(
                f"leaf {spec.path!r} needs {self._draw_elements(spec)} noise entries per "
                f"draw, more than table_size={self.table_size}: raise table_size (several "
                "times the largest draw keeps draws nearly independent) or use noise='keys'"
            )

    def _start(self, key: Array | int, params: Any) -> tuple[Array, Any, Array | None]:
        """What every ``init`` does first: the typed key, validated array params (a
        ``ValueError`` for empty or non-array trees and unsuitable leaves) and the noise table
        (``None`` with ``noise="keys"``)."""
        key = as_key(key)
        params = check_params(params)
        self.leaf_specs(params)
        table = noise.make_table(key, self.table_size) if self.noise == "table" else None
        return key, params, table

    # ------------------------------------------------------------------ the sum over draws
    def _chunk(self, specs: list[LeafSpec]) -> int:
        """Noise draws per chunk: ``chunk_size``, or the largest divisor of the draw count
        whose noise fits ``CHUNK_ELEMENT_BUDGET`` entries for the largest leaf."""
        if self.chunk_size is not None:
            return self.chunk_size
        per_draw = max([self._draw_elements(s) for s in specs if s.kind != "frozen"] or [1])
        return _largest_divisor_at_most(self.num_draws, max(1, CHUNK_ELEMENT_BUDGET // per_draw))

    def _sum_over_draws(
        self,
        specs: list[LeafSpec],
        weights: Array,
        chunk_sum: Callable[[LeafSpec, Array, Array], Array],
        dtype: Any,
    ) -> list[Array]:
        """``Σ_p w_p X_p`` for every non-frozen leaf, by chunks of draws (one ``lax.scan``).

        ``weights (num_draws,)`` are the per-draw weights; ``chunk_sum(spec, indices (c,),
        w (c,))`` returns one chunk's sum for a leaf (shape ``spec.shape``, ``dtype``).
        Returns the sums of the non-frozen leaves in ``specs`` order.
        """
        active = [s for s in specs if s.kind != "frozen"]

        def chunk_sums(idx: Array, w: Array) -> list[Array]:
            return [chunk_sum(s, idx, w) for s in active]

        return self._sum_over_draws_all(specs, weights, chunk_sums, dtype)

    def _sum_over_draws_all(
        self,
        specs: list[LeafSpec],
        weights: Array,
        chunk_sums: Callable[[Array, Array], list[Array]],
        dtype: Any,
    ) -> list[Array]:
        """:meth:`_sum_over_draws` with one function for all leaves of a chunk:
        ``chunk_sums(indices (c,), w (c,))`` returns the non-frozen leaves' chunk sums."""
        chunk = self._chunk(specs)
        n_chunks = self.num_draws // chunk
        indices = jnp.arange(self.num_draws, dtype=jnp.int32).reshape(n_chunks, chunk)
        weights = weights.reshape(n_chunks, chunk)
        active = [s for s in specs if s.kind != "frozen"]

        def body(acc, chunk_data):
            idx, w = chunk_data
            sums = chunk_sums(idx, w)
            return [a + x for a, x in zip(acc, sums, strict=True)], None

        init = [jnp.zeros(s.shape, dtype) for s in active]
        if n_chunks == 1:
            return body(init, (indices[0], weights[0]))[0]
        return jax.lax.scan(body, init, (indices, weights))[0]

    def _all_draw_keys(self, state: Any, specs: list[LeafSpec], index: Array) -> Array:
        """Keys ``(L,)`` of draw ``index`` for the leaves ``specs`` (one hash per fold)."""
        epoch = state.generation // self.noise_reuse
        return noise.draw_keys(state.key, [s.id for s in specs], epoch, index)

    def _draw_keys(self, state: Any, spec: LeafSpec, indices: Array) -> Array:
        """Keys ``(c,)`` of draws ``indices`` of one leaf at the state's noise epoch."""
        epoch = state.generation // self.noise_reuse
        return jax.vmap(lambda i: noise.draw_key(state.key, spec.id, epoch, i))(indices)

    # ------------------------------------------------------------------ update
    @abc.abstractmethod
    def _tell(self, state: Any, fitness: Array) -> tuple[Any, dict[str, Array]]:
        """The jitted update from replicated-or-not scores ``(N,)``."""

    def tell(self, state: Any, fitness: Array) -> tuple[Any, dict[str, Array]]:
        """One update from the scores ``fitness (N,)`` (higher is better).

        Returns ``(new_state, info)``; ``info`` is a dict of scalars, see the strategy's
        docstring. Every strategy reports ``fitness_mean/std/min/max`` over the finite scores,
        ``nonfinite_scores`` (count), ``nonfinite_fraction`` and ``step_skipped``.
        """
        fitness = jnp.asarray(fitness)
        if fitness.shape != (self.population_size,):
            raise ValueError(
                f"tell expects fitness of shape ({self.population_size},), got {fitness.shape}"
            )
        return self._tell_jit(state, fitness)

    def step(
        self, state: Any, fitness_fn: Callable[..., Any], *args: Any,
        in_axes: Any = None, has_aux: bool = False,
    ) -> tuple[Any, dict[str, Array]] | tuple[Any, dict[str, Array], Any]:  # fmt: skip
        """One generation: :meth:`evaluate` then :meth:`tell`.

        Returns ``(state, info)``, or ``(state, info, aux)`` with ``has_aux=True`` (``aux``
        stacked over members as :meth:`evaluate` returns it).
        """
        out = self.evaluate(state, fitness_fn, *args, in_axes=in_axes, has_aux=has_aux)
        if not has_aux:
            return self.tell(state, out)
        scores, aux = out
        new_state, info = self.tell(state, scores)
        return new_state, info, aux

    def _perturb(self, spec: LeafSpec, leaf: Array, key: Array, sign: Array, state: Any):
        """One member's view of one leaf, from its draw ``key`` and antithetic ``sign``: what
        :meth:`_view` calls per leaf. A subclass overrides this, or :meth:`_view` itself (the
        float strategies draw all leaves of a member at once)."""
        raise NotImplementedError(f"{type(self).__name__} overrides neither _perturb nor _view")

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
        active = [s for s in specs if s.kind != "frozen"]
        keys = iter(self._all_draw_keys(state, active, index) if active else [])
        out = []
        for spec, leaf in zip(specs, leaves, strict=True):
            if spec.kind == "frozen":
                out.append(leaf)
                continue
            out.append(self._perturb(spec, leaf, next(keys), sign, state))
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
        self, state: Any, fitness_fn: Callable[..., Any], *args: Any,
        in_axes: Any = None, has_aux: bool = False,
    ) -> Any:  # fmt: skip
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
            score, aux = _split_output(out, has_aux)
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


def _split_output(out: Any, has_aux: bool) -> tuple[Array, Any]:
    """``(score (), aux)`` from a fitness function's output, with errors that say what to return."""
    if has_aux:
        if not (isinstance(out, tuple | list) and len(out) == 2):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple | list) else type(out).__name__
            raise ValueError(
                f"has_aux=True: fitness_fn must return a pair (score, aux) with a scalar score "
                f"and any pytree aux, got {got}; return (score, aux) or drop has_aux"
            )
        score, aux = out
    else:
        if isinstance(out, tuple | list):
            raise ValueError(
                f"fitness_fn returned a {type(out).__name__} of {len(out)}: it must return one "
                "scalar score per member; if it returns (score, aux), pass has_aux=True"
            )
        score, aux = out, None
    score = jnp.asarray(score)
    if score.shape != ():
        raise ValueError(f"fitness_fn must return a scalar per member, got shape {score.shape}")
    return score, aux


class Population:
    """The members of one generation, for callers that run evaluation themselves.

    ``population[i]`` is member ``i``'s view (as passed to a fitness function);
    ``population.materialize()`` returns plain perturbed parameters with a leading ``(N,)``
    axis (``O(N · params)`` memory: for small models or host-side evaluation): every view leaf
    goes through its ``materialize()`` (:func:`eggroll.materialize`), so this works for every
    strategy, the integer one included.
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
        """Every member's dense parameters, stacked on a leading ``(N,)`` axis."""
        members = jnp.arange(self.size, dtype=jnp.int32)
        view = jax.vmap(lambda i: materialize(self.strategy.member(self.state, i)))
        return jax.jit(view)(members)
