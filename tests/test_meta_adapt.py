"""``adapt`` on a test-time ``SampledSource``: the one inner loop, as every evaluation path
adapts (each step on fresh episodes of the current adapted policy), and ``measured_returns``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.adapt import StoredBatches, adapt
from metatrade.meta.advantages import compute_advantages
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.estimators import SampledSource, measured_returns
from metatrade.meta.inner import expand_to_tasks, task_gradients
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import vpg_loss
from metatrade.seeding import derive_seed


@pytest.fixture()
def setup():
    torch.set_num_threads(1)
    family = Navigation2DFamily(max_episode_steps=20)
    env = family.make_batch_env(
        family.sample_tasks(3, task_set="test", rng=np.random.default_rng(0)), 4
    )
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        env.observation_space,
        env.action_space,
        seed=0,
    )
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    return policy, params, env


def test_equals_repeated_sample_and_adapt_and_leaves_theta_unchanged(setup) -> None:
    policy, params, env = setup
    before = {k: v.detach().clone() for k, v in params.items()}
    sizes = (0.5, 0.25)
    config = AdaptationConfig(inner_step_sizes=sizes, gamma=0.9, gae_lambda=0.95)
    source = SampledSource(policy, env, config=config, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        steps = adapt(
            policy,
            expand_to_tasks(params, 3),
            source,
            config=config,
            second_order=False,
            num_steps=3,
        )
        measured = measured_returns(source, steps)

    # the same steps by hand: sample with the current params, refit the baseline, one step
    gen = torch.Generator().manual_seed(5)
    current = expand_to_tasks({k: v.detach() for k, v in params.items()}, 3)
    returns, task_returns, after = [], [], {}
    for k in range(4):
        after[k] = current
        batch = sample_episodes(policy, current, env, generator=gen)
        returns.append(batch.episode_returns().mean().item())
        task_returns.append(batch.episode_returns().mean(dim=1))
        if k == 3:
            break
        batch = compute_advantages(batch, 0.9, 0.95)
        grads = task_gradients(
            lambda p, b: vpg_loss(policy, p, Episodes.from_tensors(b)),
            current,
            batch,
            create_graph=False,
        )
        current = {n: v - sizes[min(k, 1)] * grads[n] for n, v in current.items()}

    # the mean over tasks of per-task means (equal to the mean over all episodes up to
    # float rounding when every task has the same episode count)
    assert [r.mean().item() for r in measured] == pytest.approx(returns, rel=1e-6)
    assert len(measured) == 4
    for got, want in zip(measured, task_returns, strict=True):
        assert got.shape == (3,)
        torch.testing.assert_close(got, want)
    for name, value in current.items():
        assert steps[-1][name].shape == (3, *params[name].shape)
        assert torch.equal(steps[-1][name], value)
        assert torch.equal(steps[2][name], after[2][name])
        assert torch.equal(steps[0][name], before[name].expand(3, *before[name].shape))
        assert not steps[-1][name].requires_grad
    for name, value in params.items():  # theta bitwise unchanged, still a leaf with grad
        assert torch.equal(value, before[name]) and value.requires_grad and value.grad is None
    assert any(not torch.equal(steps[-1][n][0], before[n]) for n in before)


def test_returns_are_measured_only_when_asked_and_reset_seed_seeds_each_batch(
    setup, monkeypatch
) -> None:
    """Step k's batch resets the envs with ``derive_seed(reset_seed, "adaptation batch", k)``;
    the batch measured after the last step is k = K; no reset seed: drawn from the generator."""
    policy, params, env = setup
    theta, config = expand_to_tasks(params, 3), AdaptationConfig()
    seen: list[int | None] = []
    reset = env.reset

    def spy(seed: int | None = None):
        seen.append(seed)
        return reset(seed=seed)

    monkeypatch.setattr(env, "reset", spy)

    def source(reset_seed: int | None) -> SampledSource:
        gen = torch.Generator().manual_seed(1)
        return SampledSource(policy, env, config=config, generator=gen, reset_seed=reset_seed)

    first = source(100)
    want = [derive_seed(100, "adaptation batch", k) for k in range(3)]
    with torch.no_grad():
        steps = adapt(policy, theta, first, config=config, second_order=False, num_steps=2)
        assert len(first.batches) == 2 and seen == want[:2]  # no rollout after the last step
        assert len(measured_returns(first, steps)) == 3 and seen == want
        seen.clear()
        none = source(None)
        assert len(adapt(policy, theta, none, config=config, second_order=False, num_steps=0)) == 1
        assert none.batches == [] and seen == []
        adapt(policy, theta, none, config=config, second_order=False, num_steps=1)
        assert len(seen) == 1 and seen[0] not in want  # drawn from the generator
        again = source(100)
        adapt(policy, theta, again, config=config, second_order=False, num_steps=2)
    torch.testing.assert_close(again.batches[1].obs, first.batches[1].obs)


def test_stored_batches_repeat_the_last_and_adapt_on_one_batch_is_k_steps_on_it(setup) -> None:
    """``StoredBatches([b])``: every step on b (learn2learn's adapt on one batch); the result
    equals stepping by hand and stays differentiable in theta (second order)."""
    policy, params, env = setup
    config = AdaptationConfig(inner_lr=0.3)
    gen = torch.Generator().manual_seed(2)
    batch = compute_advantages(
        sample_episodes(policy, expand_to_tasks(params, 3), env, generator=gen), 0.99, 1.0
    )
    theta = expand_to_tasks(params, 3)
    steps = adapt(
        policy, theta, StoredBatches([batch]), config=config, second_order=True, num_steps=2
    )
    current = expand_to_tasks({k: v.detach() for k, v in params.items()}, 3)
    for _ in range(2):
        grads = task_gradients(
            lambda p, b: vpg_loss(policy, p, Episodes.from_tensors(b)),
            current,
            batch,
            create_graph=False,
        )
        current = {n: v - 0.3 * grads[n] for n, v in current.items()}
    for name in current:
        torch.testing.assert_close(steps[-1][name].detach(), current[name])
    assert all(v.requires_grad for v in steps[-1].values())


def test_second_order_under_no_grad_still_steps(setup) -> None:
    """Reproduction: the per-task ProMP unit adapted under ``no_grad`` with second_order=True,
    and every gradient came out zero (theta's views made under no_grad lead nowhere), so its
    post-update episodes were sampled with theta instead of theta'."""
    policy, params, env = setup
    config = AdaptationConfig(inner_lr=0.3)
    batch = compute_advantages(
        sample_episodes(
            policy, expand_to_tasks(params, 3), env, generator=torch.Generator().manual_seed(3)
        ),
        0.99,
        1.0,
    )
    with torch.no_grad():
        steps = {
            second: adapt(
                policy,
                expand_to_tasks(params, 3),
                StoredBatches([batch]),
                config=config,
                second_order=second,
            )[-1]
            for second in (True, False)
        }
    for name, value in steps[False].items():
        assert torch.equal(steps[True][name], value)
    assert any(not torch.equal(steps[True][n][0], params[n]) for n in params)
