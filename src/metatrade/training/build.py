"""Factories: from a ``RunConfig`` to the objects of the other layers.

The only place where config sections turn into ``DataLoader``, ``TradingEnvConfig``,
task families, policies, ``MetaConfig``, ``PPOConfig`` and learners, so the CLI, the
``Trainer`` and the tests build a run the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metatrade.training.checkpoint import RNGStreams
from metatrade.training.config import ConfigError, RunConfig

if TYPE_CHECKING:  # the layers are imported where used, so importing build stays light
    import pandas as pd
    from rich.console import Console

    from metatrade.agents.ppo import PPOAgent, PPOConfig
    from metatrade.data import DataLoader
    from metatrade.data.task_arrays import TaskArrays, TaskId
    from metatrade.evaluation.protocol import EvaluationResult, ProtocolConfig
    from metatrade.market import TradingEnvConfig
    from metatrade.meta.learner import MetaConfig, MetaLearner
    from metatrade.meta.protocols import BatchEnv, TaskFamily

# Probing a family for its spaces uses its own stream, so it never shifts the run's streams.
_PROBE_SEED = 12345


# ---- data and environments ----------------------------------------------------------------
def make_env_config(cfg: RunConfig, **overrides: Any) -> TradingEnvConfig:
    """``TradingEnvConfig`` from the ``env`` section (``overrides``: e.g. split, episode_length)."""
    from metatrade.market import CostModel, FixedFractionSizer, RewardShaping, TradingEnvConfig

    e = cfg.env
    values: dict[str, Any] = {
        "initial_capital": e.initial_capital,
        "lookback": e.lookback,
        "episode_length": e.episode_length,
        "square_off": e.square_off,
        "ruin_fraction": e.ruin_fraction,
        "costs": CostModel(**e.costs.model_dump()),
        "sizer": FixedFractionSizer(fraction=e.position_fraction),
        "observation": e.observation,
        "reward": RewardShaping(**e.shaping.model_dump()),
    }
    values.update(overrides)
    return TradingEnvConfig(**values)


def synthetic_dir(cfg: RunConfig) -> Path:
    """Folder of the run's synthetic tasks (written once, deterministic for the seed)."""
    d = cfg.data
    if d.data_dir:
        return Path(d.data_dir)
    name = f"n{d.num_synthetic_tasks}-bars{d.synthetic_bars}-seed{cfg.run.seed}"
    return cfg.run_dir() / "synthetic_data" / name


def make_loader(cfg: RunConfig) -> DataLoader:
    """``DataLoader`` for the ``data`` section (writing the synthetic tasks when asked).

    Every task the config names must exist: ``data.tasks``, ``data.heldout.tasks`` and each
    held-out instrument and timeframe (a misspelt held-out name would otherwise hold out
    nothing and train on the instrument meant to be unseen); ``ConfigError`` lists what the
    folder holds.
    """
    from metatrade.data import DataLoader, HeldOut, SplitConfig

    d = cfg.data
    data_dir: str | Path | None = d.data_dir
    generated: list[tuple[str, str]] = []
    if d.family == "synthetic":
        data_dir = synthetic_dir(cfg)
        if _writes_synthetic(data_dir):
            from metatrade.data.synthetic import write_synthetic_tasks

            write_synthetic_tasks(
                data_dir, d.num_synthetic_tasks, cfg.run.seed, n_bars=d.synthetic_bars
            )
        generated = _synthetic_heldout(cfg, data_dir)
    elif data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(f"data.data_dir: {data_dir} is not a directory of OHLCV files")
    held_tasks = [tuple(_task_id(t)) for t in d.heldout.tasks] + generated
    heldout = HeldOut(
        instruments=tuple(d.heldout.instruments),
        timeframes=tuple(d.heldout.timeframes),
        tasks=tuple(held_tasks),
    )
    loader = DataLoader(
        data_dir,
        splits=SplitConfig(**d.splits.model_dump()),
        heldout=heldout,
        strict=d.strict,
        lookback=cfg.env.lookback,
    )
    check_named_tasks(cfg, loader)
    return loader


