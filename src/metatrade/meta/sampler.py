"""Batched rollouts: every task x episode of a meta-batch stepped together.

One policy forward per time step for all T x E environments: with shared (pre-update)
parameters a plain ``functional_call`` on [T, E, D]; with per-task (post-update)
parameters, shaped [T, ...], the same call under ``vmap`` over the task axis. Sampling
runs without autograd; the losses recompute log-probabilities from the stored
(obs, actions), so the rollout never holds a graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metatrade.meta.episodes import Episodes
from metatrade.meta.protocols import BatchEnv

Params = dict[str, Tensor]


def policy_forward(policy: nn.Module, params: Params, obs: Tensor, per_task: bool) -> Tensor:
    """Distribution parameters for obs [T, ...]; ``per_task`` maps params' leading [T] axis."""
    if per_task:
        return vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    return functional_call(policy, params, (obs,))


def _param_dtype(params: Params) -> torch.dtype:
    return next(iter(params.values())).dtype


def sample_episodes(
    policy: nn.Module,
    params: Params,
    batch_env: BatchEnv,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    per_task: bool = False,
    seed: int | None = None,
) -> Episodes:
    """Roll out one episode in each of the T x E slots of ``batch_env``.

    Args:
        policy: module following the policy contract (``.distribution``, ``forward(obs)``).
        params: its parameters; with ``per_task`` every tensor has a leading [T] axis.
        batch_env: the environments (same-step autoreset; see ``meta.protocols``).
        num_steps: rollout length H (default ``batch_env.max_episode_steps``); an episode
            still running at H is marked truncated at its last step (bootstrapped later).
        generator: torch generator for the action noise (reproducible runs).
        per_task: params carry a leading task axis (post-update policies).
        seed: env reset seed (default: drawn from ``generator``).

    Returns:
        Episodes with H' <= H steps (the loop stops once every slot has ended); steps after
        a slot's first end are masked out (mask 0, reward 0).
    """
    dist = policy.distribution
    horizon = int(num_steps or batch_env.max_episode_steps)
    dtype = _param_dtype(params)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
    obs_np = batch_env.reset(seed=seed)
    num_tasks, num_eps = obs_np.shape[:2]
    if per_task:
        lead = {k: v.shape[0] for k, v in params.items()}
        if any(n != num_tasks for n in lead.values()):
            raise ValueError(
                f"sample_episodes(per_task=True): params' leading axes {lead} must equal the "
                f"env's num_tasks={num_tasks}; pass adapted params shaped [T, ...]."
            )

    obs_l, act_l, rew_l, term_l, trunc_l, alive_l, logp_l, dp_l, pnl_l = ([] for _ in range(9))
    ended = np.zeros((num_tasks, num_eps), dtype=bool)
    last_obs = np.zeros_like(obs_np)
    lengths = np.zeros((num_tasks, num_eps), dtype=np.int64)
    with torch.no_grad():
        for _ in range(horizon):
            obs_t = torch.as_tensor(obs_np, dtype=dtype)
            dparams = policy_forward(policy, params, obs_t, per_task)
            actions = dist.sample(dparams, generator=generator)
            logp = dist.log_prob(dparams, actions)
            next_obs, reward, terminated, truncated, info = batch_env.step(actions.numpy())
            alive = ~ended
            done = (terminated | truncated) & alive
            final = info.get("final_obs", next_obs)
            last_obs[done] = final[done]
            lengths += alive
            obs_l.append(obs_t)
            act_l.append(actions)
            rew_l.append(np.where(alive, reward, 0.0))
            term_l.append(terminated & alive)
            trunc_l.append(truncated & alive)
            alive_l.append(alive)
            logp_l.append(logp)
            dp_l.append(dparams)
            if "pnl_reward" in info:
                pnl_l.append(np.where(alive, info["pnl_reward"], 0.0))
            ended |= done
            obs_np = next_obs
            if ended.all():
                break
    # Slots still running when the sampler stopped: cut by the sampler -> truncated (bootstrap).
    still = ~ended
    if still.any():
        last_obs[still] = obs_np[still]
        trunc_l[-1] = trunc_l[-1] | still

    stack = lambda xs, dt=None: torch.as_tensor(np.stack(xs, axis=2), dtype=dt)  # noqa: E731
    return Episodes(
        obs=torch.stack(obs_l, dim=2),
        actions=torch.stack(act_l, dim=2),
        rewards=stack(rew_l, dtype),
        mask=stack(alive_l, dtype),
        terminated=stack(term_l, torch.bool),
        truncated=stack(trunc_l, torch.bool),
        log_probs=torch.stack(logp_l, dim=2),
        dist_params=torch.stack(dp_l, dim=2),
        last_obs=torch.as_tensor(last_obs, dtype=dtype),
        lengths=torch.as_tensor(lengths),
        pnl_rewards=stack(pnl_l, dtype) if pnl_l else None,
    )
