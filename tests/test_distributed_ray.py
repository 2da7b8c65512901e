"""The Ray backend on one module-scoped local Ray instance (2 CPUs): Ray with 1 and 2
workers is bitwise equal to the local backend (Adam, TRPO, ProMP); a worker SIGKILLed in the middle
of an iteration is restarted and the run ends with the same parameters; a Ray run resumed
from its checkpoint equals an uninterrupted local run (trading tasks, actors load the data).
RAY_AUTH_MODE=disabled: a throwaway local instance, no token written to the home folder."""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from metatrade.agents.policies import NetworkConfig, make_policy  # noqa: E402
from metatrade.distributed import attach, make_executor  # noqa: E402
from metatrade.envs.nav2d import Navigation2DFamily  # noqa: E402
from metatrade.meta.learner import MetaConfig, MetaLearner  # noqa: E402
from metatrade.training.build import make_family  # noqa: E402
from metatrade.training.config import load_config  # noqa: E402
from metatrade.training.trainer import Trainer  # noqa: E402

FAMILY = Navigation2DFamily(max_episode_steps=8)
ITERATIONS = 3
# fractions of a CPU so two executors (3 actors) and a Trainer's actor fit in 2 CPUs
SHARE = 0.25


@pytest.fixture(scope="module")
def ray_instance():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


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


@pytest.fixture(scope="module")
def executors(ray_instance):
    made = {
        n: make_executor("ray", nav_policy(), FAMILY, workers=n, cpus_per_worker=SHARE)
        for n in (1, 2)
    }
    yield made
    for ex in made.values():
        ex.close()


def train(optimizer: str, executor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    cfg = MetaConfig(
        optimizer=optimizer,
        meta_batch_size=3,
        episodes_per_task=3,
        num_evaluation_episodes=3,
        lr=0.05,
        seed=3,
    )
    policy = nav_policy()
    learner = MetaLearner(policy, FAMILY, cfg)
    attach(learner, executor or make_executor("local", copy.deepcopy(policy), FAMILY))
    for _ in range(ITERATIONS):
        stats = learner.step()
    return {k: v.detach().clone() for k, v in learner.params.items()}, stats


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {(a[k] - b[k]).abs().max().item()}"


@pytest.mark.parametrize("optimizer", ["adam", "trpo", "promp"])
def test_ray_with_one_and_two_workers_is_bitwise_the_local_backend(executors, optimizer):
    local, local_stats = train(optimizer, None)
    for workers in (1, 2):
        params, stats = train(optimizer, executors[workers])
        assert_bitwise(local, params)
        assert stats["meta/loss"] == local_stats["meta/loss"]
        assert stats["comm/bytes_sent"] > 0 and stats["comm/bytes_received"] > 0
    start = dict(nav_policy().named_parameters())
    assert any(not torch.equal(local[k], start[k].detach()) for k in local)


def test_worker_killed_mid_iteration_is_restarted_with_the_same_result(executors):
    ex = executors[2]
    reference, _ = train("trpo", None)
    pids = ex.pids()
    killed: list[int] = []
    begun: list[int] = []

    def kill_once(method: str, round_number: int) -> None:
        # in the second iteration's conjugate gradient: the unit's graph is lost with it
        begun.extend([round_number] if method == "begin" else [])
        if method == "fisher" and len(begun) == 2 and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    ex.round_hook = kill_once
    try:
        params, _ = train("trpo", ex)
    finally:
        ex.round_hook = None
    assert killed, "the worker was never killed"
    assert ex.pids()[0] != pids[0] and ex.pids()[1] == pids[1]  # restarted by Ray
    assert_bitwise(reference, params)


def test_resumed_ray_run_equals_an_uninterrupted_local_run(ray_instance, tmp_path: Path):
    def trainer(backend: str, out: Path) -> Trainer:
        overrides = {"run.backend": backend, "run.workers": 1}
        cfg = load_config("tiny", out_dir=out, overrides=overrides)
        return Trainer(make_family(cfg), None, config=cfg, run_dir=out, progress=False)

    straight = trainer("local", tmp_path / "local")
    straight.meta_train(3)
    trainer("ray", tmp_path / "ray").meta_train(2)
    resumed = trainer("ray", tmp_path / "ray")
    resumed.meta_train(3, resume=tmp_path / "ray")
    assert_bitwise(straight.params, resumed.params)
    assert resumed.learner.backend is None  # the trainer closed its actors


def test_walkforward_fans_out_over_tasks_on_ray_bitwise(ray_instance) -> None:
    """Evaluation fans out like meta-training: the walk-forward's per-task work as one Ray
    task per held-out task gives the in-process records bit for bit (every fold is adapted
    with its own seed), in task order."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from metatrade.distributed.fanout import ray_task_map
    from metatrade.evaluation.protocol import Start, module_params
    from metatrade.evaluation.walkforward import (
        FoldSpec,
        InnerLoopAdapter,
        WalkForwardConfig,
        run_walkforward,
    )
    from metatrade.market.config import TradingEnvConfig
    from metatrade.meta.config import AdaptationConfig
    from walkforward_helpers import ar_task, tiny_policy

    env = TradingEnvConfig(lookback=4, episode_length=16)
    tasks = [
        ar_task(phi, n_bars=900, seed=i, name=f"Syn{i}")[1] for i, phi in enumerate((0.4, -0.3))
    ]
    policy = tiny_policy(4)
    starts = {"MAML": Start(policy, module_params(policy))}
    adapter = InnerLoopAdapter(env, AdaptationConfig(episodes_per_task=4, inner_lr=1.0), steps=1)
    cfg = WalkForwardConfig(folds=FoldSpec(90, 120), env=env, start=600, bootstrap_samples=20)
    local = run_walkforward(starts, tasks, adapter, cfg)
    remote = run_walkforward(starts, tasks, adapter, cfg, task_map=ray_task_map(workers=2))
    assert [r.task for r in remote.tasks] == [r.task for r in local.tasks]
    for a, b in zip(local.tasks, remote.tasks, strict=True):
        for label, rec in a.records.items():
            np.testing.assert_array_equal(rec.equity, b.records[label].equity)


@pytest.fixture
def no_ray_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if this process had no Ray connection, and starting one were a failure: the
    checks below must refuse before Ray is asked (cheap, no Ray instance started)."""

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init reached")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)


def test_unreachable_address_fails_fast_naming_it(no_ray_start) -> None:
    """Reproduction: `--address 127.0.0.1:1` hung in Ray's reconnect loop with no output."""
    import time

    from metatrade.distributed.ray_executor import CONNECT_TIMEOUT_S, connect
    from metatrade.errors import ConfigError

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"--address 127\.0\.0\.1:1 \(run\.address\)"):
        connect("127.0.0.1:1")
    assert time.perf_counter() - t0 < CONNECT_TIMEOUT_S + 1
    with pytest.raises(ConfigError, match="use auto or host:port"):
        connect("no-port-here")


def test_more_local_workers_than_cpus_is_an_error(no_ray_start) -> None:
    """Reproduction: `--workers 100` started 100 worker processes on a 2-core machine and
    never finished an iteration."""
    from metatrade.distributed.ray_executor import connect, usable_cpus
    from metatrade.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"--workers {usable_cpus() + 1} \(run\.workers\)"):
        connect(None, num_cpus=usable_cpus() + 1)
