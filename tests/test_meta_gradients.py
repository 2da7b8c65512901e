"""Meta-gradients against closed forms, exact enumeration and finite differences (float64).

(a) one-step Gaussian bandit with Gauss-Hermite nodes as weighted episodes: dice and lvc
    meta-gradients equal the closed form;
(b) a 2-state, 2-action, horizon-3 MDP enumerated exactly: autograd meta-gradient equals
    central finite differences; dice (trajectories weighted by stop-gradient probability)
    equals it; vpg and lvc differ by exactly the Hessian terms they drop;
(c) second-order minus first-order equals -alpha * HVP(inner loss, outer gradient);
(d) adapt never touches the meta-parameters and every meta-parameter gets a finite gradient.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import grad, jvp

from meta_helpers import adapt_on
from metatrade.meta.adapt import StoredBatches, adapt
from metatrade.meta.config import AdaptationConfig
from metatrade.meta.distributions import Categorical, DiagGaussian
from metatrade.meta.episodes import Episodes
from metatrade.meta.objective import outer_loss
from metatrade.meta.surrogates import get_surrogate

DT = torch.float64


def _episodes(obs, actions, rewards, log_probs, dist_params, weights, advantages, values=None):
    num_tasks, num_eps, horizon = rewards.shape
    mask = torch.ones_like(rewards)
    trunc = torch.zeros(rewards.shape, dtype=torch.bool)
    trunc[..., -1] = True
    return Episodes(
        obs=obs,
        actions=actions,
        rewards=rewards,
        mask=mask,
        terminated=torch.zeros_like(trunc),
        truncated=trunc,
        log_probs=log_probs,
        dist_params=dist_params,
        last_obs=obs[:, :, -1],
        lengths=torch.full((num_tasks, num_eps), horizon),
        weights=weights,
        advantages=advantages,
        values=values,
    )


# --------------------------------------------------------------------------- (a) bandit


class BanditPolicy(nn.Module):
    """a ~ N(mu, exp(s)^2): dist params (mu, s) independent of the (dummy) observation."""

    def __init__(self, mu: float, s: float) -> None:
        super().__init__()
        self.distribution = DiagGaussian(1)
        self.mu = nn.Parameter(torch.tensor([mu], dtype=DT))
        self.s = nn.Parameter(torch.tensor([s], dtype=DT))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        shape = obs.shape[:-1] + (1,)
        return torch.cat([self.mu.expand(shape), self.s.expand(shape)], dim=-1)


def _bandit_nodes(mu: torch.Tensor, s: torch.Tensor, goals: torch.Tensor, n: int = 12) -> Episodes:
    """Gauss-Hermite nodes of N(mu_i, e^{2 s_i}) per task as weighted one-step episodes."""
    x, w = np.polynomial.hermite.hermgauss(n)
    x, w = torch.tensor(x, dtype=DT), torch.tensor(w / np.sqrt(np.pi), dtype=DT)
    mu, s = mu.detach().reshape(-1, 1), s.detach().reshape(-1, 1)  # [T, 1]
    a = mu + torch.exp(s) * np.sqrt(2.0) * x  # [T, n]
    num_tasks = goals.shape[0]
    r = -((a - goals[:, None]) ** 2)
    dist_params = torch.stack([mu.expand_as(a), s.expand_as(a)], dim=-1)  # [T, n, 2]
    logp = DiagGaussian(1).log_prob(dist_params, a.unsqueeze(-1))
    return _episodes(
        obs=torch.zeros(num_tasks, n, 1, 1, dtype=DT),
        actions=a.reshape(num_tasks, n, 1, 1),
        rewards=r.unsqueeze(-1),
        log_probs=logp.unsqueeze(-1),
        dist_params=dist_params.unsqueeze(2),
        weights=w.expand(num_tasks, n).clone(),
        advantages=r.unsqueeze(-1),
    )


@pytest.mark.parametrize("surrogate", ["dice", "lvc"])
def test_bandit_meta_gradient_matches_closed_form(surrogate: str) -> None:
    mu0, s0, alpha = 0.3, -0.4, 0.05
    goals = torch.tensor([1.0, -0.5, 0.2], dtype=DT)
    policy = BanditPolicy(mu0, s0)
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    num_tasks = goals.shape[0]
    pre = _bandit_nodes(params["mu"].expand(num_tasks), params["s"].expand(num_tasks), goals)
    adapted = adapt_on(policy, params, pre, lr=alpha, surrogate=surrogate, gamma=1.0)
    post = _bandit_nodes(adapted["mu"], adapted["s"], goals)
    # meta-objective = mean_i J_i(theta'_i); the loss is its negative
    loss = outer_loss(policy, adapted, post)
    g_mu, g_s = torch.autograd.grad(loss, [params["mu"], params["s"]])

    # Closed form: J(mu, s) = -((mu - g)^2 + e^{2s}); theta' = theta + alpha grad J.
    g = goals
    var = np.exp(2 * s0)
    s_post = s0 - 2 * alpha * var
    dmu = -2 * (1 - 2 * alpha) ** 2 * (mu0 - g)
    ds = -2 * np.exp(2 * s_post) * (1 - 4 * alpha * var) * torch.ones_like(g)
    torch.testing.assert_close(-g_mu, dmu.mean().reshape(1), rtol=0, atol=1e-8)
    torch.testing.assert_close(-g_s, ds.mean().reshape(1), rtol=0, atol=1e-8)


def test_bandit_vpg_misses_the_sampling_term() -> None:
    """vpg's Hessian lacks E[score score^T r]: its meta-gradient must differ from the truth."""
    policy = BanditPolicy(0.3, -0.4)
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    goals = torch.tensor([1.0], dtype=DT)
    grads = {}
    for name in ("vpg", "dice"):
        pre = _bandit_nodes(params["mu"].expand(1), params["s"].expand(1), goals)
        adapted = adapt_on(policy, params, pre, lr=0.05, surrogate=name, gamma=1.0)
        post = _bandit_nodes(adapted["mu"], adapted["s"], goals)
        grads[name] = torch.autograd.grad(outer_loss(policy, adapted, post), params["mu"])[0]
    assert (grads["vpg"] - grads["dice"]).abs().item() > 1e-3


