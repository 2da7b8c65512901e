"""`Episodes`: a padded batch of trajectories for T tasks x E episodes x H steps.

One slot (t, e) holds exactly one episode: the sampler masks everything after its first end.
Everything the losses need is stored, so that log-probabilities can be recomputed
differentiably from (obs, actions) for any parameters, and likelihood ratios / KLs taken
against the behaviour policy that sampled them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Episodes:
    """Trajectories shaped [T, E, H, ...] (tasks, episodes, time).

    Attributes:
        obs: observations s_t [T, E, H, D].
        actions: a_t [T, E, H] (discrete, int64) or [T, E, H, d] (continuous).
        rewards: r_t [T, E, H] (0 at padding).
        mask: 1.0 for valid steps, up to and including the step at which the episode ends [T, E, H].
        terminated: the step reached a terminal state (no bootstrap) [T, E, H] bool.
        truncated: the step was cut by a time limit or by the sampler (bootstrap) [T, E, H] bool.
        log_probs: behaviour log pi(a_t|s_t), detached [T, E, H].
        dist_params: behaviour distribution parameters, detached [T, E, H, P].
        last_obs: the observation after each episode's last valid step [T, E, D] (V of it
            bootstraps a truncated episode).
        lengths: number of valid steps per episode [T, E] int64.
        pnl_rewards: optional pure-P&L rewards (trading) [T, E, H].
        weights: optional episode weights [T, E] (quadrature / exact enumeration; None = uniform).
        values: baseline V(s_t) [T, E, H], once advantages are computed.
        advantages: A_t [T, E, H], once computed (detached).
        returns: value targets [T, E, H], once computed.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    terminated: Tensor
    truncated: Tensor
    log_probs: Tensor
    dist_params: Tensor
    last_obs: Tensor
    lengths: Tensor
    pnl_rewards: Tensor | None = None
    weights: Tensor | None = None
    values: Tensor | None = None
    advantages: Tensor | None = None
    returns: Tensor | None = None

    @property
    def dones(self) -> Tensor:
        """terminated | truncated [T, E, H]."""
        return self.terminated | self.truncated

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def episodes_per_task(self) -> int:
        return self.obs.shape[1]

    @property
    def horizon(self) -> int:
        return self.obs.shape[2]

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode [T, E]."""
        return (self.rewards * self.mask).sum(-1)

    def task_mean_returns(self) -> Tensor:
        """Mean undiscounted return of each task's episodes [T]; empty slots (length 0,
        see ``keep_episodes``) are not episodes and do not count."""
        count = (self.lengths > 0).sum(dim=1).clamp_min(1).to(self.rewards.dtype)
        return self.episode_returns().sum(dim=1) / count

    def tensors(self) -> dict[str, Tensor]:
        """The non-None fields as a dict: a pytree that ``torch.func.vmap`` can map over."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> Episodes:
        return cls(**tensors)

    def replace(self, **changes: Any) -> Episodes:  # dataclasses.replace checks the names
        return replace(self, **changes)

    def to(self, dtype: torch.dtype) -> Episodes:
        """Floating-point fields cast to ``dtype`` (actions only if continuous)."""
        out = {}
        for name, value in self.tensors().items():
            out[name] = value.to(dtype) if value.is_floating_point() else value
        return Episodes(**out)


# fields with a time axis (padded by concat_episodes)
_TIME_FIELDS = frozenset(
    {
        "obs",
        "actions",
        "rewards",
        "mask",
        "terminated",
        "truncated",
        "log_probs",
        "dist_params",
        "pnl_rewards",
        "values",
        "advantages",
        "returns",
    }
)


def concat_episodes(batches: list[Episodes]) -> Episodes:
    """Batches of the same T tasks joined along the episode axis, the time axis padded (with
    zeros, mask 0) to the longest batch's H. Optional fields must be set in all or none."""
    if not batches:
        raise ValueError("concat_episodes: need at least one batch.")
    horizon = max(b.horizon for b in batches)
    names = batches[0].tensors().keys()
    out: dict[str, Tensor] = {}
    for name in names:
        parts = []
        for b in batches:
            x = getattr(b, name)
            if x is None:
                raise ValueError(f"concat_episodes: field {name!r} is set in some batches only.")
            if name in _TIME_FIELDS and x.shape[2] < horizon:
                pad = x.new_zeros(*x.shape[:2], horizon - x.shape[2], *x.shape[3:])
                x = torch.cat([x, pad], dim=2)
            parts.append(x)
        out[name] = torch.cat(parts, dim=1)
    return Episodes(**out)


def keep_episodes(episodes: Episodes, keep: Tensor) -> Episodes:
    """Episodes with every slot where ``keep`` [T, E] is False emptied (mask 0, length 0,
    no reward, no end flag), then the episode columns that no task keeps dropped. Losses,
    baselines and returns all weigh by the mask, so an emptied slot counts for nothing."""
    keep = keep.to(torch.bool)
    used = keep.any(dim=0)
    step_keep = keep.unsqueeze(-1)
    changes: dict[str, Tensor | None] = {
        "mask": episodes.mask * step_keep,
        "rewards": episodes.rewards * step_keep,
        "terminated": episodes.terminated & step_keep,
        "truncated": episodes.truncated & step_keep,
        "lengths": episodes.lengths * keep,
    }
    if episodes.pnl_rewards is not None:
        changes["pnl_rewards"] = episodes.pnl_rewards * step_keep
    kept = episodes.replace(**changes)
    return Episodes(**{k: v[:, used] for k, v in kept.tensors().items()})


def select_episodes(episodes: Episodes, index: Tensor) -> Episodes:
    """Each task's episode slots ``index`` [T, k]: task t keeps slots ``index[t]``."""
    out = {}
    for name, x in episodes.tensors().items():
        idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
        out[name] = torch.gather(x, 1, idx)
    return Episodes(**out)


def random_episode_subset(
    episodes: Episodes, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """Slot indices [T, k] of a random ``fraction`` of every task's episodes, drawn without
    replacement, k = ceil(fraction * the largest count of non-empty slots of a task).
    Non-empty slots come first, so a task with fewer episodes than k keeps all of them
    (plus empty slots, which weigh nothing)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"random_episode_subset: fraction={fraction} must be in (0, 1].")
    nonempty = episodes.lengths > 0
    k = max(1, math.ceil(fraction * int(nonempty.sum(dim=1).max())))
    keys = torch.rand(nonempty.shape, generator=generator).to(nonempty.device)
    keys = keys + (~nonempty).float()
    return keys.argsort(dim=1)[:, :k]
