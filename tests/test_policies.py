"""Policies: shapes, distributions, purity under functional_call / vmap / grad, float64."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from metatrade.agents.policies import (
    NetworkConfig,
    make_policy,
    make_value_net,
    policy_from_spec,
)
from metatrade.meta.distributions import Categorical, DiagGaussian

L, F, A = 6, 3, 2
OBS_DIM = L * F + A
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), dtype=np.float32)
DISCRETE = gym.spaces.Discrete(5)
BOX = gym.spaces.Box(-0.1, 0.1, (2,), dtype=np.float32)
KINDS = ["mlp", "gru", "moe"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only spin on a shared machine
    yield
    torch.set_num_threads(threads)


def build(kind: str, action_space: gym.spaces.Space, dtype=torch.float32, seed: int = 0):
    return make_policy(
        NetworkConfig(kind=kind, hidden_sizes=(16, 16), num_experts=3, init_log_std=-0.5),
        OBS_SPACE,
        action_space,
        window_shape=(L, F),
        account_dim=A,
        dtype=dtype,
        seed=seed,
    )


def obs_batch(*shape: int, dtype=torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, OBS_DIM, generator=g, dtype=dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_shapes_and_distribution(kind: str, space: gym.spaces.Space) -> None:
    policy = build(kind, space)
    out = policy(obs_batch(4, 7))
    dist = policy.distribution
    assert out.shape == (4, 7, dist.param_dim)
    if isinstance(space, gym.spaces.Discrete):
        assert dist == Categorical(5)
        # Small head gain: the initial policy is close to uniform.
        assert torch.allclose(torch.softmax(out, -1), torch.full_like(out, 0.2), atol=0.05)
    else:
        assert dist == DiagGaussian(2)
        # The log-std half is the state-independent parameter, broadcast.
        assert torch.equal(out[..., 2:], torch.full_like(out[..., 2:], -0.5))
    # Single unbatched observation works too.
    assert policy(obs_batch(1)[0]).shape == (dist.param_dim,)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", [DISCRETE, BOX], ids=["discrete", "box"])
def test_vmap_over_tasks_equals_loop(kind: str, space: gym.spaces.Space) -> None:
    """Per-task params through vmap(functional_call) give the same outputs as a Python loop."""
    policy = build(kind, space, dtype=torch.float64)
    base = {k: v.detach() for k, v in policy.named_parameters()}
    g = torch.Generator().manual_seed(3)
    num_tasks = 3
    params = {
        k: v.unsqueeze(0) + 0.1 * torch.randn(num_tasks, *v.shape, generator=g, dtype=v.dtype)
        for k, v in base.items()
    }
    obs = obs_batch(num_tasks, 5, dtype=torch.float64)

    batched = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    looped = torch.stack(
        [
            functional_call(policy, {k: v[i] for k, v in params.items()}, (obs[i],))
            for i in range(num_tasks)
        ]
    )
    assert batched.dtype == torch.float64
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)
    # Different task params really give different outputs (the vmap did not share one task's).
    assert not torch.allclose(batched[0], batched[1])


@pytest.mark.parametrize("kind", KINDS)
def test_grad_through_functional_call_finite_and_complete(kind: str) -> None:
    """vmap(grad) of a log-prob surrogate reaches every parameter with a finite gradient,
    and matches finite differences in float64."""
    policy = build(kind, DISCRETE, dtype=torch.float64)
    params = {k: v.detach().clone() for k, v in policy.named_parameters()}
    obs = obs_batch(8, dtype=torch.float64)
    actions = torch.arange(8) % 5
    adv = torch.linspace(-1, 1, 8, dtype=torch.float64)

    def loss(p):
        logits = functional_call(policy, p, (obs,))
        return -(policy.distribution.log_prob(logits, actions) * adv).mean()

    grads = grad(loss)(params)
    assert set(grads) == set(params)
    for name, gr in grads.items():
        assert torch.isfinite(gr).all(), name
        assert gr.abs().sum() > 0, f"no gradient reaches {name}"
    # Directional finite difference along a random direction.
    g = torch.Generator().manual_seed(5)
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    eps = 1e-6
    plus = loss({k: v + eps * direction[k] for k, v in params.items()})
    minus = loss({k: v - eps * direction[k] for k, v in params.items()})
    fd = (plus - minus) / (2 * eps)
    analytic = sum((grads[k] * direction[k]).sum() for k in params)
    assert abs(fd - analytic) <= 1e-7 * max(1.0, abs(float(analytic)))


def test_moe_gate_weights_and_mixture() -> None:
    policy = build("moe", DISCRETE)
    obs = obs_batch(4, 6)
    gates = policy.gate_weights(obs)
    assert gates.shape == (4, 6, 3)
    torch.testing.assert_close(gates.sum(-1), torch.ones(4, 6))
    experts = policy.expert_outputs(obs)
    assert experts.shape == (4, 6, 3, 5)
    torch.testing.assert_close(policy(obs), (gates.unsqueeze(-1) * experts).sum(-2))


def test_gru_uses_window_order_and_account() -> None:
    """The GRU reads the window as [L, F] row-major: permuting bars changes the output;
    the account features enter after the recurrence."""
    policy = build("gru", DISCRETE, dtype=torch.float64)
    obs = obs_batch(1, dtype=torch.float64)[0]
    window = obs[: L * F].reshape(L, F)
    swapped = torch.cat([window.flip(0).reshape(-1), obs[L * F :]])
    assert not torch.allclose(policy(obs), policy(swapped))
    encoded = policy.encoder(obs)
    assert encoded.shape == (16 + A,)
    torch.testing.assert_close(encoded[-A:], obs[-A:])


def test_seed_reproducible_and_spec_roundtrip() -> None:
    a, b, c = build("moe", BOX, seed=7), build("moe", BOX, seed=7), build("moe", BOX, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    rebuilt = policy_from_spec(a.spec)
    rebuilt.load_state_dict(a.state_dict())
    obs = obs_batch(3)
    torch.testing.assert_close(rebuilt(obs), a(obs))


@pytest.mark.parametrize("kind", KINDS)
def test_value_net(kind: str) -> None:
    value = make_value_net(
        OBS_SPACE, (16, 16), kind=kind, window_shape=(L, F), account_dim=A, dtype=torch.float64
    )
    obs = obs_batch(4, 3, dtype=torch.float64)
    assert value(obs).shape == (4, 3)
    params = {k: v.detach().unsqueeze(0).expand(4, *v.shape) for k, v in value.named_parameters()}
    out = vmap(lambda p, o: functional_call(value, p, (o,)))(params, obs)
    torch.testing.assert_close(out, value(obs))


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="window_shape"):
        make_policy(NetworkConfig(kind="gru"), OBS_SPACE, DISCRETE)
    with pytest.raises(ValueError, match="obs_dim=20"):
        make_policy(
            NetworkConfig(kind="gru"), OBS_SPACE, DISCRETE, window_shape=(5, 5), account_dim=2
        )
    # the network's own settings are checked by NetworkConfig, which names the choices
    with pytest.raises(ValueError, match=r"kind\n.*'mlp', 'gru', 'moe' or 'linear'.*'lstm'"):
        make_policy(NetworkConfig(kind="lstm"), OBS_SPACE, DISCRETE)
    with pytest.raises(ValueError, match=r"activation\n.*'tanh', 'relu' or 'elu'.*'swish'"):
        make_policy(NetworkConfig(kind="mlp", activation="swish"), OBS_SPACE, DISCRETE)
    with pytest.raises(ValueError, match="action_space"):
        make_policy(NetworkConfig(kind="mlp"), OBS_SPACE, gym.spaces.MultiDiscrete([2, 2]))


@pytest.mark.parametrize("kind", KINDS)
def test_second_order_meta_gradient_through_vmap_grad(kind: str) -> None:
    """The MAML pattern: vmap(grad(inner loss)) over tasks, one inner step, outer loss
    backpropagated to theta (second order) gives a finite, non-zero gradient everywhere."""
    policy = build(kind, DISCRETE, dtype=torch.float64)
    theta = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(3, 6, OBS_DIM, generator=g, dtype=torch.float64)
    actions = torch.randint(0, 5, (3, 6), generator=g)
    adv = torch.randn(3, 6, generator=g, dtype=torch.float64)

    def inner(p, o, a, w):
        return -(policy.distribution.log_prob(functional_call(policy, p, (o,)), a) * w).mean()

    grads = vmap(grad(inner), in_dims=(None, 0, 0, 0))(theta, obs, actions, adv)
    adapted = {k: theta[k] - 0.1 * grads[k] for k in theta}
    vmap(inner)(adapted, obs, actions, adv).sum().backward()
    for name, p in theta.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in theta.values()) > 0