# --------------------------------------------------------------------------- (b) tiny MDP

H, NS, NA = 3, 2, 2
P_TRANS = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.05, 0.95]]], dtype=DT)  # [s,a,s']
RHO = torch.tensor([0.6, 0.4], dtype=DT)
REWARDS = torch.tensor(
    [[[1.0, 0.0], [0.2, -0.5]], [[-1.0, 0.5], [0.8, 0.3]]], dtype=DT
)  # [task, s, a]
TRAJS = list(itertools.product(range(NS), range(NA), range(NS), range(NA), range(NS), range(NA)))
STATES = torch.tensor([[t[0], t[2], t[4]] for t in TRAJS])  # [N, H]
ACTIONS = torch.tensor([[t[1], t[3], t[5]] for t in TRAJS])  # [N, H]


class TablePolicy(nn.Module):
    """Softmax policy with a logits table: obs is a one-hot state."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.distribution = Categorical(NA)
        self.table = nn.Parameter(table.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.table


def _traj_probs(table: torch.Tensor) -> torch.Tensor:
    """p(tau) for every enumerated trajectory, differentiable in the table [N]."""
    logpi = torch.log_softmax(table, dim=-1)
    logp = torch.log(RHO[STATES[:, 0]])
    for t in range(H):
        logp = logp + logpi[STATES[:, t], ACTIONS[:, t]]
        if t + 1 < H:
            logp = logp + torch.log(P_TRANS[STATES[:, t], ACTIONS[:, t], STATES[:, t + 1]])
    return torch.exp(logp)


def _traj_rewards(task: int) -> torch.Tensor:
    return REWARDS[task][STATES, ACTIONS]  # [N, H]


def _exact_J(table: torch.Tensor, task: int) -> torch.Tensor:
    """Expected per-step return E[sum_t r_t] / H (the scale of the surrogates' mean)."""
    return (_traj_probs(table) * _traj_rewards(task).sum(-1)).sum() / H


def _exact_meta_objective(table: torch.Tensor, alpha: float) -> torch.Tensor:
    vals = []
    for task in range(REWARDS.shape[0]):
        g = torch.autograd.grad(_exact_J(table, task), table, create_graph=True)[0]
        vals.append(_exact_J(table + alpha * g, task))
    return torch.stack(vals).mean()


def _enumerated_episodes(tables: torch.Tensor) -> Episodes:
    """All trajectories of every task, weighted by stop-gradient p(tau) under tables [T,2,2]."""
    num_tasks = tables.shape[0]
    obs = torch.nn.functional.one_hot(STATES, NS).to(DT).expand(num_tasks, -1, -1, -1)
    rewards = torch.stack([_traj_rewards(i) for i in range(num_tasks)])  # [T, N, H]
    reward_to_go = rewards.flip(-1).cumsum(-1).flip(-1)
    weights = torch.stack([_traj_probs(tables[i].detach()) for i in range(num_tasks)])
    dist_params = torch.stack([tables[i].detach()[STATES] for i in range(num_tasks)])  # [T,N,H,2]
    logp = Categorical(NA).log_prob(dist_params, ACTIONS.expand(num_tasks, -1, -1))
    return _episodes(
        obs=obs.contiguous(),
        actions=ACTIONS.expand(num_tasks, -1, -1).contiguous(),
        rewards=rewards,
        log_probs=logp,
        dist_params=dist_params,
        weights=weights,
        advantages=reward_to_go,
    )


TABLE0 = torch.tensor([[0.3, -0.2], [-0.6, 0.4]], dtype=DT)
ALPHA = 0.7


def _estimated_meta_gradient(surrogate: str) -> torch.Tensor:
    policy = TablePolicy(TABLE0)
    params = {"table": TABLE0.clone().requires_grad_()}
    num_tasks = REWARDS.shape[0]
    pre = _enumerated_episodes(params["table"].detach().expand(num_tasks, -1, -1))
    adapted = adapt_on(policy, params, pre, lr=ALPHA, surrogate=surrogate, gamma=1.0)
    post = _enumerated_episodes(adapted["table"])
    return -torch.autograd.grad(outer_loss(policy, adapted, post), params["table"])[0]


def test_exact_meta_gradient_matches_central_finite_differences() -> None:
    table = TABLE0.clone().requires_grad_()
    auto = torch.autograd.grad(_exact_meta_objective(table, ALPHA), table)[0]
    fd = torch.zeros_like(TABLE0)
    eps = 1e-6
    for idx in itertools.product(range(NS), range(NA)):
        plus, minus = TABLE0.clone(), TABLE0.clone()
        plus[idx] += eps
        minus[idx] -= eps
        plus.requires_grad_()
        minus.requires_grad_()
        fd[idx] = (_exact_meta_objective(plus, ALPHA) - _exact_meta_objective(minus, ALPHA)) / (
            2 * eps
        )
    rel = (auto - fd).norm() / fd.norm()
    assert rel < 1e-6, f"relative error {rel:.2e}"


def _exact_meta_gradient() -> torch.Tensor:
    table = TABLE0.clone().requires_grad_()
    return torch.autograd.grad(_exact_meta_objective(table, ALPHA), table)[0]


def test_dice_with_enumerated_trajectories_is_exact() -> None:
    torch.testing.assert_close(
        _estimated_meta_gradient("dice"), _exact_meta_gradient(), rtol=1e-10, atol=1e-12
    )


def _scores() -> torch.Tensor:
    """grad_table log pi(a_t|s_t) for every trajectory and step [N, H, 2, 2] (softmax closed form)."""
    pi = torch.softmax(TABLE0, dim=-1)
    onehot_s = torch.nn.functional.one_hot(STATES, NS).to(DT)  # [N,H,S]
    onehot_a = torch.nn.functional.one_hot(ACTIONS, NA).to(DT)  # [N,H,A]
    return onehot_s.unsqueeze(-1) * (onehot_a.unsqueeze(-2) - pi[STATES].unsqueeze(-2))


@pytest.mark.parametrize("surrogate", ["vpg", "lvc"])
def test_vpg_and_lvc_differ_from_exact_by_the_dropped_hessian_terms(surrogate: str) -> None:
    exact = _exact_meta_gradient()
    est = _estimated_meta_gradient(surrogate)
    assert (exact - est).abs().max() > 1e-4  # the dropped terms matter here

    # theta'_i = theta + alpha * Hsur_i, so the meta-gradient differs by
    # alpha/T * sum_i (H_exact_i - H_sur_i)^T v_i, v_i = grad J_i(theta'_i).
    # H_exact - H_vpg = E[(sum_t' s_t') (sum_t s_t G_t)^T] / H  (the pre-update sampling term);
    # H_exact - H_lvc = the same without the t' = t terms (LVC keeps those).
    table = TABLE0.clone().requires_grad_()
    scores = _scores()  # [N, H, 2, 2]
    probs = _traj_probs(TABLE0)
    expected_diff = torch.zeros_like(TABLE0)
    for task in range(REWARDS.shape[0]):
        g = torch.autograd.grad(_exact_J(table, task), table)[0]
        post = (TABLE0 + ALPHA * g).requires_grad_()
        v = torch.autograd.grad(_exact_J(post, task), post)[0]
        rtg = _traj_rewards(task).flip(-1).cumsum(-1).flip(-1)  # G_t [N, H]
        sv = (scores * v).sum((-2, -1))  # s_t . v  [N, H]
        total = scores.sum(1)  # sum_t s_t [N, 2, 2]
        # D^T v = E[ sum_t' s_t' * sum_t (s_t . v) G_t ]  (outer product s_t' (s_t G_t)^T applied to v)
        if surrogate == "vpg":
            term = total * (sv * rtg).sum(1)[:, None, None]
        else:
            term = total * (sv * rtg).sum(1)[:, None, None] - (
                scores * (sv * rtg)[..., None, None]
            ).sum(1)
        expected_diff += ALPHA * (probs[:, None, None] * term).sum(0) / H
    expected_diff /= REWARDS.shape[0]
    torch.testing.assert_close(exact - est, expected_diff, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- (c), (d) on an MLP


class TinyGaussianMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)  # test-local module init; the data below uses explicit generators
        self.distribution = DiagGaussian(2)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(DT)
        self.log_std = nn.Parameter(torch.full((2,), -0.3, dtype=DT))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.net(obs)
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


def _random_episodes(
    policy: nn.Module, params: dict, num_tasks: int, seed: int, per_task: bool
) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_tasks, 4, 5, 3, generator=g, dtype=DT)
    with torch.no_grad():
        if per_task:
            dp = torch.func.vmap(lambda p, o: torch.func.functional_call(policy, p, (o,)))(
                params, obs
            )
        else:
            dp = torch.func.functional_call(policy, params, (obs,))
    actions = policy.distribution.sample(dp, generator=g)
    rewards = torch.randn(num_tasks, 4, 5, generator=g, dtype=DT)
    return _episodes(
        obs=obs,
        actions=actions,
        rewards=rewards,
        log_probs=policy.distribution.log_prob(dp, actions),
        dist_params=dp,
        weights=None,
        advantages=torch.randn(num_tasks, 4, 5, generator=g, dtype=DT),
        values=torch.randn(num_tasks, 4, 5, generator=g, dtype=DT),
    )


