"""``LinearPolicy`` (policy.kind: linear): the per-feature gain as documented, vmapped and
twice differentiable, and one exact inner step turning a zero start into a plug-in rule."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from metatrade.agents.networks.linear import feature_groups
from metatrade.agents.policies import NetworkConfig, make_policy

L, F, A = 3, 2, 1


def _policy() -> torch.nn.Module:
    obs = gym.spaces.Box(-np.inf, np.inf, (L * F + A,))
    return make_policy(
        NetworkConfig(kind="linear"),
        obs,
        gym.spaces.Discrete(3),
        window_shape=(L, F),
        account_dim=A,
        seed=0,
    ).double()


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(3, L * F + A, generator=g, dtype=torch.float64),
        "linear.bias": torch.randn(3, generator=g, dtype=torch.float64),
        "log_gain": torch.randn(F + 2, generator=g, dtype=torch.float64) - 2.0,
    }


def test_groups_are_the_windows_features_then_the_account() -> None:
    assert feature_groups(7, (3, 2), 1).tolist() == [0, 1, 0, 1, 0, 1, 2]
    assert feature_groups(4, None, 0).tolist() == [0, 1, 2, 3]
    # columns 1 and 2 (say a two-column one-hot) share a gain; ids are renumbered
    assert feature_groups(7, (2, 3), 1, (5, 9, 9)).tolist() == [0, 1, 1, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="one group id"):
        feature_groups(7, (2, 3), 1, (0, 1))


def test_shared_groups_round_trip_through_the_spec() -> None:
    from metatrade.agents.policies import policy_from_spec

    obs = gym.spaces.Box(-np.inf, np.inf, (2 * 3 + 1,))
    pi = make_policy(
        NetworkConfig(kind="linear"),
        obs,
        gym.spaces.Discrete(3),
        window_shape=(2, 3),
        account_dim=1,
        feature_groups=(0, 1, 1),
    )
    assert pi.log_gain.shape == (3 + 1,)  # groups {0}, {1, 2}, the account, the bias
    again = policy_from_spec(pi.spec)
    assert again.spec == pi.spec and torch.equal(again.member, pi.member)


def test_logits_are_the_gained_linear_map() -> None:
    pi, p = _policy(), _params()
    x = torch.randn(5, L * F + A, dtype=torch.float64)
    w, b, gain = p["linear.weight"], p["linear.bias"], p["log_gain"].exp()
    scale = torch.empty(L * F + A, dtype=torch.float64)
    for f in range(F):  # feature f: columns f, F + f, 2F + f of the row-major window
        cols = [f + F * bar for bar in range(L)]
        scale[cols] = 1 + gain[f] * (w[:, cols] ** 2).mean()
    scale[L * F :] = 1 + gain[F] * (w[:, L * F :] ** 2).mean()
    want = x @ (w * scale).T + b * (1 + gain[-1] * (b**2).mean())
    torch.testing.assert_close(functional_call(pi, p, (x,)), want)


def test_meta_gradient_through_an_inner_step_matches_finite_differences() -> None:
    """vmap over tasks and grad of grad (the MAML meta-gradient) through the gain."""
    pi = _policy()
    xs = torch.randn(2, 16, L * F + A, dtype=torch.float64)
    rs = torch.randn(2, 16, dtype=torch.float64)

    def loss(p, x, r):
        probs = torch.softmax(functional_call(pi, p, (x,)), -1)
        return -((probs[:, 2] - probs[:, 0]) * r).mean()

    def meta(p):
        def task(x, r):
            g = grad(loss)(p, x, r)
            return loss({k: p[k] - 3.0 * g[k] for k in p}, x, r)

        return vmap(task)(xs, rs).mean()

    p = _params(1)
    analytic = grad(meta)(p)
    for name in p:
        d = torch.zeros_like(p[name]).flatten()
        d[0] = 1e-6
        d = d.view_as(p[name])
        up = meta({**p, name: p[name] + d})
        down = meta({**p, name: p[name] - d})
        assert float(analytic[name].flatten()[0]) == pytest.approx(
            float((up - down) / 2e-6), rel=1e-5, abs=1e-9
        )


def test_one_step_from_zero_is_the_covariance_rule() -> None:
    """From zero weights the step on the long-minus-short weight of feature j is proportional
    to sum_t x_tj r_{t+1}: its sign is the plug-in rule (issue 19's premise)."""
    pi = _policy()
    zero = {k: torch.zeros_like(v) for k, v in _params().items()}
    x = torch.randn(400, L * F + A, dtype=torch.float64)
    r = 0.3 * x[:, 0] - 0.2 * x[:, 1] + torch.randn(400, dtype=torch.float64)

    def loss(p):
        probs = torch.softmax(functional_call(pi, p, (x,)), -1)
        return -((probs[:, 2] - probs[:, 0]) * r).mean()

    g = grad(loss)(zero)["linear.weight"]
    step = -(g[2] - g[0])  # the long-minus-short weight after a unit step
    torch.testing.assert_close(step / step.abs().max(), (x.T @ r) / (x.T @ r).abs().max())