def _task_id(name: str) -> TaskId:
    from metatrade.data.naming import parse_task_id

    return parse_task_id(name)


def _writes_synthetic(folder: Path) -> bool:
    """Generate synthetic tasks into ``folder`` only when it holds no data yet: a user's
    folder of OHLCV files (``--data``) is read, never written into."""
    from metatrade.data.naming import data_files
    from metatrade.data.synthetic import PARAMS_FILE

    if (folder / PARAMS_FILE).is_file():
        return False
    return not (folder.is_dir() and data_files(folder))


def _synthetic_heldout(cfg: RunConfig, folder: Path) -> list[tuple[str, str]]:
    """The last ``data.synthetic_heldout`` generated tasks (none in a user's data folder)."""
    from metatrade.data.synthetic import PARAMS_FILE, load_synthetic_params

    n = cfg.data.synthetic_heldout
    if not n or not (folder / PARAMS_FILE).is_file():
        return []
    generated = list(load_synthetic_params(folder))
    if n >= len(generated):
        raise ConfigError(
            f"data.synthetic_heldout={n}: must be below data.num_synthetic_tasks={len(generated)}"
        )
    return [tuple(t) for t in generated[-n:]]


def check_named_tasks(cfg: RunConfig, loader: DataLoader) -> None:
    """``ConfigError`` for a task, held-out instrument or timeframe the folder does not hold."""
    d = cfg.data
    available = loader.get_available_tasks()
    names = {str(t) for t in available}
    instruments = sorted({t.instrument for t in available})
    timeframes = sorted({t.timeframe for t in available}, key=int)
    where = f"in {loader.data_dir}" + (
        f" (skipped: {', '.join(loader.skipped)})" if loader.skipped else ""
    )
    listing = ", ".join(str(t) for t in available[:12]) + (", ..." if len(available) > 12 else "")
    for key, wanted in (("data.tasks", d.tasks or []), ("data.heldout.tasks", d.heldout.tasks)):
        missing = [t for t in wanted if str(_task_id(t)) not in names]
        if missing:
            raise ConfigError(
                f"{key} (--tasks): {', '.join(missing)} not found {where}; available: {listing}"
            )
    bad = [i for i in d.heldout.instruments if i not in instruments]
    if bad:
        raise ConfigError(
            f"data.heldout.instruments: {', '.join(bad)} matches no task {where}; "
            f"instruments: {', '.join(instruments)}"
        )
    bad = [str(t) for t in d.heldout.timeframes if str(t) not in timeframes]
    if bad:
        raise ConfigError(
            f"data.heldout.timeframes: {', '.join(bad)} matches no task {where}; "
            f"timeframes: {', '.join(timeframes)}"
        )


def task_pool(cfg: RunConfig, loader: DataLoader, split: str) -> list[TaskId]:
    """Tasks of a meta-split ("train" or "test"), restricted to ``data.tasks`` when set."""
    pool = loader.tasks(split)
    if cfg.data.tasks is not None:
        wanted = {_task_id(t) for t in cfg.data.tasks}
        pool = [t for t in pool if t in wanted]
    return pool


class TaskSubset:
    """A DataLoader seen through ``data.tasks``: task splits restricted to the listed tasks.

    Implements what ``TradingTaskFamily`` needs (``sample_tasks``, ``get_task_arrays``) and
    samples with the loader's own balanced scheme, so an unrestricted run and a run listing
    every task draw the same tasks.
    """

    def __init__(self, loader: DataLoader, train: list[TaskId], test: list[TaskId]) -> None:
        self.loader = loader
        self.pools = {"train": list(train), "test": list(test), "all": [*train, *test]}

    def tasks(self, split: str = "train") -> list[TaskId]:
        return list(self.pools[split])

    def sample_tasks(
        self, n: int, rng: np.random.Generator | int | None = None, split: str = "train"
    ) -> list[TaskId]:
        from metatrade.data.sampling import balanced_sample

        pool = self.pools.get(split)
        if not pool:
            raise ConfigError(
                f"no {split!r} tasks among data.tasks after data.heldout; "
                "list more tasks or change the held-out set"
            )
        return balanced_sample(pool, n, rng)

    def get_task_arrays(self, instrument: str, timeframe: str) -> TaskArrays:
        return self.loader.get_task_arrays(instrument, timeframe)

    def get_task_data(self, instrument: str, timeframe: str) -> pd.DataFrame:
        return self.loader.get_task_data(instrument, timeframe)


