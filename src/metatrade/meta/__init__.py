"""metatrade.meta: the env-agnostic meta-RL core (sampler, advantages, surrogates, the one
inner loop ``adapt`` and its batch sources, meta-objective, the meta-updates, MetaLearner).
See docs/meta.md for the maths."""

from metatrade.meta.adapt import StoredBatches, adapt, adapt_at_test_time
from metatrade.meta.advantages import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
    normalize,
)
from metatrade.meta.config import AdaptationConfig, MetaConfig
from metatrade.meta.episodes import Episodes
from metatrade.meta.estimators import make_source, measured_returns
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.learner import MetaLearner
from metatrade.meta.sampler import sample_episodes
from metatrade.meta.surrogates import dice_loss, lvc_loss, vpg_loss

__all__ = [
    "AdaptationConfig",
    "Episodes",
    "LinearFeatureBaseline",
    "MetaConfig",
    "MetaLearner",
    "StoredBatches",
    "adapt",
    "adapt_at_test_time",
    "compute_advantages",
    "dice_loss",
    "discounted_returns",
    "expand_to_tasks",
    "gae",
    "lvc_loss",
    "make_source",
    "measured_returns",
    "normalize",
    "sample_episodes",
    "vpg_loss",
]
