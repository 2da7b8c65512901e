"""The MAML meta-objective: adapted policies' loss on fresh post-adaptation episodes.

L_meta(theta) = (1/T) sum_i L_outer(theta'_i(theta); D'_i), with theta'_i = adapt(theta; D_i)
(Finn et al., 2017, eq. 1-2). D'_i was sampled with theta'_i; its dependence on theta is
carried by the likelihood ratio pi_theta'/pi_behaviour, whose gradient at theta' is the
policy gradient (the "post-update sampling" term). The gradient wrt theta flows through
the inner loop (``adapt``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metatrade.meta.distributions import distribution_of
from metatrade.meta.episodes import Episodes
from metatrade.meta.surrogates import (
    ratio_loss,
    ratio_loss_from_dist,
    step_weights,
    weighted_mean,
)

Params = dict[str, Tensor]
OuterLoss = Callable[[nn.Module, Params, Episodes], Tensor]


def per_task_losses(
    policy: nn.Module, params: Params, episodes: Episodes, loss_fn: OuterLoss = ratio_loss
) -> Tensor:
    """loss_fn for every task: params [T, ...], episodes [T, E, H, ...] (or any batch with
    a leading task axis, e.g. the exact objective's windows) -> [T]."""
    batch_type = type(episodes)

    def one(p: Params, batch: dict[str, Tensor]) -> Tensor:
        return loss_fn(policy, p, batch_type.from_tensors(batch))

    return vmap(one)(params, episodes.tensors())


def outer_loss(
    policy: nn.Module, adapted: Params, post: Episodes, loss_fn: OuterLoss = ratio_loss
) -> Tensor:
    """The meta-loss (Finn et al., 2017, eq. 2 / Algorithm 3, line 10): the mean over tasks
    of the adapted policies' surrogate loss on the post-update episodes."""
    return per_task_losses(policy, adapted, post, loss_fn).mean()


def post_update_dist_params(policy: nn.Module, adapted: Params, post: Episodes) -> Tensor:
    """Distribution parameters of every task's adapted policy on its post-update obs."""
    return vmap(lambda p, o: functional_call(policy, p, (o,)))(adapted, post.obs)


def outer_loss_from_dist(policy: nn.Module, dist_params: Tensor, post: Episodes) -> Tensor:
    """``outer_loss`` given the adapted policies' distribution parameters [T, E, H, P]."""

    def one(d: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return ratio_loss_from_dist(policy.distribution, d, Episodes.from_tensors(batch))

    return vmap(one)(dist_params, post.tensors()).mean()


def kl_weights(episodes: Episodes) -> Tensor:
    """Per-step weights [T, E, H] whose sum-product with a per-step KL is the mean over tasks
    of each task's weighted mean KL (the KL of ``mean_kl``, for TRPO's Fisher)."""
    w = step_weights(episodes)
    return w / w.sum(dim=(-2, -1), keepdim=True) / episodes.num_tasks


def mean_kl(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
    """Mean over tasks and valid steps of KL(behaviour || pi_params) on ``episodes``;
    params [T, ...]."""

    def one(p: Params, batch: dict[str, Tensor]) -> Tensor:
        ep = Episodes.from_tensors(batch)
        new = functional_call(policy, p, (ep.obs,))
        kl = distribution_of(policy).kl(ep.dist_params.detach(), new)
        return weighted_mean(kl, ep)

    return vmap(one)(params, episodes.tensors()).mean()


def clipped_loss(clip_eps: float) -> OuterLoss:
    """PPO's clipped surrogate (ProMP's J^CLIP, Rothfuss et al., 2019, eq. 11)."""

    def loss(policy: nn.Module, params: Params, episodes: Episodes) -> Tensor:
        dist_params = functional_call(policy, params, (episodes.obs,))
        logp = distribution_of(policy).log_prob(dist_params, episodes.actions)
        ratio = torch.exp(logp - episodes.log_probs.detach())
        adv = episodes.advantages
        if adv is None:
            raise ValueError(
                "clipped_loss needs episodes.advantages; run compute_advantages first."
            )
        obj = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv)
        return -weighted_mean(obj, episodes)

    return loss