def task_source(cfg: RunConfig, loader: DataLoader) -> DataLoader | TaskSubset:
    """The loader, or a ``TaskSubset`` of it when ``data.tasks`` lists tasks."""
    if cfg.data.tasks is None:
        return loader
    return TaskSubset(loader, task_pool(cfg, loader, "train"), task_pool(cfg, loader, "test"))


def make_family(
    cfg: RunConfig, loader: DataLoader | None = None, period: str = "train"
) -> TaskFamily:
    """The task family of ``data.family``: a ``TaskFamily`` for the meta-RL core.

    ``period`` is the time split trading episodes use ("train" for (meta-)training).
    """
    if cfg.data.family == "nav2d":
        from metatrade.envs.nav2d import Navigation2DFamily

        return Navigation2DFamily(max_episode_steps=cfg.env.episode_length)
    from metatrade.market.family import TradingTaskFamily

    loader = loader if loader is not None else make_loader(cfg)
    source = task_source(cfg, loader)
    if not task_pool(cfg, loader, "train"):
        raise ConfigError(
            "data: no meta-training tasks left after data.tasks and data.heldout; "
            "hold out fewer tasks or list more in data.tasks"
        )
    return TradingTaskFamily(source, make_env_config(cfg), period=period, objective=cfg.objective)


def training_task_names(family: Any) -> list[str] | None:
    """The exact meta-training tasks of a trading family ("Instrument:TF", sorted), what a
    run checkpoint records so evaluation can refuse them; None for other families."""
    source = getattr(family, "loader", None)
    if source is None or not hasattr(source, "tasks"):
        return None
    return sorted(str(t) for t in source.tasks("train"))


def probe_spaces(family: TaskFamily) -> BatchEnv:
    """A one-task BatchEnv of the family, to read observation/action spaces and layout."""
    rng = np.random.default_rng(_PROBE_SEED)
    tasks = family.sample_tasks(1, "train", rng)
    return family.make_batch_env(tasks, 1)


# ---- policies and learners ----------------------------------------------------------------
def policy_kwargs(cfg: RunConfig, env: BatchEnv) -> dict[str, Any]:
    p = cfg.policy
    return {
        "hidden_sizes": tuple(p.hidden_sizes),
        "activation": p.activation,
        "window_shape": getattr(env, "window_shape", None),
        "account_dim": getattr(env, "account_dim", 0),
        "num_experts": p.num_experts,
        "init_log_std": p.init_log_std,
    }


def make_policy_for(cfg: RunConfig, family: TaskFamily, seed: int | None = None) -> torch.nn.Module:
    """The policy network for ``family``'s spaces, initialised from ``run.seed``."""
    from metatrade.agents.policies import make_policy

    env = probe_spaces(family)
    return make_policy(
        cfg.policy.kind,
        env.observation_space,
        env.action_space,
        seed=cfg.run.seed if seed is None else seed,
        **policy_kwargs(cfg, env),
    )


def make_meta_config(cfg: RunConfig) -> MetaConfig:
    """The ``meta`` section as the learner's ``MetaConfig`` (its fields, seeded by run.seed)."""
    from metatrade.meta.config import MetaConfig

    values = {f.name: getattr(cfg.meta, f.name) for f in fields(MetaConfig)}
    return MetaConfig(**{**values, "seed": cfg.run.seed})


