"""run.device: auto falls back to the CPU, cuda without a GPU is refused clearly, a meta-run
trains with device auto; on a machine with a GPU, one meta-iteration on cuda matches the
CPU's (the action noise is drawn from the same CPU generator; envs stay numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.runtime import resolve_device
from metatrade.training.build import make_family
from metatrade.training.config import load_config
from metatrade.training.trainer import Trainer

CUDA = torch.cuda.is_available()


def test_auto_is_cuda_only_when_torch_sees_a_gpu() -> None:
    assert resolve_device("auto") == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="use cpu, cuda or auto"):
        resolve_device("tpu")


@pytest.mark.skipif(CUDA, reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")


def test_meta_train_with_device_auto_runs_where_auto_points() -> None:
    overrides = {
        "data.family": "nav2d",
        "env.episode_length": 6,
        "policy.hidden_sizes": [8],
        "meta.meta_batch_size": 2,
        "meta.episodes_per_task": 2,
        "meta.num_evaluation_episodes": 2,
        "meta.optimizer": "adam",
        "run.device": "auto",
    }
    cfg = load_config(overrides=overrides)
    trainer = Trainer(make_family(cfg), None, config=cfg, run_dir=None, progress=False)
    last = trainer.meta_train(1)
    assert np.isfinite(last["meta/loss"])
    assert all(v.device.type == resolve_device("auto") for v in trainer.params.values())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("optimizer", ["adam", "trpo"])
def test_one_iteration_on_cuda_matches_the_cpu(optimizer: str) -> None:
    family = Navigation2DFamily(max_episode_steps=10)
    env = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    results = {}
    for device in ("cpu", "cuda"):
        policy = make_policy(
            NetworkConfig(kind="mlp", hidden_sizes=(16,)),
            env.observation_space,
            env.action_space,
            seed=0,
        ).to(device)
        cfg = MetaConfig(optimizer=optimizer, meta_batch_size=4, episodes_per_task=4)
        learner = MetaLearner(policy, family, cfg)
        stats = learner.step()
        results[device] = ({k: v.detach().cpu() for k, v in learner.params.items()}, stats)
    for k, v in results["cpu"][0].items():
        torch.testing.assert_close(results["cuda"][0][k], v, rtol=1e-3, atol=1e-4)
    assert results["cuda"][1]["meta/return_pre"] == pytest.approx(
        results["cpu"][1]["meta/return_pre"], rel=1e-3
    )
