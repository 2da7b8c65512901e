"""``Trainer``: runs training loops, logs them, checkpoints them, resumes them.

It orchestrates and owns no learning rule: ``meta_train`` drives a
``metatrade.meta.learner.MetaLearner`` one meta-iteration (``step()``) at a time; ``train``
drives a ``PPOAgent``; ``run_backtest_and_report`` hands a policy to the evaluation layer.
Around the loops it adds what a long run needs: a live progress bar, a CSV + TensorBoard
log, atomic checkpoints every ``checkpoint_interval`` iterations and at the end, and exact
resume (parameters, optimizer state, RNG streams, PPO's env state and iteration restored,
so a killed run continued with ``resume=`` ends with the same parameters as one that never
stopped). The run directory is locked while a loop writes it (``metatrade.io.run_dir_lock``);
a fresh run refuses to replace one already there unless ``overwrite=True`` (then the old
run is moved aside whole, to ``<run>.replaced-<time>/``); Ctrl-C saves the last completed
iteration and raises ``TrainingInterrupted`` saying what was kept; an update that makes a
parameter inf or nan stops the run (``TrainingDiverged``), keeping the last good checkpoint.
(Example: ``metatrade.training``'s docstring, and the README's Python API.)
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metatrade.agents.checkpoint import CheckpointError
from metatrade.io import run_dir_lock
from metatrade.meta.protocols import BatchEnv, TaskFamily
from metatrade.runtime import resolve_device
from metatrade.training.artefacts import run_record
from metatrade.training.backend import backend_for_run
from metatrade.training.build import meta_family, ppo_agent_for, ppo_batch_env
from metatrade.training.checkpoint import (
    PPO_DIR,
    LoopCheckpoints,
    RNGStreams,
    checkpoint_path,
    claim_run_dir,
    non_finite,
    restore_run,
)
from metatrade.training.config import RunConfig, apply_overrides, save_config
from metatrade.training.logger import (
    MetricsLogger,
    notice,
    progress_bar,
    status_text,
    summary_line,
)
from metatrade.training.recorded import recorded_config
from metatrade.training.trials import record_training

if TYPE_CHECKING:
    from metatrade.agents.maml_agent import MAMLAgent
    from metatrade.agents.ppo import PPOAgent
    from metatrade.meta.learner import MetaLearner

META_KIND = "MetaTrainer"
PPO_KIND = "PPOTrainer"


class Trainer:
    """Standard RL (``train``) and MAML meta-training (``meta_train``) with logs and checkpoints.

    Args:
        env: a ``TaskFamily`` (for ``meta_train``) or a ``BatchEnv`` (for ``train``); each
            entry point checks that it got its kind and says which one to call otherwise.
        agent: for ``meta_train``, the policy to meta-train (an ``nn.Module`` policy or an agent
            with a ``.policy``); for ``train``, a ``PPOAgent``.
        num_episodes: ``train`` only: episodes per environment slot to train for (total env
            steps = num_episodes x max_episode_steps x slots); None = ``ppo.total_timesteps``.
        log_interval: iterations between terminal summary lines (every iteration goes to CSV).
        config: the run configuration; None: the settings ``env`` and ``agent`` carry
            (``training.recorded``: data folder, held-out tasks, env, objective, policy, meta
            or PPO settings), so ``config.yaml`` records the run that happened.
        run_dir: where logs, checkpoints and the resolved config go; None writes nothing.
            Meta-training writes at its top, PPO training under ``<run_dir>/ppo``.
        checkpoint_interval: iterations between checkpoints (None = ``run.checkpoint_interval``).
        progress: show the live progress bar (default: when stderr is a terminal).
        tensorboard: also write TensorBoard event files under ``<run_dir>/logs/tb``.
        overwrite: a fresh (not resumed) run may replace a run of its kind already in
            ``run_dir``: the old run is moved aside whole to ``<run_dir>.replaced-<time>/``
            (``replaced`` says where); without it that is a ``RunDirError`` saying to pass
            ``overwrite=True`` or ``resume=``.
    """

    def __init__(
        self,
        env: TaskFamily | BatchEnv,
        agent: MAMLAgent | PPOAgent | torch.nn.Module | None = None,
        num_episodes: int | None = None,
        log_interval: int | None = None,
        *,
        config: RunConfig | None = None,
        run_dir: str | Path | None = None,
        checkpoint_interval: int | None = None,
        progress: bool | None = None,
        tensorboard: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.env = env
        self.agent = agent
        self.num_episodes = num_episodes
        # Without a run config, the settings the objects carry (recorded in config.yaml)
        self.config = config or recorded_config(env, agent)
        self.log_interval = log_interval or self.config.run.log_interval
        self.checkpoint_interval = checkpoint_interval or self.config.run.checkpoint_interval
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.tensorboard = tensorboard
        self.overwrite = overwrite
        self.rng = RNGStreams(self.config.run.seed)
        self.learner: MetaLearner | None = None
        self.history: list[dict[str, float]] = []
        self._claimed: set[str] = set()  # kinds of run this trainer started in run_dir
        self.run_id: str | None = None  # the run's id (training.artefacts), once it writes
        self.replaced: Path | None = None  # where overwrite=True moved a replaced run

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

        Raises:
            TrainingInterrupted: on Ctrl-C, after saving the last completed iteration.
        """
        meta_family(self.env)  # (a TypeError before anything is written)
        overrides = {
            "meta.num_meta_iterations": num_meta_iterations,
            "meta.num_inner_steps": num_inner_loop_steps,
            "meta.num_evaluation_episodes": num_evaluation_steps,
            "meta.meta_batch_size": meta_batch_size,
        }
        self.config = apply_overrides(
            self.config, {k: v for k, v in overrides.items() if v is not None}
        )
        with self._locked(self.run_dir):
            learner, start = self._meta_learner(resume)
            total = self.config.meta.num_meta_iterations
            if start >= total:
                where = f"checkpoint {resume}" if resume is not None else "the meta-learner"
                raise CheckpointError(
                    f"{where} is already at iteration {start} of {total}: nothing to do; raise "
                    "meta.num_meta_iterations (meta-train -n N) to train further"
                )
            if resume is None:
                self._claim(META_KIND)
            last = self._meta_loop(learner, start, total)
            record_training(self, "meta-train")
            return last

    def _meta_loop(self, learner: MetaLearner, start: int, total: int) -> dict[str, float]:
        """Iterations start+1..total of ``learner.step()``: logged, checkpointed, and on
        Ctrl-C the last completed iteration saved (``TrainingInterrupted``)."""
        path = checkpoint_path(self.run_dir) if self.run_dir is not None else None
        saver = self._checkpoints(path, META_KIND, total, start)
        logger = self._open_logger(self.run_dir, start)
        last: dict[str, float] = {}
        try:
            with (
                backend_for_run(self.config, learner, self.env),  # batched | local | ray
                progress_bar("meta-train", total, start, self.progress) as (bar, task),
            ):
                for done in range(start + 1, total + 1):
                    if self.config.meta.lr_schedule == "linear":
                        learner.scale_learning_rates(1.0 - (done - 1) / total)
                    stats = learner.step(rng=self.rng.numpy, generator=self.rng.torch)
                    if bad := non_finite(learner.params):
                        raise saver.diverged("meta-training", done, bad)
                    last = {k: float(v) for k, v in stats.items()}
                    self._record(bar, task, logger, saver, learner.state_dict, done, total, last)
        except KeyboardInterrupt:
            raise saver.interrupted("meta-training") from None
        finally:
            if logger is not None:
                logger.close()
        return last

    def restore(self, resume: str | Path) -> int:
        """Build the meta-learner and load the checkpoint ``resume`` into it without
        training (e.g. a finished run whose meta-parameters are needed); returns its
        iteration."""
        self.learner, start = self._meta_learner(resume)
        return start

    def _meta_learner(self, resume: str | Path | None) -> tuple[Any, int]:
        """The learner to train (a MAMLAgent's own, this trainer's from an earlier call, or
        a new one) and the iteration it starts at."""
        from metatrade.training.build import make_learner, rebuild_learner

        agent, family = self.agent, meta_family(self.env)
        own = getattr(agent, "learner", None)
        if own is None and self.learner is not None and resume is None:
            own = self.learner  # a second call continues this trainer's learner
        if own is not None:
            learner = rebuild_learner(self.config, own, family)
            from metatrade.agents.maml_agent import MAMLAgent

            if isinstance(agent, MAMLAgent):  # it trains its own learner
                agent.learner, agent.meta_config = learner, learner.config
        else:
            policy = self._policy().to(resolve_device(self.config.run.device))
            learner = make_learner(self.config, family, policy, self.rng)
        self.learner = learner
        start = int(learner.iteration) if own is not None else 0
        if resume is not None:
            start = self._restore(resume, learner, META_KIND)
        return learner, start

    def _policy(self) -> torch.nn.Module:
        agent = self.agent
        if agent is None:
            from metatrade.training.build import make_policy_for

            self.agent = agent = make_policy_for(self.config, meta_family(self.env))
        return agent if isinstance(agent, torch.nn.Module) else agent.policy

    def _restore(self, resume: str | Path, target: Any, kind: str) -> int:
        """Load checkpoint ``resume`` into ``target`` (a MetaLearner, or for PPO a
        ``(PPOAgent, env)`` pair) and the RNG streams; returns its iteration."""
        iteration, self.run_id = restore_run(
            resume, target, kind, config=self.config, rng=self.rng, run_dir=self.run_dir
        )
        return iteration

    def _checkpoints(self, path: Path | None, kind: str, total: int, start: int) -> LoopCheckpoints:
        from metatrade.training.task_sets import training_task_names

        # the exact meta-training tasks: evaluate/adapt/backtest refuse them (issue #11)
        extra = {"train_tasks": training_task_names(self.env)} if kind == META_KIND else None
        return LoopCheckpoints(
            path,
            kind,
            self.config,
            self.rng,
            interval=self.checkpoint_interval,
            total=total,
            start=start,
            extra=extra,
            run_id=self.run_id,
        )

    def _locked(self, run_dir: Path | None) -> contextlib.AbstractContextManager[Any]:
        return run_dir_lock(run_dir) if run_dir is not None else contextlib.nullcontext()

    def claim_meta_run(self) -> None:
        """Claim the run directory for a fresh meta-training run now, as ``meta_train`` would
        (``overwrite`` moves the old run aside), so a ``PretrainingJob`` can rely on it.
        Hold ``io.run_dir_lock`` around this and ``meta_train``."""
        self._claim(META_KIND)

    def _claim(self, kind: str) -> None:
        """A fresh run of ``kind`` may write the run directory (once per trainer: a second
        call continues what this trainer wrote); it takes the directory's run id."""
        if self.run_dir is not None and kind not in self._claimed:
            self.run_id, moved = claim_run_dir(self.run_dir, kind, overwrite=self.overwrite)
            if moved is not None:
                self.replaced = moved
                notice(f"overwrite: the replaced run was moved to {moved}")
            self._claimed.add(kind)

    def _open_logger(self, run_dir: Path | None, start: int) -> MetricsLogger | None:
        if run_dir is None:
            return None
        save_config(self.config, run_dir / "config.yaml")
        logger = MetricsLogger(run_dir / "logs", tensorboard=self.tensorboard)
        logger.truncate(start)
        return logger

    def _record(
        self,
        bar: Any,
        task: Any,
        logger: MetricsLogger | None,
        saver: LoopCheckpoints,
        state: Any,
        done: int,
        total: int,
        metrics: dict[str, float],
    ) -> None:
        """One finished iteration: history, CSV/TensorBoard row, its checkpoint (``saver``;
        ``state()`` the learner's state), then the progress bar and summary line, so an
        iteration shown as done is one a Ctrl-C keeps."""
        self.history.append(metrics)
        if logger is not None:
            logger.log(done, metrics)
        saver.after(done, state)
        bar.update(task, completed=done, status=status_text(metrics))
        if done % self.log_interval == 0 or done == total:
            bar.console.print(summary_line(done, total, metrics), highlight=False, soft_wrap=True)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The current meta-parameters (after ``meta_train``)."""
        if self.learner is None:
            raise RuntimeError("no meta-learner yet: call meta_train() first")
        return dict(self.learner.params)

    # ---- standard RL --------------------------------------------------------------------
    def train(
        self, total_timesteps: int | None = None, *, resume: str | Path | None = None
    ) -> dict[str, float]:
        """Train ``self.agent`` (a PPOAgent) on ``self.env`` (a BatchEnv); returns last logs.

        The budget is ``total_timesteps``, else ``num_episodes`` full episodes per env slot,
        else ``ppo.total_timesteps``. Writes under ``<run_dir>/ppo``: ``config.yaml``,
        ``logs/``, ``checkpoints/last.pt`` (every ``checkpoint_interval`` PPO iterations;
        ``resume=`` continues it bit for bit) and the agent, ``checkpoints/ppo.pt``.

        Raises:
            TrainingInterrupted: on Ctrl-C, after saving the last completed iteration.
        """
        env = ppo_batch_env(self.env)
        agent = self.agent = ppo_agent_for(self.config, env, self.agent)
        if total_timesteps is None:
            if self.num_episodes is not None:
                slots = env.num_tasks * env.episodes_per_task
                total_timesteps = self.num_episodes * env.max_episode_steps * slots
            else:
                total_timesteps = self.config.ppo.total_timesteps
        run_dir = self.run_dir / PPO_DIR if self.run_dir is not None else None
        with self._locked(run_dir):
            start = 0
            if resume is not None:
                start = self._restore(resume, agent, PPO_KIND)
            else:
                self._claim(PPO_KIND)
            last = self._ppo_loop(run_dir, total_timesteps, start=start, resume=resume is not None)
            if run_dir is not None:
                agent.save_model(run_dir / "checkpoints" / "ppo.pt", run=run_record(self.run_id))
        record_training(self, "train")
        return last

    def _ppo_loop(
        self, run_dir: Path | None, total_timesteps: int, *, start: int, resume: bool
    ) -> dict[str, float]:
        """PPO iterations ``start + 1 ..`` with logs and checkpoints (see ``train``)."""
        env = ppo_batch_env(self.env)
        agent = ppo_agent_for(self.config, env, self.agent)
        total = agent.num_iterations(env, total_timesteps)
        if start >= total:
            raise CheckpointError(
                f"the PPO run in {run_dir} is already at iteration {start} of {total}: nothing "
                "to do; raise the budget (train --timesteps N) to train further"
            )
        path = checkpoint_path(run_dir) if run_dir is not None else None
        saver = self._checkpoints(path, PPO_KIND, total, start)
        logger = self._open_logger(run_dir, start)
        last: dict[str, float] = {}
        try:
            with progress_bar("train", total, start, self.progress) as (bar, task):

                def log_fn(logs: dict[str, float], num_timesteps: int) -> None:
                    nonlocal last
                    if bad := non_finite(dict(agent.policy.named_parameters())):
                        raise saver.diverged("PPO training", agent.iteration, bad)
                    last = {k: float(v) for k, v in logs.items()}
                    last["time/total_timesteps"] = float(num_timesteps)
                    state = functools.partial(agent.training_state, env)
                    self._record(bar, task, logger, saver, state, agent.iteration, total, last)

                agent.learn(env, total_timesteps, log_fn=log_fn, resume=resume)
        except KeyboardInterrupt:
            raise saver.interrupted("PPO training") from None
        finally:
            if logger is not None:
                logger.close()
        return last

    # ---- reports ------------------------------------------------------------------------
    def run_backtest_and_report(
        self, agent: Any, env: Any, out_dir: str | Path | None = None, *, echo: bool = True
    ) -> dict[str, Any]:
        """Backtest ``agent`` over a whole split of ``env`` (a TradingEnv): the report
        (``commands.backtest_and_report``) into ``out_dir`` (default ``<run_dir>/reports``)."""
        from metatrade.training.commands import backtest_and_report

        if out_dir is None and self.run_dir is not None:
            out_dir = self.run_dir / "reports"
        return backtest_and_report(
            agent, env, out_dir, stress_bps=self.config.evaluation.stress_cost_bps, echo=echo
        )
