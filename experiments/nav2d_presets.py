"""2D-navigation experiments beyond the benchmark's two presets (``experiments/README.md``).

Each preset is the benchmark's ``Preset`` with named fields changed, and runs through the
benchmark's own command line (same options, same JSON line)::

    python experiments/nav2d_presets.py --preset rllab-steps --iterations 100 --eval-every 25

Several are recorded negative results; ``docs/notes/nav2d-history.md`` has the figures.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from metatrade.agents.policies import NetworkConfig, Policy, make_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nav2d_maml as bench  # noqa: E402


@dataclass(frozen=True, kw_only=True)
class InitPreset(bench.Preset):
    """A preset whose policy starts elsewhere: another initial log-std, or Xavier weights."""

    init_log_std: float = 0.0
    xavier_init: bool = False  # Xavier-uniform weights instead of metatrade's (CleanRL's)

    def make_policy(self, observation_space: Any, action_space: Any, seed: int) -> Policy:
        policy = make_policy(
            NetworkConfig(
                kind="mlp",
                hidden_sizes=self.hidden_sizes,
                activation=self.activation,
                init_log_std=self.init_log_std,
            ),
            observation_space,
            action_space,
            seed=seed,
        )
        if self.xavier_init:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for name, param in policy.named_parameters():
                    if name.endswith("weight"):
                        bound = math.sqrt(6.0 / (param.shape[0] + param.shape[1]))
                        param.uniform_(-bound, bound, generator=gen)
        return policy


def with_init(preset: bench.Preset, **init: Any) -> InitPreset:
    """``preset`` with InitPreset's fields set."""
    return InitPreset(**{f.name: getattr(preset, f.name) for f in fields(preset)}, **init)


RLLAB_STEPS = replace(bench.RLLAB, train_steps_per_task=2000)
RLLAB_STEPS_2STEP = replace(RLLAB_STEPS, train_inner_steps=2, train_step_sizes=(0.5, 0.25))

EXPERIMENTS: dict[str, bench.Preset] = {
    # the paper's code's settings, trained on a fixed 20 episodes a task
    "rllab": bench.RLLAB,
    # ablation: the pinned config with rllab's normalised actions and nothing else changed
    "reference-normalized": replace(bench.REFERENCE, normalized_actions=True),
    # the pinned config with the Gaussian's initial std at the action bound (0.1) instead of
    # pytorch-maml-rl's 1.0, which the env clips to +-0.1 (negative: the policy drifts away)
    "reference-std0.1": with_init(bench.REFERENCE, init_log_std=math.log(0.1)),
    # rllab meta-trained for the return after two inner steps, tested at 0.5 every step
    # (negative: no better after two steps, worse after one)
    "rllab-2step": replace(bench.RLLAB, test_step_sizes=(0.5,), train_inner_steps=2),
    # rllab with rllab's training sampler too: batches of 2000 steps per task
    "rllab-steps": RLLAB_STEPS,
    # rllab-steps meta-trained for two inner steps with the test's schedule (0.5, 0.25);
    # matches the 2-step return but loses the 1-step one (the benchmark's preset keeps both)
    "rllab-steps-2step": RLLAB_STEPS_2STEP,
    # rllab-steps with Xavier-uniform weights (negative: the initial policy drives away
    # from the origin, 0-step return about -550)
    "rllab-full": with_init(RLLAB_STEPS, xavier_init=True),
}

if __name__ == "__main__":
    bench.main(presets={**bench.PRESETS, **EXPERIMENTS})