@pytest.mark.parametrize("surrogate", ["vpg", "dice", "lvc"])
def test_second_minus_first_order_is_alpha_times_hvp(surrogate: str) -> None:
    policy = TinyGaussianMLP()
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    alpha, num_tasks = 0.3, 3
    pre = _random_episodes(policy, {k: v.detach() for k, v in params.items()}, num_tasks, 1, False)
    grads = {}
    for first_order in (False, True):
        adapted = adapt_on(
            policy, params, pre, lr=alpha, surrogate=surrogate, second_order=not first_order
        )
        post = _random_episodes(
            policy, {k: v.detach() for k, v in adapted.items()}, num_tasks, 2, True
        )
        loss = outer_loss(policy, adapted, post)
        names = list(params)
        grads[first_order] = dict(
            zip(names, torch.autograd.grad(loss, [params[k] for k in names]), strict=True)
        )
        if not first_order:
            # outer gradient wrt each task's adapted params (same for both: theta' is identical)
            adapted_d = {k: v.detach().requires_grad_() for k, v in adapted.items()}
            loss_d = outer_loss(policy, adapted_d, post)
            v_outer = dict(
                zip(names, torch.autograd.grad(loss_d, [adapted_d[k] for k in names]), strict=True)
            )

    inner = get_surrogate(surrogate, gamma=0.99)
    theta = {k: v.detach() for k, v in params.items()}
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(num_tasks):
        ep_i = Episodes.from_tensors({k: v[i] for k, v in pre.tensors().items()})
        tangent = {k: v[i] for k, v in v_outer.items()}
        _, hvp = jvp(grad(lambda p, ep=ep_i: inner(policy, p, ep)), (theta,), (tangent,))
        for k in expected:
            expected[k] -= alpha * hvp[k]
    for k in expected:
        torch.testing.assert_close(
            grads[False][k] - grads[True][k], expected[k], rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("surrogate", ["vpg", "dice", "lvc"])
def test_adapt_leaves_meta_params_unchanged_and_all_get_finite_gradients(surrogate: str) -> None:
    policy = TinyGaussianMLP()
    params = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}
    before = {k: v.detach().clone() for k, v in params.items()}
    inner_lrs = {k: torch.full_like(v, 0.1).requires_grad_() for k, v in params.items()}
    pre = _random_episodes(policy, before, 3, 3, False)
    adapted = adapt_on(policy, params, pre, num_steps=2, surrogate=surrogate, inner_lrs=inner_lrs)
    for k in params:
        assert torch.equal(params[k].detach(), before[k])  # bitwise
        assert adapted[k].shape == (3, *params[k].shape)
    post = _random_episodes(policy, {k: v.detach() for k, v in adapted.items()}, 3, 4, True)
    loss = outer_loss(policy, adapted, post)
    leaves = list(params.values()) + list(inner_lrs.values())
    for g in torch.autograd.grad(loss, leaves):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    for k in params:
        assert torch.equal(params[k].detach(), before[k])


