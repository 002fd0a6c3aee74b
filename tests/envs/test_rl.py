"""gymnax rollouts: the masked scan equals a plain Python loop; both action kinds; stats."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eggroll as egg
from eggroll.envs import rl
from eggroll.models import mlp

pytest.importorskip("gymnax")  # the 'rl' extra; installed by the dev extra that CI uses


@functools.cache
def _task(env_id, max_steps=None):
    return rl.make_env(env_id, max_steps)


def _policy_params(task, seed=0):
    config = mlp.MLPConfig((16,))
    return mlp.init_params(jax.random.key(seed), task.obs_size, task.action_size, config)


def _python_loop_return(task, params, key, stats, normalise=True):
    """The same episode stepped one call at a time in Python, stopping at the first done."""
    reset_key, run_key = jax.random.split(key)
    obs, state = task.env.reset(reset_key, task.env_params)
    keys = jax.random.split(run_key, task.max_steps)
    total, length = 0.0, 0
    for t in range(task.max_steps):
        flat = jnp.ravel(obs).astype(jnp.float32)
        x = stats.normalise(flat) if normalise else flat
        act_key, env_key = jax.random.split(keys[t])
        action = rl.to_action(task, mlp.apply(params, x), act_key, sample=False, squash=True)
        obs, state, reward, terminated, truncated, _ = task.env.step(
            env_key, state, action, task.env_params
        )
        total += float(reward)
        length += 1
        if bool(terminated) or bool(truncated):
            break
    return total, length


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_masked_rollout_equals_python_loop(env_id):
    task = _task(env_id, 120)
    params = _policy_params(task)
    stats = rl.ObsStats.create(task.obs_size)
    policy = mlp.apply
    for seed in range(3):
        key = jax.random.key(seed)
        episode = jax.jit(lambda p, k: rl.rollout(task, policy, p, k, stats))(params, key)
        expected_return, expected_length = _python_loop_return(task, params, key, stats)
        np.testing.assert_allclose(float(episode.ret), expected_return, rtol=1e-5, atol=1e-4)
        assert int(episode.length) == expected_length


def test_cartpole_episode_ends_early_and_masks_the_rest():
    task = _task("CartPole-v1")
    params = _policy_params(task)
    episode = rl.rollout(
        task, mlp.apply, params, jax.random.key(0), rl.ObsStats.create(task.obs_size)
    )
    # A random policy falls long before 500 steps; reward counts only the valid steps.
    assert 5 <= int(episode.length) < 500
    assert float(episode.ret) == float(episode.length)


def test_both_action_kinds():
    cart, pend = _task("CartPole-v1"), _task("Pendulum-v1")
    assert cart.discrete and cart.action_size == 2
    assert not pend.discrete and pend.action_size == 1
    key = jax.random.key(0)
    assert int(rl.to_action(cart, jnp.array([0.1, 0.7]), key, False, True)) == 1
    assert rl.to_action(cart, jnp.array([0.1, 0.7]), key, True, True).shape == ()
    squashed = rl.to_action(pend, jnp.array([100.0]), key, False, True)
    clipped = rl.to_action(pend, jnp.array([-100.0]), key, False, False)
    np.testing.assert_allclose(squashed, [2.0], rtol=1e-6)
    np.testing.assert_allclose(clipped, [-2.0])


def test_unknown_environment_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown gymnax environment 'CartPole'.*CartPole-v1"):
        rl.make_env("CartPole")


def test_obs_stats_merge_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, (500, 4)), rng.normal(-1, 0.5, (300, 4))
    stats = rl.ObsStats.create(4)
    for batch in (a, b):
        stats = stats.merge(len(batch), batch.sum(0), (batch**2).sum(0))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(stats.mean, both.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.m2 / stats.count, both.var(0), rtol=1e-3)
    unchanged = stats.merge(0, jnp.zeros(4), jnp.zeros(4))
    np.testing.assert_array_equal(unchanged.mean, stats.mean)


def test_obs_stats_update_in_training_and_roundtrip_a_checkpoint(tmp_path):
    task = _task("CartPole-v1", 100)
    es = egg.EGGROLL(16, sigma=0.1, rank=1)
    state = es.init(jax.random.key(0), _policy_params(task))
    stats = rl.ObsStats.create(task.obs_size)
    fitness = rl.make_fitness(task, mlp.apply)
    keys = jax.vmap(lambda k: jax.random.split(k, 1))(jax.random.split(jax.random.key(1), 16))
    scores, (length, obs_sum, obs_sq) = es.evaluate(
        state, fitness, keys, stats, in_axes=(0, None), has_aux=True
    )
    stats = stats.merge(jnp.sum(length), jnp.sum(obs_sum, 0), jnp.sum(obs_sq, 0))
    assert float(stats.count) == float(jnp.sum(length)) > 0
    assert np.all(np.asarray(stats.m2) > 0)
    egg.checkpoint.save(tmp_path / "ck", (state, stats))
    (_, back), _ = egg.checkpoint.load(tmp_path / "ck", (state, rl.ObsStats.create(4)))
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.count, stats.count)


class _OnlyStep:
    """A gymnax-style environment with ``step`` (auto-reset) but no ``step_env``."""

    def __init__(self, env):
        self._env = env
        self.default_params = env.default_params

    def reset(self, key, params):
        return self._env.reset(key, params)

    def step(self, key, state, action, params):
        return self._env.step(key, state, action, params)

    def observation_space(self, params):
        return self._env.observation_space(params)

    def action_space(self, params):
        return self._env.action_space(params)


def test_rollouts_step_without_reset_and_match_an_environment_that_only_has_step():
    # gymnax environments are stepped without the automatic reset (no random draw per step);
    # an object with only step() goes through it: the episodes are the same.
    task = _task("CartPole-v1", 60)
    plain = rl.env_spec(_OnlyStep(task.env), task.env_params, 60, name="only-step")
    assert not hasattr(plain.env, "step_env")
    params = _policy_params(task, seed=1)
    stats = rl.ObsStats.create(task.obs_size)
    keys = jax.random.split(jax.random.key(5), 4)
    a = jax.jit(lambda p: rl.episodes(task, mlp.apply, p, keys, stats))(params)
    b = jax.jit(lambda p: rl.episodes(plain, mlp.apply, p, keys, stats))(params)
    np.testing.assert_array_equal(np.asarray(a.ret), np.asarray(b.ret))
    np.testing.assert_array_equal(np.asarray(a.length), np.asarray(b.length))
    # two programs: their float sums may round differently (1e-6 seen without LLVM optimisation)
    np.testing.assert_allclose(np.asarray(a.obs_sum), np.asarray(b.obs_sum), rtol=1e-5)
