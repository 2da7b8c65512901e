"""A 2-node Ray cluster on one machine (``ray.cluster_utils.Cluster``): the node holding one
of the two workers is removed in the middle of a TRPO iteration; its actor is restarted on
the head node and the run ends with the parameters of the local backend, bitwise."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from metatrade.agents.policies import NetworkConfig, make_policy  # noqa: E402
from metatrade.distributed import attach, make_executor  # noqa: E402
from metatrade.envs.nav2d import Navigation2DFamily  # noqa: E402
from metatrade.meta.learner import MetaConfig, MetaLearner  # noqa: E402

FAMILY = Navigation2DFamily(max_episode_steps=8)
# detect the lost node within about a second instead of the default ~30 s
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 200,
    "health_check_failure_threshold": 3,
}


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    made = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "_system_config": FAST_HEALTH_CHECKS},
    )
    made.add_node(num_cpus=1)
    ray.init(address=made.address, log_to_driver=False)
    yield made
    ray.shutdown()
    made.shutdown()


def nav_policy() -> torch.nn.Module:
    env = FAMILY.make_batch_env(
        FAMILY.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        env.observation_space,
        env.action_space,
        seed=0,
    )


def train(executor) -> dict[str, torch.Tensor]:
    cfg = MetaConfig(
        optimizer="trpo", meta_batch_size=4, episodes_per_task=3, num_evaluation_episodes=3
    )
    policy = nav_policy()
    learner = MetaLearner(policy, FAMILY, cfg)
    attach(learner, executor or make_executor("local", copy.deepcopy(policy), FAMILY))
    for _ in range(2):
        learner.step()
    return {k: v.detach().clone() for k, v in learner.params.items()}


@pytest.mark.slow  # ~20 s: starts a 2-node cluster (still part of `make test`)
def test_node_removed_mid_iteration_completes_with_the_same_parameters(cluster):
    ex = make_executor("ray", nav_policy(), FAMILY, workers=2)
    try:
        pids = ex.pids()
        worker_node = cluster.list_all_nodes()[1]
        removed: list[float] = []

        def remove_node(method: str, round_number: int) -> None:
            if method == "fisher" and not removed:
                cluster.remove_node(worker_node)
                removed.append(time.perf_counter())

        ex.round_hook = remove_node
        params = train(ex)
        assert removed, "the node was never removed"
        assert sum(n["Alive"] for n in ray.nodes()) == 1
        assert sorted(ex.pids()) != sorted(pids)  # one actor restarted on the head node
    finally:
        ex.close()
    reference = train(None)
    for k in reference:
        assert torch.equal(reference[k], params[k]), k
