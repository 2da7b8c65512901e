"""metatrade.meta: the env-agnostic meta-RL core (sampler, advantages, surrogates, adapt,
meta-objective, meta-optimizers, MetaLearner). See docs/meta.md for the maths."""

from metatrade.meta.adapt import adapt, adapt_online
from metatrade.meta.advantages import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
    normalize,
)
from metatrade.meta.config import AdaptationConfig, MetaConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.inner import expand_to_tasks, inner_loop
from metatrade.meta.learner import MetaLearner
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import dice_loss, lvc_loss, vpg_loss

__all__ = [
    "AdaptationConfig",
    "Episodes",
    "LinearFeatureBaseline",
    "MetaConfig",
    "MetaLearner",
    "adapt",
    "adapt_online",
    "compute_advantages",
    "dice_loss",
    "expand_to_tasks",
    "inner_loop",
    "discounted_returns",
    "gae",
    "lvc_loss",
    "normalize",
    "sample_episodes",
    "vpg_loss",
]
