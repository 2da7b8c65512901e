"""``Trainer``: runs training loops, logs them, checkpoints them, resumes them.

It orchestrates and owns no learning rule: ``meta_train`` drives a
``metatrade.meta.learner.MetaLearner`` one meta-iteration (``step()``) at a time; ``train``
drives a ``PPOAgent``; ``run_backtest_and_report`` hands a policy to the evaluation layer.
Around the loops it adds what a long run needs: a live progress bar, a CSV + TensorBoard
log, atomic checkpoints every ``checkpoint_interval`` iterations and at the end, and exact
resume (parameters, optimizer state, RNG streams and iteration restored, so a killed run
continued with ``resume=`` ends with the same parameters as one that never stopped).

Example:
    >>> from metatrade.envs.nav2d import Navigation2DFamily           # doctest: +SKIP
    >>> from metatrade.training import Trainer, load_config           # doctest: +SKIP
    >>> cfg = load_config("configs/nav2d.yaml")                        # doctest: +SKIP
    >>> trainer = Trainer(Navigation2DFamily(), None, config=cfg, run_dir="runs/nav")  # doctest: +SKIP
    >>> trainer.meta_train(num_meta_iterations=20, num_inner_loop_steps=1,
    ...                    num_evaluation_steps=20, meta_batch_size=20)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from metatrade.agents.checkpoint import CheckpointError
from metatrade.training.checkpoint import (
    RNGStreams,
    checkpoint_path,
    load_run_checkpoint,
    save_run_checkpoint,
)
from metatrade.training.config import RunConfig, apply_overrides, save_config
from metatrade.training.logger import MetricsLogger, progress_bar, summary_line

META_KIND = "MetaTrainer"
# Config sections that must match between a checkpoint and the run resuming from it.
_RESUME_SECTIONS = ("data", "env", "policy", "meta")


class Trainer:
    """Standard RL (``train``) and MAML meta-training (``meta_train``) with logs and checkpoints.

    Args:
        env: a ``TaskFamily`` (for ``meta_train``) or a ``BatchEnv`` (for ``train``).
        agent: for ``meta_train``, the policy to meta-train (an ``nn.Module`` policy or an agent
            with a ``.policy``); for ``train``, a ``PPOAgent``.
        num_episodes: ``train`` only: episodes per environment slot to train for (total env
            steps = num_episodes x max_episode_steps x slots); None = ``ppo.total_timesteps``.
        log_interval: iterations between terminal summary lines (every iteration goes to CSV).
        config: the run configuration (defaults if None).
        run_dir: where logs, checkpoints and the resolved config go; None writes nothing.
        checkpoint_interval: iterations between checkpoints (None = ``run.checkpoint_interval``).
        progress: show the live progress bar (default: when stderr is a terminal).
        tensorboard: also write TensorBoard event files under ``<run_dir>/logs/tb``.
    """

    def __init__(
        self,
        env: Any,
        agent: Any = None,
        num_episodes: int | None = None,
        log_interval: int | None = None,
        *,
        config: RunConfig | None = None,
        run_dir: str | Path | None = None,
        checkpoint_interval: int | None = None,
        progress: bool | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.env = env
        self.agent = agent
        self.num_episodes = num_episodes
        self.config = config or RunConfig()
        if config is None and getattr(agent, "learner", None) is not None:
            # A MAMLAgent without a run config: its own MetaConfig is the meta section.
            self.config = self.config.model_copy(
                update={"meta": meta_section_from(agent.learner.config)}
            )
        self.log_interval = log_interval or self.config.run.log_interval
        self.checkpoint_interval = checkpoint_interval or self.config.run.checkpoint_interval
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.tensorboard = tensorboard
        self.rng = RNGStreams(self.config.run.seed)
        self.learner: Any = None
        self.history: list[dict[str, float]] = []

    # ---- meta-training ----------------------------------------------------------------
    def meta_train(
        self,
        num_meta_iterations: int | None = None,
        num_inner_loop_steps: int | None = None,
        num_evaluation_steps: int | None = None,
        meta_batch_size: int | None = None,
        *,
        resume: str | Path | None = None,
    ) -> dict[str, float]:
        """Meta-train the policy with MAML; returns the last iteration's metrics.

        Args:
            num_meta_iterations: outer-loop iterations in total: a resumed run, or a second
                call on the same trainer, continues from where it stopped up to this number.
            num_inner_loop_steps: inner policy-gradient steps per task.
            num_evaluation_steps: post-adaptation episodes per task behind the meta-loss.
            meta_batch_size: tasks per meta-iteration.
            resume: a checkpoint file or run directory to continue from.
        Any argument left None comes from the ``meta`` section of the config.
        """
        overrides = {
            "meta.num_meta_iterations": num_meta_iterations,
            "meta.num_inner_steps": num_inner_loop_steps,
            "meta.num_evaluation_episodes": num_evaluation_steps,
            "meta.meta_batch_size": meta_batch_size,
        }
        self.config = apply_overrides(
            self.config, {k: v for k, v in overrides.items() if v is not None}
        )
        from metatrade.training.build import make_learner, make_meta_config

        own = getattr(self.agent, "learner", None)
        if own is None and self.learner is not None and resume is None:
            own = self.learner  # a second call continues this trainer's learner
        if own is not None:
            # A MAMLAgent: train its own learner in place, under the run's meta settings.
            if own.config.optimizer != self.config.meta.optimizer:
                raise ValueError(
                    f"the MAMLAgent was built for meta-optimizer {own.config.optimizer!r} but "
                    f"the config says meta.optimizer={self.config.meta.optimizer!r}; make them match"
                )
            own.reconfigure(replace(make_meta_config(self.config), seed=own.config.seed))
            own.family = self.env
            self.learner = learner = own
        else:
            from metatrade.runtime import resolve_device

            policy = self._policy().to(resolve_device(self.config.run.device))
            self.learner = learner = make_learner(self.config, self.env, policy, self.rng)
        cfg = self.config
        start = int(getattr(learner, "iteration", 0)) if own is not None else 0
        if resume is not None:
            start = self._restore(resume, learner)
        total = cfg.meta.num_meta_iterations
        if start >= total:
            where = f"checkpoint {resume}" if resume is not None else "the meta-learner"
            raise CheckpointError(
                f"{where} is already at iteration {start} of {total}: nothing to do; raise "
                "meta.num_meta_iterations (meta-train -n N) to train further"
            )
        logger = self._open_logger(start)
        last: dict[str, float] = {}
        from metatrade.training.backend import backend_for_run

        try:
            with (
                backend_for_run(cfg, learner, self.env),
                progress_bar("meta-train", total, start, self.progress) as (bar, task),
            ):
                for it in range(start, total):
                    stats = learner.step(rng=self.rng.numpy, generator=self.rng.torch)
                    metrics = {k: float(v) for k, v in stats.items()}
                    last = metrics
                    self.history.append(metrics)
                    done = it + 1
                    if logger is not None:
                        logger.log(done, metrics)
                    bar.update(task, completed=done, status=_status(metrics))
                    if done % self.log_interval == 0 or done == total:
                        bar.console.print(
                            summary_line(done, total, metrics), highlight=False, soft_wrap=True
                        )
                    if done % self.checkpoint_interval == 0 or done == total:
                        self.save_checkpoint(done)
        finally:
            if logger is not None:
                logger.close()
        return last

    def _policy(self) -> torch.nn.Module:
        agent = self.agent
        if agent is None:
            from metatrade.training.build import make_policy_for

            self.agent = agent = make_policy_for(self.config, self.env)
        return agent if isinstance(agent, torch.nn.Module) else agent.policy

    def save_checkpoint(self, iteration: int) -> Path | None:
        """Write ``checkpoints/last.pt`` (and nothing when the trainer has no run dir)."""
        if self.run_dir is None or self.learner is None:
            return None
        from metatrade.training.build import training_task_names

        return save_run_checkpoint(
            checkpoint_path(self.run_dir),
            META_KIND,
            self.config,
            iteration,
            self.learner.state_dict(),
            self.rng,
            # the exact meta-training tasks: evaluate/adapt/backtest refuse them (issue #11)
            extra={"train_tasks": training_task_names(self.env)},
        )

    def _restore(self, resume: str | Path, learner: Any) -> int:
        ck_cfg, state = load_run_checkpoint(resume, META_KIND)
        ours, theirs = self.config.to_dict(), ck_cfg.to_dict()
        diffs = [
            f"{section}.{key}"
            for section in _RESUME_SECTIONS
            for key in ours[section]
            if section != "meta" or key != "num_meta_iterations"
            if ours[section][key] != theirs[section].get(key)
        ]
        if ours["run"]["seed"] != theirs["run"]["seed"]:
            diffs.append("run.seed")
        if diffs:
            raise CheckpointError(
                f"checkpoint {resume} was written with a different config ({', '.join(diffs)}); "
                "resume with the run's own config (its run directory's config.yaml)"
            )
        try:
            learner.load_state_dict(state["learner"])
        except CheckpointError:
            raise
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {resume}: meta-learner state does not fit this model "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        self.rng.load_state_dict(state["rng"])
        return int(state["iteration"])

    def _open_logger(self, start: int) -> MetricsLogger | None:
        if self.run_dir is None:
            return None
        save_config(self.config, self.run_dir / "config.yaml")
        logger = MetricsLogger(self.run_dir / "logs", tensorboard=self.tensorboard)
        logger.truncate(start)
        return logger

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The current meta-parameters (after ``meta_train``)."""
        if self.learner is None:
            raise RuntimeError("no meta-learner yet: call meta_train() first")
        return dict(self.learner.params)

    # ---- standard RL --------------------------------------------------------------------
    def train(self, total_timesteps: int | None = None) -> dict[str, float]:
        """Train ``self.agent`` (a PPOAgent) on ``self.env`` (a BatchEnv); returns last logs.

        The budget is ``total_timesteps``, else ``num_episodes`` full episodes per env slot,
        else ``ppo.total_timesteps``. Saves the agent to ``<run_dir>/checkpoints/ppo.pt``.
        """
        env, agent = self.env, self.agent
        if agent is None:
            from metatrade.training.build import make_ppo_agent

            self.agent = agent = make_ppo_agent(self.config, env)
        if total_timesteps is None:
            if self.num_episodes is not None:
                slots = env.num_tasks * env.episodes_per_task
                total_timesteps = self.num_episodes * env.max_episode_steps * slots
            else:
                total_timesteps = self.config.ppo.total_timesteps
        logger = self._open_logger(0)
        per_iter = agent.config.n_steps * env.num_tasks * env.episodes_per_task
        iterations = max(1, math.ceil(total_timesteps / per_iter))
        last: dict[str, float] = {}
        try:
            with progress_bar("train", iterations, 0, self.progress) as (bar, task):
                count = 0

                def log_fn(logs: dict[str, float], num_timesteps: int) -> None:
                    nonlocal count, last
                    count += 1
                    last = {k: float(v) for k, v in logs.items()}
                    last["time/total_timesteps"] = float(num_timesteps)
                    self.history.append(last)
                    if logger is not None:
                        logger.log(count, last)
                    bar.update(task, completed=count, status=_status(last))
                    if count % self.log_interval == 0 or count == iterations:
                        bar.console.print(
                            summary_line(count, iterations, last), highlight=False, soft_wrap=True
                        )

                agent.learn(env, total_timesteps, log_fn=log_fn)
        finally:
            if logger is not None:
                logger.close()
        if self.run_dir is not None:
            agent.save_model(self.run_dir / "checkpoints" / "ppo.pt")
        return last

    # ---- reports ------------------------------------------------------------------------
    def run_backtest_and_report(
        self, agent: Any, env: Any, out_dir: str | Path | None = None, *, echo: bool = True
    ) -> dict[str, Any]:
        """Backtest ``agent`` over a whole split of ``env`` (a TradingEnv), print the
        ``=== Backtesting Report ===`` block (default and stressed costs side by side) and
        write the equity-curve PNG and trade list CSV into ``out_dir`` (default
        ``<run_dir>/reports``). Returns the metrics."""
        from metatrade.training.build import backtest_and_report

        if out_dir is None and self.run_dir is not None:
            out_dir = self.run_dir / "reports"
        return backtest_and_report(
            agent, env, out_dir, stress_bps=self.config.evaluation.stress_cost_bps, echo=echo
        )


def meta_section_from(meta_config: Any) -> Any:
    """A run config ``meta`` section holding a MetaConfig's values (e.g. a MAMLAgent's)."""
    from metatrade.training.config import MetaSection

    return MetaSection(**asdict(meta_config))


def _status(metrics: dict[str, float]) -> str:
    for key in ("meta/return_post", "rollout/ep_rew_mean"):
        if key in metrics:
            return f"{key.split('/')[-1]} {metrics[key]:.4g}"
    return ""