def test_adapt_equals_a_per_task_loop_and_leaves_the_callers_tensors_alone() -> None:
    """One autograd.grad over the summed task losses gives each task its own gradient (no
    task sees another's loss), and neither params nor their requires_grad flags change."""
    policy = TinyGaussianMLP()
    theta = {k: v.detach().clone() for k, v in policy.named_parameters()}
    pre = _random_episodes(policy, theta, 3, 5, False)
    alpha = 0.2
    inner = get_surrogate("vpg")
    adapted = adapt_on(policy, theta, pre, lr=alpha)
    for i in range(3):
        ep_i = Episodes.from_tensors({k: v[i] for k, v in pre.tensors().items()})
        g_i = grad(lambda p, ep=ep_i: inner(policy, p, ep))(theta)
        for k in theta:
            torch.testing.assert_close(adapted[k][i], theta[k] - alpha * g_i[k], rtol=1e-12, atol=0)
    assert not any(v.requires_grad for v in theta.values())
    assert not any(v.requires_grad for v in adapted.values())  # no graph without an outer one

    # per-task params that do not require grad stay that way, even with grad-requiring peers
    per_task = {k: v.unsqueeze(0).repeat(3, *([1] * v.dim())) for k, v in theta.items()}
    first = next(iter(per_task))
    per_task[first].requires_grad_()
    config = AdaptationConfig(inner_lr=alpha)
    steps = adapt(policy, per_task, StoredBatches([pre]), config=config, second_order=True)
    assert [v.requires_grad for v in per_task.values()] == [k == first for k in per_task]
    assert steps[1][first].requires_grad  # differentiable in the tensor that asked for it
    first_order = adapt(policy, per_task, StoredBatches([pre]), config=config, second_order=False)
    for k in theta:  # the same values; only the graph differs
        torch.testing.assert_close(first_order[1][k], steps[1][k], rtol=0, atol=0)
    # first order: d theta'/d theta = I (the inner gradient is a constant)
    (identity,) = torch.autograd.grad(first_order[1][first].sum(), per_task[first])
    torch.testing.assert_close(identity, torch.ones_like(identity))
