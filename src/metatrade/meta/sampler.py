"""Batched rollouts: every task x episode of a meta-batch stepped together.

One policy forward per time step for all T x E environments. Parameters are always
[T, ...]: per-task (post-update) parameters run under ``vmap`` over the task axis; the
meta-parameters broadcast to [T, ...] (``meta.inner.expand_to_tasks``, a stride-0 view) run
as one shared call on [T, E, D]. Sampling runs without autograd; the
losses recompute log-probabilities from the stored (obs, actions), so the rollout never
holds a graph.

The time loop is the only Python loop and it does the minimum per step (forward, sample,
env step); masks, log-probabilities, the last observations and the padding are computed
once, vectorised, after it. For the plain MLP policy the per-step forward is a chain of
``addmm`` / ``baddbmm`` on the stacked (per-task) weights, which skips the per-call cost of
``functional_call`` and ``vmap`` (the numbers are the same function; see
``_mlp_forward``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metatrade.meta.episodes import Episodes, concat_episodes, keep_episodes
from metatrade.meta.mlp_linear import fast_tanh
from metatrade.meta.protocols import BatchEnv

Params = dict[str, Tensor]


def is_shared(params: Params) -> bool:
    """True when every task row of ``params`` [T, ...] is the same tensor: a broadcast view
    of theta (stride 0 on the task axis) or a single task."""
    return all(v.shape[0] == 1 or v.stride(0) == 0 for v in params.values())


def policy_forward(policy: nn.Module, params: Params, obs: Tensor) -> Tensor:
    """Distribution parameters for obs [T, ...] with params [T, ...] (one row per task)."""
    if is_shared(params):
        return functional_call(policy, {k: v[0] for k, v in params.items()}, (obs,))
    return vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)


_FAST_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": fast_tanh,  # numpy's (no autograd while sampling): 5-7x torch's here
    "relu": torch.relu,
    "elu": nn.functional.elu,
}


def _mlp_forward(policy: nn.Module, params: Params) -> Callable[[Tensor], Tensor] | None:
    """A fast forward for ``agents.policies.MLPPolicy`` (None for any other policy).

    The class opts in by defining ``fused_layers()`` in its own body (subclasses, which may
    override ``forward``, do not inherit the opt-in); meta does not import agents.

    Same maths as ``MLPPolicy.forward``: hidden layers ``act(x W^T + b)``, a linear head,
    and for Gaussian policies the state-independent log-std appended. With per-task params
    the layers are ``baddbmm`` over the task axis (obs [T, E, D]); shared params (a
    broadcast view) one ``addmm`` on all rows.
    """
    plan = vars(type(policy)).get("fused_layers")
    if plan is None:
        return None
    layer_names, activation, log_std_name = plan(policy)
    act = _FAST_ACTIVATIONS.get(activation)
    expected = {f"{n}.{w}" for n in layer_names for w in ("weight", "bias")}
    gaussian = log_std_name is not None
    if gaussian:
        expected.add(log_std_name)
    if act is None or set(params) != expected:
        return None
    if not is_shared(params):
        layers = [
            (params[f"{n}.bias"].unsqueeze(1), params[f"{n}.weight"].transpose(1, 2))
            for n in layer_names
        ]
        log_std = params[log_std_name].unsqueeze(1) if gaussian else None

        def linear(x: Tensor, b: Tensor, wt: Tensor) -> Tensor:
            return torch.baddbmm(b, x, wt)
    else:
        layers = [(params[f"{n}.bias"][0], params[f"{n}.weight"][0].t()) for n in layer_names]
        log_std = params[log_std_name][0] if gaussian else None

        def linear(x: Tensor, b: Tensor, wt: Tensor) -> Tensor:
            return torch.addmm(b, x.reshape(-1, x.shape[-1]), wt).reshape(*x.shape[:-1], -1)

    def forward(obs: Tensor) -> Tensor:
        x = obs
        for b, wt in layers[:-1]:
            x = act(linear(x, b, wt))
        out = linear(x, *layers[-1])
        if log_std is None:
            return out
        return torch.cat([out, log_std.expand_as(out)], dim=-1)

    return forward


def make_forward(policy: nn.Module, params: Params) -> Callable[[Tensor], Tensor]:
    """``obs [T, E, ...] -> dist params`` for fixed params [T, ...]: the MLP fast path when
    it applies (3-D obs), ``policy_forward`` otherwise."""
    fast = _mlp_forward(policy, params)

    def forward(obs: Tensor) -> Tensor:
        if fast is not None and obs.dim() == 3:
            return fast(obs)
        return policy_forward(policy, params, obs)

    return forward


def _param_dtype(params: Params) -> torch.dtype:
    return next(iter(params.values())).dtype


def sample_episodes(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    horizon: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Episodes:
    """Roll out one episode in each of the T x E slots of ``batch_env``.

    Args:
        policy: module following the policy contract (``.distribution``, ``forward(obs)``).
        params: its parameters, every tensor [T, ...] (``expand_to_tasks`` for theta).
        batch_env: the environments (same-step autoreset; see ``meta.protocols``).
        horizon: rollout length H (default ``batch_env.max_episode_steps``); an episode
            still running at H is marked truncated at its last step (bootstrapped later).
        generator: torch generator for the action noise (reproducible runs).
        seed: env reset seed (default: drawn from ``generator``).

    Returns:
        Episodes with H' <= H steps (the loop stops once every slot has ended); steps after
        a slot's first end are masked out (mask 0, reward 0).
    """
    horizon = int(horizon or batch_env.max_episode_steps)
    dtype = _param_dtype(params)
    device = next(iter(params.values())).device  # envs stay numpy on the CPU
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    obs_np = batch_env.reset(seed=seed)
    num_tasks = obs_np.shape[0]
    lead = {k: v.shape[0] for k, v in params.items()}
    if any(n != num_tasks for n in lead.values()):
        raise ValueError(
            f"sample_episodes: params' leading axes {lead} must equal the env's "
            f"num_tasks={num_tasks}; pass params shaped [T, ...] (expand_to_tasks for theta)."
        )
    with torch.no_grad():
        forward = make_forward(policy, {k: v.detach() for k, v in params.items()})
        trace = _roll(
            forward, policy.distribution, batch_env, obs_np, horizon, generator, dtype, device
        )
        return _episodes(trace, policy.distribution, dtype, device)


@dataclass
class _Trace:
    """What ``sample_episodes``' time loop recorded: one entry per step (H' steps), and the
    env's observation when the loop stopped."""

    obs: list[Tensor]
    actions: list[Tensor]
    dist_params: list[Tensor]
    rewards: list[np.ndarray]
    terminated: list[np.ndarray]
    truncated: list[np.ndarray]
    final_obs: list[np.ndarray]
    pnl_rewards: list[np.ndarray]
    last_obs: np.ndarray


