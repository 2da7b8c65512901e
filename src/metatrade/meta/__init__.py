"""metatrade.meta: the env-agnostic meta-RL core (sampler, advantages, surrogates, adapt,
meta-objective, meta-optimizers, MetaLearner). See docs/meta.md for the maths."""

from metatrade.meta.adapt import adapt
from metatrade.meta.advantages import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
    normalize,
)
from metatrade.meta.episodes import Episodes
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import dice_loss, lvc_loss, vpg_loss

__all__ = [
    "Episodes",
    "LinearFeatureBaseline",
    "MetaConfig",
    "MetaLearner",
    "adapt",
    "compute_advantages",
    "dice_loss",
    "discounted_returns",
    "gae",
    "lvc_loss",
    "normalize",
    "sample_episodes",
    "vpg_loss",
]