def make_learner(
    cfg: RunConfig, family: TaskFamily, policy: torch.nn.Module, rng: RNGStreams
) -> MetaLearner:
    """A ``MetaLearner`` for the policy over the family, drawing from the run's RNG streams."""
    from metatrade.meta.learner import MetaLearner

    return MetaLearner(policy, family, make_meta_config(cfg))


def make_ppo_config(cfg: RunConfig, seed: int | None = None) -> PPOConfig:
    from metatrade.agents.ppo import PPOConfig

    known = {f.name for f in fields(PPOConfig)}
    values = {k: v for k, v in cfg.ppo.model_dump().items() if k in known}
    p = cfg.policy
    values.update(
        policy_kind=p.kind,
        hidden_sizes=tuple(p.hidden_sizes),
        activation=p.activation,
        num_experts=p.num_experts,
        init_log_std=p.init_log_std,
        seed=cfg.run.seed if seed is None else seed,
    )
    return PPOConfig(**values)


def make_ppo_agent(cfg: RunConfig, env: BatchEnv) -> PPOAgent:
    from metatrade.agents.ppo import PPOAgent

    return PPOAgent.from_env(env, make_ppo_config(cfg))


def multitask_env(cfg: RunConfig, family: TaskFamily) -> BatchEnv:
    """A BatchEnv over every meta-training task (trading) or ``ppo.tasks_per_batch`` sampled
    tasks (nav2d): what multi-task PPO trains on."""
    source = getattr(family, "loader", None)
    if source is not None and hasattr(source, "tasks"):
        tasks = source.tasks("train")
    else:
        rng = np.random.default_rng(cfg.run.seed)
        tasks = family.sample_tasks(cfg.ppo.tasks_per_batch, "train", rng)
    return family.make_batch_env(tasks, cfg.ppo.episodes_per_task)