def _roll(
    forward: Callable[[Tensor], Tensor],
    dist: Any,
    batch_env: BatchEnv,
    obs_np: np.ndarray,
    horizon: int,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> _Trace:
    """The time loop: forward, sample, env step, until ``horizon`` or every slot has ended.
    It does the minimum per step (all bookkeeping is vectorised afterwards, in
    ``_episodes``); local lists, not the trace's attributes, keep the appends cheap."""
    obs_l, act_l, dp_l, rew_l, term_l, trunc_l, final_l, pnl_l = ([] for _ in range(8))
    ended = np.zeros(obs_np.shape[:2], dtype=bool)
    for _ in range(horizon):
        obs_t = torch.as_tensor(obs_np, dtype=dtype, device=device)
        dparams = forward(obs_t)
        actions = dist.sample(dparams, generator=generator)
        next_obs, reward, terminated, truncated, info = batch_env.step(actions.cpu().numpy())
        obs_l.append(obs_t)
        act_l.append(actions)
        dp_l.append(dparams)
        rew_l.append(reward)
        term_l.append(terminated)
        trunc_l.append(truncated)
        final_l.append(info.get("final_obs", next_obs))
        if "pnl_reward" in info:
            pnl_l.append(info["pnl_reward"])
        ended |= terminated | truncated
        obs_np = next_obs
        if ended.all():
            break
    return _Trace(obs_l, act_l, dp_l, rew_l, term_l, trunc_l, final_l, pnl_l, obs_np)


def _episodes(trace: _Trace, dist: Any, dtype: torch.dtype, device: torch.device) -> Episodes:
    """Vectorised bookkeeping over [T, E, H']: a slot is alive up to and including its
    first end; everything after it is padding. A slot still running when the sampler
    stopped is truncated at its last step."""
    terminated = np.stack(trace.terminated, axis=2)
    truncated = np.stack(trace.truncated, axis=2)
    num_tasks, num_eps = terminated.shape[:2]
    done = terminated | truncated
    alive = np.cumsum(done, axis=2) - done == 0
    done &= alive
    steps = done.shape[2]
    # Slots still running when the sampler stopped: cut by the sampler -> truncated.
    still = ~done.any(axis=2)
    truncated = truncated & alive
    truncated[:, :, -1] |= still
    last_step = np.where(still, steps - 1, done.argmax(axis=2))  # [T, E]
    finals = np.stack(trace.final_obs, axis=2)  # [T, E, H', *obs_shape]
    last_obs = np.take_along_axis(
        finals, last_step.reshape(num_tasks, num_eps, 1, *([1] * (finals.ndim - 3))), axis=2
    ).squeeze(2)
    last_obs[still] = trace.last_obs[still]
    lengths = alive.sum(axis=2)

    def padded(xs: list[np.ndarray]) -> Tensor:
        stacked = np.where(alive, np.stack(xs, axis=2), 0.0)
        return torch.as_tensor(stacked, dtype=dtype, device=device)

    actions_all = torch.stack(trace.actions, dim=2)
    dist_params = torch.stack(trace.dist_params, dim=2)
    return Episodes(
        obs=torch.stack(trace.obs, dim=2),
        actions=actions_all,
        rewards=padded(trace.rewards),
        mask=torch.as_tensor(alive, dtype=dtype, device=device),
        terminated=torch.as_tensor(terminated & alive, device=device),
        truncated=torch.as_tensor(truncated, device=device),
        log_probs=dist.log_prob(dist_params, actions_all),
        dist_params=dist_params,
        last_obs=torch.as_tensor(last_obs, dtype=dtype, device=device),
        lengths=torch.as_tensor(lengths, dtype=torch.int64, device=device),
        pnl_rewards=padded(trace.pnl_rewards) if trace.pnl_rewards else None,
    )


def sample_episodes_for_steps(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    steps_per_task: int,
    horizon: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    max_rounds: int = 1000,
) -> Episodes:
    """Whole episodes, drawn in order, until each task's step count reaches ``steps_per_task``.

    This is rllab's batch sampler (the MAML paper's code, ``batch_size`` in steps and
    ``whole_paths=True``), which the paper's 2D-navigation table was measured with. It is
    not the same as a fixed episode count: episodes that end early (the goal reached) take
    fewer steps, so a step budget holds more of them, and the average return over the batch
    weighs them more. Rounds of ``sample_episodes`` (E i.i.d. episodes per task each) are
    drawn until every task has enough; each task keeps the shortest prefix of its episodes
    whose lengths sum to at least the budget (the rest are emptied; see ``keep_episodes``).
    """
    if steps_per_task < 1:
        raise ValueError(
            f"sample_episodes_for_steps: steps_per_task={steps_per_task}; use a positive "
            "step budget per task."
        )
    rounds: list[Episodes] = []
    totals = None
    for r in range(max_rounds):
        round_seed = None if seed is None else seed + r
        batch = sample_episodes(
            policy, params, batch_env, horizon=horizon, generator=generator, seed=round_seed
        )
        rounds.append(batch)
        lengths = batch.lengths.sum(dim=1)
        totals = lengths if totals is None else totals + lengths
        if bool((totals >= steps_per_task).all()):
            break
    else:
        raise RuntimeError(
            f"sample_episodes_for_steps: {max_rounds} rounds gave fewer than "
            f"{steps_per_task} steps for some task; lower steps_per_task."
        )
    episodes = concat_episodes(rounds)
    before = torch.cumsum(episodes.lengths, dim=1) - episodes.lengths  # steps before each
    return keep_episodes(episodes, before < steps_per_task)


def sample_batch(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    *,
    steps_per_task: int | None = None,
    horizon: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> Episodes:
    """One batch: an episode per slot of ``batch_env`` (``steps_per_task`` None), or whole
    episodes until each task has ``steps_per_task`` steps (``sample_episodes_for_steps``)."""
    if steps_per_task is None:
        return sample_episodes(
            policy, params, batch_env, horizon=horizon, generator=generator, seed=seed
        )
    return sample_episodes_for_steps(
        policy,
        params,
        batch_env,
        steps_per_task=steps_per_task,
        horizon=horizon,
        generator=generator,
        seed=seed,
    )
