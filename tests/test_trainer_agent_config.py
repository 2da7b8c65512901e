"""``Trainer.meta_train`` applying a run config to a ``MAMLAgent`` (issue #11, item 8).

Reproduction: the trainer copied the config's meta values onto the agent's MetaConfig
with ``setattr``, so what was built from the old values stayed: Adam kept the agent's
learning rate and the Meta-SGD rates their old initial value. Now the learner is rebuilt
from the validated config, keeping theta, the iteration and the optimizer moments.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from metatrade.agents.maml_agent import MAMLAgent
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.learner import MetaConfig
from metatrade.training.config import load_config
from metatrade.training.sections import meta_section_from
from metatrade.training.trainer import Trainer


def small_agent(family: Navigation2DFamily, **meta) -> MAMLAgent:
    env = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    config = MetaConfig(meta_batch_size=2, episodes_per_task=2, num_evaluation_episodes=2, **meta)
    return MAMLAgent(env.observation_space, env.action_space, meta_config=config, hidden_sizes=(8,))


def run_config(agent: MAMLAgent, **changes):
    meta = dataclasses.replace(meta_section_from(agent.learner.config), **changes)
    base = load_config(overrides={"data.family": "nav2d", "env.episode_length": 5})
    return base.model_copy(update={"meta": meta})


def test_run_config_rebuilds_adam_lr_and_meta_sgd_rates_of_a_maml_agent() -> None:
    """A run config with meta.lr 0.5 and inner_lr 0.3 on an agent built with 1e-3 / 0.1:
    Adam steps at 0.5 and the learned inner rates start at 0.3 (before: 1e-3 and 0.1)."""
    torch.set_num_threads(1)
    family = Navigation2DFamily(max_episode_steps=5)
    agent = small_agent(family, optimizer="adam", lr=1e-3, inner_lr=0.1, learn_inner_lr=True)
    cfg = run_config(agent, lr=0.5, inner_lr=0.3)
    before = {k: v.detach().clone() for k, v in agent.params.items()}
    trainer = Trainer(family, agent, config=cfg, progress=False, tensorboard=False)
    trainer.meta_train(num_meta_iterations=1)
    learner = agent.learner
    assert learner.config.lr == 0.5 and agent.meta_config is learner.config
    assert [g["lr"] for g in learner.optimizer.param_groups] == [0.5]
    # Adam's first step moves every entry by lr * g / (|g| + eps): at most, and for the
    # entries with a real gradient about, the config's 0.5 (the agent's own: 1e-3)
    step = max((agent.params[k] - v).abs().max().item() for k, v in before.items())
    assert 0.45 < step <= 0.5 + 1e-6
    rates = torch.cat([v.detach().flatten() for v in learner.inner_lrs.values()])
    assert 0.45 < (rates - 0.3).abs().max().item() <= 0.5 + 1e-6  # they started at 0.3


def test_rebuild_keeps_theta_iteration_and_adam_moments() -> None:
    """Continuing a trained agent under a new lr keeps what it learned: theta, the
    iteration count and Adam's moment estimates; only the step size changes."""
    torch.set_num_threads(1)
    family = Navigation2DFamily(max_episode_steps=5)
    agent = small_agent(family, optimizer="adam", lr=0.01)
    Trainer(family, agent, progress=False, tensorboard=False).meta_train(num_meta_iterations=2)
    theta = {k: v.detach().clone() for k, v in agent.params.items()}
    moments = agent.learner.optimizer.state_dict()["state"]
    trainer = Trainer(family, agent, config=run_config(agent, lr=0.02), progress=False)
    learner = trainer._meta_learner(None)[0]
    assert learner is agent.learner and learner.iteration == 2
    assert all(torch.equal(learner.params[k], v) for k, v in theta.items())
    state = learner.optimizer.state_dict()
    assert state["param_groups"][0]["lr"] == 0.02
    assert all(torch.equal(state["state"][i]["exp_avg"], m["exp_avg"]) for i, m in moments.items())