def load_meta_policy(cfg: RunConfig, state: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The run's policy network with the checkpoint's meta-parameters loaded.

    Built from the spaces of any task of the data folder (the folder may hold only the
    evaluation tasks). ``CheckpointError`` (naming the file and the tensors) if they do not
    fit the network the config describes on this data (e.g. another lookback or feature set).
    """
    from metatrade.agents.checkpoint import CheckpointError, load_module_state
    from metatrade.market.family import TradingTaskFamily

    learner = state.get("learner")
    if not isinstance(learner, dict) or not isinstance(learner.get("params"), dict):
        raise CheckpointError(f"checkpoint {path}: holds no meta-parameters (learner.params)")
    loader = make_loader(cfg)
    every = TaskSubset(loader, loader.get_available_tasks(), [])
    policy = make_policy_for(cfg, TradingTaskFamily(every, make_env_config(cfg)))
    load_module_state(path, policy, learner["params"], "meta-parameters")
    return policy


def load_inner_lrs(state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The Meta-SGD per-parameter step sizes a run learned (None when it learned none):
    adaptation at test time uses them, as training did (Li et al., 2017)."""
    lrs = (state.get("learner") or {}).get("inner_lrs")
    return None if lrs is None else {k: v.detach().clone() for k, v in lrs.items()}


def check_unseen(
    tasks: list[TaskId], trained: Collection[str] | None, *, allow_seen: bool = False
) -> list[str]:
    """Evaluation tasks the run meta-trained on: ``ConfigError`` unless ``allow_seen``
    (then returned, for the table to flag). ``trained`` None: unknown, nothing checked."""
    seen = sorted(str(t) for t in tasks if trained is not None and str(t) in set(trained))
    if seen and not allow_seen:
        raise ConfigError(
            f"{', '.join(seen)}: the run meta-trained on these task(s), so an evaluation on "
            "them measures memory, not adaptation; name held-out tasks with --tasks, or pass "
            "--allow-seen to evaluate them anyway (flagged in the output)"
        )
    return seen


def adapt_params(
    cfg: RunConfig,
    policy: torch.nn.Module,
    family: TaskFamily,
    tasks: list[TaskId],
    steps: int,
    generator: torch.Generator,
    params: dict[str, torch.Tensor] | None = None,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Adapt to ``tasks`` with ``steps`` inner steps, each on fresh episodes of the family's
    period (the paper's test protocol), with the run's learned Meta-SGD step sizes
    ``inner_lrs`` when it has them. Returns per-task params [T, ...] and the mean episode
    return after k = 0..steps steps (the last one measured on one more fresh batch). With
    ``meta.estimator: exact``, every step is on the period's most recent windows and the
    returned values are the exact objective (minus the loss) after each step."""
    from metatrade.meta.adapt import adapt_on_batch, adapt_online
    from metatrade.meta.inner import expand_to_tasks
    from metatrade.meta.objective import per_task_losses

    meta = make_meta_config(cfg)
    start = params if params is not None else dict(policy.named_parameters())
    theta = expand_to_tasks({k: v.detach() for k, v in start.items()}, len(tasks))
    if meta.estimator == "exact":  # the most recent windows of the period, the exact objective
        batch = family.recent_objective_batch(tasks, num_windows=meta.episodes_per_task)
        loss = family.objective_loss
        kw = {"config": meta, "loss": loss, "num_steps": steps, "inner_lrs": inner_lrs}
        after = adapt_on_batch(policy, theta, batch, **kw)
        with torch.no_grad():
            values = [-per_task_losses(policy, p, batch, loss).mean().item() for p in after]
        return after[-1], values
    env = family.make_batch_env(tasks, meta.episodes_per_task)
    result = adapt_online(
        policy,
        theta,
        env,
        config=meta,
        num_steps=steps,
        inner_lrs=inner_lrs,
        generator=generator,
    )
    return result.params, result.returns


def eval_tasks(
    cfg: RunConfig,
    loader: DataLoader,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
) -> list[TaskId]:
    """Held-out tasks (the "test" meta-split), restricted to ``data.tasks`` when that lists
    some of them (a run trained on a few listed tasks is evaluated on every held-out task).
    Tasks in ``trained`` (the run's meta-training tasks) are refused: ``check_unseen``."""
    tasks = task_pool(cfg, loader, "test") or loader.tasks("test")
    if not tasks:
        raise ConfigError(
            "no held-out tasks to evaluate: set data.heldout in the config or pass --tasks"
        )
    check_unseen(tasks, trained, allow_seen=allow_seen)
    return tasks


def eval_family(cfg: RunConfig, loader: DataLoader, tasks: list[TaskId]) -> TaskFamily:
    """A family over the evaluation tasks alone (their adaptation window, the train split),
    so evaluating needs no meta-training task in the folder."""
    from metatrade.market.family import TradingTaskFamily

    subset = TaskSubset(loader, tasks, tasks)
    return TradingTaskFamily(subset, make_env_config(cfg), objective=cfg.objective)


def warn_seen(console: Console, seen: list[str]) -> None:
    """The loud line ``--allow-seen`` prints for tasks the run meta-trained on."""
    if seen:
        console.print(
            f"[bold red]WARNING:[/bold red] {', '.join(seen)} were meta-training tasks of "
            "this run (--allow-seen): their results measure memory, not adaptation"
        )


def adapt_to_tasks(
    cfg: RunConfig,
    policy: torch.nn.Module,
    run_dir: Path,
    steps: int,
    console: Console | None = None,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """``metatrade adapt``: adapt to each held-out task on its adaptation window (train
    split) and save the adapted parameters to ``<run_dir>/adapted/<task>.pt``. ``trained``,
    ``allow_seen``: see ``eval_tasks``; ``inner_lrs``: the run's Meta-SGD step sizes."""
    from metatrade.agents.checkpoint import save_checkpoint

    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    family = eval_family(cfg, loader, tasks)
    gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    params, returns = adapt_params(cfg, policy, family, tasks, steps, gen, inner_lrs=inner_lrs)
    out: dict[str, Any] = {"returns": returns, "files": []}
    for i, task in enumerate(tasks):
        state = {"params": {k: v[i].clone() for k, v in params.items()}}
        path = save_checkpoint(
            run_dir / "adapted" / f"{task.instrument}_{task.timeframe}.pt",
            "AdaptedPolicy",
            {**cfg.to_dict(), "task": str(task), "steps": steps, "seen": str(task) in seen},
            state,
        )
        out["files"].append(str(path))
    if console is not None:
        warn_seen(console, seen)
        curve = "  ".join(f"k={k}: {r:.4g}" for k, r in enumerate(returns))
        console.print(f"adapted {len(tasks)} task(s) with {steps} step(s); mean return {curve}")
        console.print(f"adapted parameters in {run_dir / 'adapted'}")
    return out


def backtest_tasks(
    cfg: RunConfig,
    policy: torch.nn.Module,
    run_dir: Path,
    steps: int,
    split: str,
    console: Console | None = None,
    echo: bool = True,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """``metatrade backtest``: adapt with ``steps`` inner steps (0 = the meta-policy), then
    backtest each held-out task over ``split``; reports under ``<run_dir>/reports/<task>``.
    ``trained``, ``allow_seen``, ``inner_lrs``: as in ``adapt_to_tasks``."""
    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    if console is not None:
        warn_seen(console, seen)
    family = eval_family(cfg, loader, tasks)
    gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    params, _ = adapt_params(cfg, policy, family, tasks, steps, gen, inner_lrs=inner_lrs)
    env_cfg = make_env_config(cfg)
    results: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        arrays = loader.get_task_arrays(*task)
        own = {k: v[i] for k, v in params.items()}
        name = "MAML" if steps == 0 else f"MAML (k={steps})"
        if str(task) in seen:
            name += " [SEEN IN META-TRAINING]"
        results[str(task)] = backtest_and_report(
            (policy, own),
            arrays,
            run_dir / "reports" / f"{task.instrument}_{task.timeframe}",
            stress_bps=cfg.evaluation.stress_cost_bps,
            split=split,
            config=env_cfg,
            name=name,
            echo=echo,
        )
    if console is not None:
        console.print(f"backtest reports in {run_dir / 'reports'}")
    return results


def backtest_and_report(
    agent: Any,
    env: Any,
    out_dir: str | Path | None,
    stress_bps: float,
    echo: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Delegate to ``metatrade.evaluation.report.backtest_and_report`` (temp dir if None)."""
    import tempfile

    from metatrade.evaluation.report import backtest_and_report as report

    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="metatrade-report-")
    return report(agent, env, out_dir, stress_bps=stress_bps, echo=echo, **kwargs)


# ---- meta-test ----------------------------------------------------------------------------
def make_protocol_config(cfg: RunConfig, tasks: Collection[TaskId] | None = None) -> ProtocolConfig:
    """``ProtocolConfig`` from the ``evaluation``, ``meta`` and ``env`` sections.

    The synthetic family's oracle is used when the data folder has the regimes of every
    evaluated task (``tasks``); a user's ``--data`` folder has none: no oracle column."""
    from metatrade.data.synthetic import PARAMS_FILE, load_synthetic_params
    from metatrade.evaluation.protocol import ProtocolConfig

    ev = cfg.evaluation
    oracle = None
    folder = synthetic_dir(cfg)
    if cfg.data.family == "synthetic" and (folder / PARAMS_FILE).is_file():
        oracle = load_synthetic_params(folder)
        if tasks is not None and not set(tasks) <= set(oracle):
            oracle = None
    return ProtocolConfig(
        adaptation_steps=tuple(ev.adaptation_steps),
        adaptation_episodes=ev.adaptation_episodes,
        test_episodes=ev.test_episodes,
        episode_length=cfg.env.episode_length,
        test_episode_length=cfg.env.episode_length,
        adaptation=make_meta_config(cfg),
        objective=cfg.objective,
        references=tuple(b for b in ("buy_and_hold", "flat") if b in ev.baselines),
        bootstrap_samples=ev.bootstrap_samples,
        seed=cfg.run.seed,
        env=make_env_config(cfg),
        oracle=oracle,
    )


def check_ppo_fits(
    cfg: RunConfig, agent: PPOAgent, arrays: TaskArrays, path: str | Path | None = None
) -> None:
    """``CheckpointError`` when the PPO baseline's observations are not this run's (e.g. it
    was trained with another lookback): its network could not read the evaluation env."""
    from metatrade.errors import CheckpointError
    from metatrade.market import TradingEnv

    want = TradingEnv(arrays, make_env_config(cfg)).observation_space.shape
    have = tuple(agent.observation_space.shape)
    if have != tuple(want):
        lookback, width = cfg.env.lookback, arrays.num_features
        raise CheckpointError(
            f"PPO baseline {path or '(given agent)'}: observations of {have[0]} values, but this "
            f"run's env gives {want[0]} (lookback {lookback} x {width} features + 4 account "
            "values); pass --ppo an agent trained with this run's config (metatrade train)"
        )


def load_ppo_agent(path: str | Path) -> PPOAgent:
    from metatrade.agents.ppo import PPOAgent

    return PPOAgent.load_model(path)


def run_meta_test(
    cfg: RunConfig,
    policy: torch.nn.Module,
    run_dir: Path,
    ppo_path: str | Path | None = None,
    ppo_agent: PPOAgent | None = None,
    console: Console | None = None,
    *,
    trained: Collection[str] | None = None,
    allow_seen: bool = False,
    inner_lrs: dict[str, torch.Tensor] | None = None,
) -> EvaluationResult:
    """``metatrade evaluate``: the meta-test protocol on the held-out tasks.

    Starts: the MAML meta-parameters (adapted with the run's Meta-SGD step sizes
    ``inner_lrs`` when it learned them), the multi-task PPO policy (``ppo_agent``, or the
    file ``ppo_path``, or ``<run_dir>/ppo/checkpoints/ppo.pt`` when present) and a random
    initialisation; reference rows per ``evaluation.baselines``. ``trained``/``allow_seen``:
    see ``eval_tasks``; seen tasks are flagged in the table. Prints the table and writes
    ``<run_dir>/eval/evaluation.{csv,json,txt}`` and ``evaluation_adaptation.png``.
    """
    from metatrade.evaluation.protocol import MetaTestProtocol, Start, module_params, random_start

    loader = make_loader(cfg)
    tasks = eval_tasks(cfg, loader, trained=trained, allow_seen=allow_seen)
    seen = check_unseen(tasks, trained, allow_seen=True)
    wanted = set(cfg.evaluation.baselines)
    starts: dict[str, Any] = {}
    if "maml" in wanted:
        starts["MAML"] = Start(policy, module_params(policy), inner_lrs)
    if "ppo" in wanted:
        path = ppo_path
        if ppo_agent is None:
            found = [
                p
                for p in (
                    run_dir / "ppo" / "checkpoints" / "ppo.pt",
                    run_dir / "checkpoints" / "ppo.pt",
                )
                if p.is_file()
            ]
            path = ppo_path or (found[0] if found else None)
            ppo_agent = load_ppo_agent(path) if path is not None else None
        if ppo_agent is not None:
            check_ppo_fits(cfg, ppo_agent, loader.get_task_arrays(*tasks[0]), path=path)
            starts["PPO"] = Start(ppo_agent.policy, module_params(ppo_agent.policy))
        elif console is not None:
            console.print("no PPO baseline (run `metatrade train` or pass --ppo); row skipped")
    if "random" in wanted:
        starts["random"] = random_start(policy, seed=cfg.run.seed + 7919)
    result = MetaTestProtocol(make_protocol_config(cfg, tasks)).run(starts, tasks, loader)
    result.seen = seen
    files = result.save(run_dir / "eval")
    if console is not None:
        warn_seen(console, seen)
        console.print(
            f"held-out tasks: {', '.join(str(t) for t in tasks)} (test split, out of sample)"
        )
        console.print(result.format_table(), soft_wrap=True)
        console.print(f"results: {files['csv']}, {files['json']}; plot: {files['plot']}")
    return result
