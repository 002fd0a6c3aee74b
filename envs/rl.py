"""gymnax environments as ES fitness: rollouts that stop at the end of the episode, vmapped.

An episode is a ``lax.while_loop`` of at most ``max_steps`` environment steps (or, with
``loop="scan"``, a fixed-length masked ``lax.scan``). gymnax 1.0 returns ``terminated`` and
``truncated`` separately and auto-resets when either is set; the rollout keeps an ``alive``
mask that drops to 0 at the first ``terminated | truncated``, so rewards of the auto-reset
continuation are never counted, and the while loop ends once every episode of a batch has.
Observations are flattened; optional running normalisation uses statistics that live in the
training state (and its checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Policy = Callable[[Any, Array], Array]  # (params, normalised obs (obs_size,)) -> outputs


def _gymnax():
    try:
        import gymnax
    except ImportError as err:  # optional extra
        raise ImportError("RL needs gymnax: pip install -e '.[rl]' (gymnax and six)") from err
    return gymnax


@dataclasses.dataclass(frozen=True, eq=False)
class EnvSpec:
    """A gymnax-style environment with what a policy needs to know about it.

    Build one with :func:`make_env` from a registered gymnax id, or with :func:`env_spec` from
    any object with the gymnax interface (``reset(key, params)``, ``step(key, state, action,
    params)``, ``observation_space(params)``, ``action_space(params)``)."""

    name: str
    env: Any
    env_params: Any
    obs_size: int
    discrete: bool
    action_size: int  # number of actions (discrete) or action dimensions (continuous)
    low: np.ndarray | None
    high: np.ndarray | None
    max_steps: int


def env_spec(
    env: Any, env_params: Any = None, max_steps: int | None = None, name: str | None = None
) -> EnvSpec:
    """An :class:`EnvSpec` for any gymnax-style environment object.

    ``env_params`` defaults to ``env.default_params``; the episode length is
    ``env_params.max_steps_in_episode`` (1000 when absent), capped by ``max_steps``."""
    for method in ("reset", "step", "observation_space", "action_space"):
        if not callable(getattr(env, method, None)):
            raise TypeError(
                f"{type(env).__name__} is not a gymnax-style environment: it has no {method}()"
            )
    if env_params is None:
        env_params = getattr(env, "default_params", None)
    obs_shape = env.observation_space(env_params).shape
    space = env.action_space(env_params)
    discrete = hasattr(space, "n")
    if discrete:
        action_size, low, high = int(space.n), None, None
    else:
        action_size = int(np.prod(space.shape))
        low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).reshape(-1)
    limit = int(getattr(env_params, "max_steps_in_episode", 1000))
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be ≥ 1, got {max_steps}")
        limit = min(limit, max_steps)
    return EnvSpec(
        name or type(env).__name__,
        env,
        env_params,
        int(np.prod(obs_shape)),
        discrete,
        action_size,
        low,
        high,
        limit,
    )


def make_env(env_id: str, max_steps: int | None = None) -> EnvSpec:
    """An :class:`EnvSpec` for a registered gymnax environment id (``gymnax.registered_envs``)."""
    gymnax = _gymnax()
    if env_id not in gymnax.registered_envs:
        close = [e for e in gymnax.registered_envs if env_id.lower() in e.lower()]
        raise ValueError(
            f"unknown gymnax environment {env_id!r}"
            + (f"; did you mean {close}?" if close else f"; choose from {gymnax.registered_envs}")
        )
    env, env_params = gymnax.make(env_id)
    return env_spec(env, env_params, max_steps, name=env_id)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ObsStats:
    """Running mean/variance of observations (Chan et al. merge): ``count ()``, ``mean``,
    ``m2`` (sum of squared deviations), both ``(obs_size,)``, float32."""

    count: Array
    mean: Array
    m2: Array

    @staticmethod
    def create(obs_size: int) -> ObsStats:
        return ObsStats(jnp.zeros(()), jnp.zeros(obs_size), jnp.zeros(obs_size))

    def normalise(self, obs: Array) -> Array:
        """``(obs − mean)/std``, clipped to ±5; identity until anything was counted."""
        var = jnp.where(self.count > 1, self.m2 / jnp.maximum(self.count, 1.0), 1.0)
        out = (obs - self.mean) / jnp.sqrt(var + 1e-8)
        return jnp.clip(out, -5.0, 5.0)

    def merge(self, count: Array, total: Array, total_sq: Array) -> ObsStats:
        """Fold in a batch given by its count, sum and sum of squares."""
        count = jnp.asarray(count, jnp.float32)
        batch_mean = total / jnp.maximum(count, 1.0)
        batch_m2 = jnp.maximum(total_sq - count * batch_mean**2, 0.0)
        new_count = self.count + count
        delta = batch_mean - self.mean
        mean = self.mean + delta * count / jnp.maximum(new_count, 1.0)
        m2 = self.m2 + batch_m2 + delta**2 * self.count * count / jnp.maximum(new_count, 1.0)
        keep = count > 0
        return ObsStats(
            jnp.where(keep, new_count, self.count),
            jnp.where(keep, mean, self.mean),
            jnp.where(keep, m2, self.m2),
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Episode:
    """Result of one masked rollout: ``ret`` (sum of rewards while alive), ``length`` (valid
    steps), and the observation sums for normalisation statistics."""

    ret: Array
    length: Array
    obs_sum: Array
    obs_sq: Array


def to_action(spec: EnvSpec, outputs: Array, key: Array, sample: bool, squash: bool) -> Array:
    """Policy outputs → an environment action.

    Discrete: ``argmax`` of the logits (or a categorical sample when ``sample``). Continuous:
    ``tanh`` squashed onto ``[low, high]`` when ``squash``, else clipped to the bounds.
    """
    if spec.discrete:
        if sample:
            return jax.random.categorical(key, outputs)
        return jnp.argmax(outputs)
    low, high = jnp.asarray(spec.low), jnp.asarray(spec.high)
    if squash:
        action = low + (jnp.tanh(outputs) + 1.0) * 0.5 * (high - low)
    else:
        action = jnp.clip(outputs, low, high)
    return action.reshape(spec.env.action_space(spec.env_params).shape)


LOOPS = ("while", "scan")


def _step_without_reset(
    spec: EnvSpec, key: Array, state: Any, action: Array
) -> tuple[Array, Any, Array, Array]:
    """``(obs, state, reward, done)`` of one step, without gymnax's automatic reset (whose new
    start state a rollout never uses but whose random draw costs every step), for gymnax
    environments (``step_env`` + ``is_truncated``); others go through their ``step``."""
    env, params = spec.env, spec.env_params
    if callable(getattr(env, "step_env", None)) and callable(getattr(env, "is_truncated", None)):
        obs, state, reward, terminated, _ = env.step_env(key, state, action, params)
        return obs, state, reward, jnp.logical_or(terminated, env.is_truncated(state, params))
    obs, state, reward, terminated, truncated, _ = env.step(key, state, action, params)
    return obs, state, reward, jnp.logical_or(terminated, truncated)


def rollout(
    spec: EnvSpec,
    policy: Policy,
    params: Any,
    key: Array,
    stats: ObsStats,
    *,
    normalise: bool = True,
    sample: bool = False,
    squash: bool = True,
    loop: str = "while",
) -> Episode:
    """One episode of at most ``spec.max_steps`` steps.

    ``loop="while"`` (default) stops at the end of the episode: a ``lax.while_loop`` that, under
    ``vmap`` over members and episodes, runs until the longest episode of the batch has ended,
    so short episodes (Catch-bsuite: 9 steps of a 1,000-step limit) pay for no padding.
    ``loop="scan"`` is the fixed-length masked ``lax.scan`` of ``max_steps`` steps. Both use
    the same keys per step and give the same episode (tested)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    reset_key, run_key = jax.random.split(key)
    obs, env_state = spec.env.reset(reset_key, spec.env_params)
    # Every step's (action, environment) keys in one vectorised hash before the loop: jax
    # lowers threefry on CPU as a small rolled loop, and a random call inside the step (a
    # split per step, gymnax's automatic reset) made most of a CartPole step's time.
    step_keys = jax.random.split(run_key, (spec.max_steps, 2))

    def step(carry, t):
        obs, env_state, alive, ret, length, obs_sum, obs_sq = carry
        flat = jnp.ravel(obs).astype(jnp.float32)
        obs_sum = obs_sum + alive * flat
        obs_sq = obs_sq + alive * flat**2
        x = stats.normalise(flat) if normalise else flat
        action = to_action(spec, policy(params, x), step_keys[t, 0], sample, squash)
        new_obs, new_state, reward, done = _step_without_reset(
            spec, step_keys[t, 1], env_state, action
        )
        ret = ret + alive * reward.astype(jnp.float32)
        length = length + alive
        # After the end the episode stays in its last state (nothing is counted from there).
        live = alive > 0
        obs = jax.tree_util.tree_map(lambda n, o: jnp.where(live, n, o), new_obs, obs)
        env_state = jax.tree_util.tree_map(lambda n, o: jnp.where(live, n, o), new_state, env_state)
        alive = alive * (1.0 - done.astype(jnp.float32))
        return (obs, env_state, alive, ret, length, obs_sum, obs_sq)

    zeros = jnp.zeros(spec.obs_size, jnp.float32)
    init = (obs, env_state, jnp.ones(()), jnp.zeros(()), jnp.zeros(()), zeros, zeros)
    if loop == "scan":
        ts = jnp.arange(spec.max_steps)
        carry, _ = jax.lax.scan(lambda c, t: (step(c, t), None), init, ts)
    else:
        _, carry = jax.lax.while_loop(
            lambda c: jnp.logical_and(c[0] < spec.max_steps, c[1][2] > 0),
            lambda c: (c[0] + 1, step(c[1], c[0])),
            (jnp.zeros((), jnp.int32), init),
        )
    _, _, _, ret, length, obs_sum, obs_sq = carry
    return Episode(ret, length, obs_sum, obs_sq)


def episodes(
    spec: EnvSpec, policy: Policy, params: Any, keys: Array, stats: ObsStats, **kwargs: Any
) -> Episode:
    """``rollout`` vmapped over episode ``keys (K,)``: every field gains a leading ``K`` axis."""
    return jax.vmap(lambda k: rollout(spec, policy, params, k, stats, **kwargs))(keys)


def make_fitness(spec: EnvSpec, policy: Policy, **kwargs: Any):
    """An ES fitness ``(view, keys (K,), stats) -> (mean return, aux)`` for
    ``evaluate(..., has_aux=True)``; aux holds summed ``(length, obs_sum, obs_sq)``.

    Build it once and pass the same object every generation (it is a compile-cache key).
    """

    def fitness(view, keys, stats):
        eps = episodes(spec, policy, view, keys, stats, **kwargs)
        aux = (jnp.sum(eps.length), jnp.sum(eps.obs_sum, 0), jnp.sum(eps.obs_sq, 0))
        return jnp.mean(eps.ret), aux

    return fitness
