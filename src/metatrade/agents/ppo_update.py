"""PPO's clipped-surrogate update over minibatches (Schulman et al., 2017, eq. 7 and 9;
CleanRL's ``ppo.py``), as functions of the networks, optimizer and one flattened batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from metatrade.agents.networks.base import Policy
from metatrade.agents.ppo_config import PPOConfig
from metatrade.meta.advantages import normalize


@dataclass(frozen=True)
class UpdateBatch:
    """One rollout flattened to [n_steps * N, ...]: what the update reads."""

    obs: Tensor
    actions: Tensor
    logprobs: Tensor
    advantages: Tensor
    returns: Tensor
    values: Tensor


def policy_loss(cfg: PPOConfig, advantages: Tensor, ratio: Tensor) -> Tensor:
    """Clipped surrogate (eq. 7), negated to be minimised."""
    mb_adv = advantages
    if cfg.norm_adv:
        mb_adv = normalize(mb_adv)  # safe for a minibatch of one (no NaN)
    pg_loss1 = -mb_adv * ratio
    pg_loss2 = -mb_adv * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
    return torch.max(pg_loss1, pg_loss2).mean()


def value_loss(cfg: PPOConfig, newvalue: Tensor, returns: Tensor, old_values: Tensor) -> Tensor:
    """Squared error to the lambda-returns, clipped around the old values as in PPO2."""
    if cfg.clip_vloss:
        v_unclipped = (newvalue - returns).pow(2)
        v_clipped = old_values + torch.clamp(newvalue - old_values, -cfg.clip_coef, cfg.clip_coef)
        return 0.5 * torch.max(v_unclipped, (v_clipped - returns).pow(2)).mean()
    return 0.5 * (newvalue - returns).pow(2).mean()


def ppo_update(
    *,
    policy: Policy,
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    cfg: PPOConfig,
    batch: UpdateBatch,
) -> dict[str, float]:
    """``update_epochs`` passes of ``num_minibatches`` Adam steps on the loss of eq. 9
    (policy loss - ent_coef * entropy + vf_coef * value loss); returns the ``train/`` logs."""
    dist = policy.distribution
    batch_size = batch.obs.shape[0]
    minibatch_size = max(1, batch_size // cfg.num_minibatches)
    params = [*policy.parameters(), *value.parameters()]
    clipfracs: list[float] = []
    approx_kl = old_approx_kl = pg_loss = v_loss = entropy_loss = torch.zeros(())
    for _epoch in range(cfg.update_epochs):
        perm = torch.randperm(batch_size, generator=generator)
        for start in range(0, batch_size, minibatch_size):
            mb = perm[start : start + minibatch_size]
            dist_params = policy(batch.obs[mb])
            newlogprob = dist.log_prob(dist_params, batch.actions[mb])
            entropy = dist.entropy(dist_params)
            newvalue = value(batch.obs[mb])
            logratio = newlogprob - batch.logprobs[mb]
            ratio = logratio.exp()
            with torch.no_grad():
                # http://joschu.net/blog/kl-approx.html
                old_approx_kl = (-logratio).mean()
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfracs.append(float(((ratio - 1.0).abs() > cfg.clip_coef).float().mean()))
            pg_loss = policy_loss(cfg, batch.advantages[mb], ratio)
            v_loss = value_loss(cfg, newvalue, batch.returns[mb], batch.values[mb])
            entropy_loss = entropy.mean()
            loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
        if cfg.target_kl is not None and approx_kl > cfg.target_kl:
            break

    var_y = batch.returns.var()
    explained_var = (
        float("nan") if var_y == 0 else float(1 - (batch.returns - batch.values).var() / var_y)
    )
    return {
        "train/policy_loss": float(pg_loss.detach()),
        "train/value_loss": float(v_loss.detach()),
        "train/entropy": float(entropy_loss.detach()),
        "train/approx_kl": float(approx_kl.detach()),
        "train/old_approx_kl": float(old_approx_kl.detach()),
        "train/clipfrac": float(np.mean(clipfracs)),
        "train/explained_variance": explained_var,
        "train/learning_rate": float(optimizer.param_groups[0]["lr"]),
    }
