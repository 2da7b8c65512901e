"""``metatrade meta-train | train | adapt | backtest | evaluate | demo``.

Thin: each command resolves a ``RunConfig`` (``--config`` YAML + ``--data``, ``--tasks``,
``--seed``, ``--out``), then calls the Trainer, the factories in ``training.build`` and the
evaluation layer. Bad input (``metatrade.errors.UserError``: config, data, checkpoint; or an
``OSError``: a missing file, no permission, a full disk) ends with a one-line error and exit
code 2 (set ``METATRADE_DEBUG=1`` to see the traceback); any other exception is a bug and
shows its traceback.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from metatrade.cli import app
from metatrade.errors import ConfigError, UserError
from metatrade.runtime import configure_cpu
from metatrade.training.config import RunConfig, apply_overrides, load_config, save_config

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = typer.Option(
    None, "--config", "-c", help="YAML config (a file, or a packaged name: demo, tiny, nav2d)"
)
DataOpt = typer.Option(None, "--data", help="folder of OHLCV files (default: embedded data)")
TasksOpt = typer.Option(None, "--tasks", help="tasks to use, e.g. Nifty:5,Finnifty:15")
SeedOpt = typer.Option(None, "--seed", help="seed of every random stream (default: config)")
OutOpt = typer.Option(None, "--out", help="run directory (default: runs/<name>-seed<seed>)")
CheckpointOpt = typer.Option(
    ..., "--checkpoint", help="a meta-train run directory or checkpoint file"
)
StrictOpt = typer.Option(
    False, "--strict", help="stop on any unusable data file (default: skip it with a warning)"
)
AllowSeenOpt = typer.Option(
    False,
    "--allow-seen",
    help="evaluate tasks the run meta-trained on anyway (flagged in the output)",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the user can fix: ``UserError`` (config, data, checkpoint) and ``OSError`` (a
    missing file, an --out under a regular file, no permission, a full disk). A plain
    ``ValueError``/``KeyError``/... is a bug: it keeps its traceback."""
    from metatrade.agents.checkpoint import CheckpointError  # until it is errors.CheckpointError

    return (UserError, CheckpointError, OSError)


def cli_errors(func: F) -> F:
    """Turn bad-input exceptions into ``error: <message>`` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except _user_errors() as err:
            if os.environ.get("METATRADE_DEBUG"):
                raise
            message = " ".join(str(err).split())
            err_console.print(f"[red]error:[/red] {message}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; continue with --resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _config(
    config: str | None,
    data: Path | None,
    tasks: str | None,
    seed: int | None,
    out: Path | None,
    default: str | None = None,
    strict: bool = False,
) -> RunConfig:
    overrides = {"data.strict": True} if strict else None
    cfg = load_config(
        config or default, seed=seed, tasks=tasks, data_dir=data, out_dir=out, overrides=overrides
    )
    configure_cpu(cfg.run.torch_threads, cfg.run.keep_freed_memory)
    return cfg


def _run_name(cfg: RunConfig, config: str | None) -> RunConfig:
    """Name default run directories after the config file (runs/<stem>-seed<seed>)."""
    if cfg.run.name is None and cfg.run.out_dir is None and config:
        return cfg.model_copy(
            update={"run": cfg.run.model_copy(update={"name": Path(config).stem})}
        )
    return cfg


# ---- meta-train -------------------------------------------------------------------------
@app.command("meta-train")
@cli_errors
def meta_train_cmd(
    config: str | None = ConfigOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    iterations: int | None = typer.Option(
        None, "--iterations", "-n", help="meta-iterations (default: meta.num_meta_iterations)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the run directory's last checkpoint"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bar"),
    strict: bool = StrictOpt,
    backend: str | None = typer.Option(
        None, "--backend", help="batched | local | ray (default: run.backend; docs/distributed.md)"
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto or host:port (default: run.address)"
    ),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors (default: run.workers)"),
) -> None:
    """Meta-train a policy with MAML; writes config, logs and checkpoints to the run dir."""
    from metatrade.training.build import make_family
    from metatrade.training.checkpoint import checkpoint_path
    from metatrade.training.trainer import Trainer

    cfg = _run_name(_config(config, data, tasks, seed, out, strict=strict), config)
    run_dir = cfg.run_dir()
    resume_from = None
    if resume:
        saved = run_dir / "config.yaml"
        if config is None and saved.is_file():
            cfg = load_config(saved, seed=seed, tasks=tasks, data_dir=data, out_dir=run_dir)
        if checkpoint_path(run_dir).is_file():
            resume_from = checkpoint_path(run_dir)
        else:
            console.print(f"no checkpoint in {run_dir}: starting from iteration 0")
    if iterations is not None:
        cfg = cfg.model_copy(update={"meta": replace(cfg.meta, num_meta_iterations=iterations)})
    given = {"run.backend": backend, "run.address": address, "run.workers": workers}
    cfg = apply_overrides(cfg, {k: v for k, v in given.items() if v is not None})
    console.print(
        f"meta-train: family={cfg.data.family} optimizer={cfg.meta.optimizer} "
        f"iterations={cfg.meta.num_meta_iterations} seed={cfg.run.seed} -> {run_dir}"
    )
    trainer = Trainer(
        make_family(cfg), None, config=cfg, run_dir=run_dir, progress=None if progress else False
    )
    t0 = time.perf_counter()
    trainer.meta_train(resume=resume_from)
    console.print(
        f"done in {time.perf_counter() - t0:.1f} s; checkpoint {checkpoint_path(run_dir)}"
    )


# ---- train (PPO) ------------------------------------------------------------------------
@app.command("train")
@cli_errors
def train_cmd(
    config: str | None = ConfigOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    timesteps: int | None = typer.Option(
        None, "--timesteps", help="environment steps (default: ppo.total_timesteps)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bar"),
    strict: bool = StrictOpt,
) -> None:
    """Train PPO on the training tasks (all of them together: the multi-task baseline)."""
    from metatrade.training.build import make_family, multitask_env
    from metatrade.training.trainer import Trainer

    cfg = _run_name(_config(config, data, tasks, seed, out, strict=strict), config)
    run_dir = cfg.run_dir()
    env = multitask_env(cfg, make_family(cfg))
    console.print(
        f"train (PPO): {env.num_tasks} tasks x {env.episodes_per_task} episodes, "
        f"seed={cfg.run.seed} -> {run_dir}"
    )
    trainer = Trainer(env, None, config=cfg, run_dir=run_dir, progress=None if progress else False)
    trainer.train(total_timesteps=timesteps)
    console.print(f"agent saved to {run_dir / 'checkpoints' / 'ppo.pt'}")


# ---- adapt / backtest / evaluate ----------------------------------------------------------
def _load_run(
    checkpoint: Path, data: Path | None, tasks: str | None, seed: int | None, out: Path | None
) -> tuple[RunConfig, Any, Path, dict[str, Any]]:
    """The run's config (with the CLI's data/tasks/seed/out applied), its meta-policy, the
    output directory and what evaluating needs besides: ``trained`` (the run's exact
    meta-training tasks) and ``inner_lrs`` (its learned Meta-SGD step sizes, or None)."""
    from metatrade.training.build import load_inner_lrs, load_meta_policy
    from metatrade.training.checkpoint import load_run_checkpoint, resolve_checkpoint
    from metatrade.training.config import apply_overrides, parse_tasks

    path = resolve_checkpoint(checkpoint)
    ck_cfg, state = load_run_checkpoint(path)
    flat: dict[str, Any] = {}
    if data is not None:
        flat["data.data_dir"] = str(data)
    if seed is not None:
        flat["run.seed"] = seed
    run_dir = Path(out) if out is not None else path.parent.parent
    flat["run.out_dir"] = str(run_dir)
    if tasks is not None:
        # Named tasks are the evaluation tasks: hold exactly them out, train on none of them.
        names = parse_tasks(tasks)
        flat["data.tasks"] = None
        flat["data.heldout.tasks"] = names
        flat["data.heldout.instruments"] = []
        flat["data.heldout.timeframes"] = []
    cfg = apply_overrides(ck_cfg, flat)
    if cfg.data.family == "nav2d":
        raise ConfigError(
            f"checkpoint {path}: a nav2d run; adapt/backtest/evaluate work on trading and "
            "synthetic runs (for nav2d see benchmarks/nav2d_maml.py)"
        )
    policy = load_meta_policy(cfg, state, path)
    extra = {"trained": _trained_tasks(ck_cfg, state), "inner_lrs": load_inner_lrs(state)}
    return cfg, policy, run_dir, extra


def _trained_tasks(ck_cfg: RunConfig, state: dict[str, Any]) -> list[str] | None:
    """The checkpoint's record of its meta-training tasks; for a checkpoint written before
    it kept one, the tasks its own config trains on (None if that data is gone)."""
    recorded = (state.get("extra") or {}).get("train_tasks")
    if recorded is not None:
        return list(recorded)
    from metatrade.training.build import make_loader, task_pool

    try:
        return [str(t) for t in task_pool(ck_cfg, make_loader(ck_cfg), "train")]
    except UserError:
        return None


@app.command("evaluate")
@cli_errors
def evaluate_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    ppo: Path | None = typer.Option(
        None,
        "--ppo",
        help="PPO baseline agent file (default: the run's ppo/checkpoints/ppo.pt if any)",
    ),
    allow_seen: bool = AllowSeenOpt,
) -> None:
    """Meta-test: adapt MAML / PPO / random init on held-out tasks (k = 0..3) vs baselines.
    The run's own config (stored in the checkpoint) sets everything else."""
    from metatrade.training.build import run_meta_test
    from metatrade.training.checkpoint import resolve_checkpoint

    cfg, policy, run_dir, extra = _load_run(checkpoint, data, tasks, seed, out)
    if ppo is None:
        # The baseline trained next to the meta-policy (demo: <run>/ppo/checkpoints/ppo.pt).
        source = resolve_checkpoint(checkpoint).parent.parent
        found = [source / "ppo" / "checkpoints" / "ppo.pt", source / "checkpoints" / "ppo.pt"]
        ppo = next((p for p in found if p.is_file()), None)
    run_meta_test(
        cfg, policy, run_dir, ppo_path=ppo, console=console, allow_seen=allow_seen, **extra
    )


@app.command("adapt")
@cli_errors
def adapt_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    steps: int = typer.Option(1, "--steps", "-k", min=0, help="inner adaptation steps"),
    allow_seen: bool = AllowSeenOpt,
) -> None:
    """Adapt the meta-policy to each task with k inner steps on its adaptation window."""
    from metatrade.training.build import adapt_to_tasks

    cfg, policy, run_dir, extra = _load_run(checkpoint, data, tasks, seed, out)
    adapt_to_tasks(cfg, policy, run_dir, steps, console=console, allow_seen=allow_seen, **extra)


@app.command("backtest")
@cli_errors
def backtest_cmd(
    checkpoint: Path = CheckpointOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    steps: int = typer.Option(0, "--steps", "-k", min=0, help="adapt with k steps first"),
    split: str = typer.Option(
        "test", "--split", help="time split to backtest: train/validation/test"
    ),
    allow_seen: bool = AllowSeenOpt,
) -> None:
    """Backtest the (optionally adapted) meta-policy over a whole split of each task."""
    from metatrade.training.build import backtest_tasks

    if split not in ("train", "validation", "test"):
        raise ConfigError(f"--split: expected train, validation or test, got {split!r}")
    cfg, policy, run_dir, extra = _load_run(checkpoint, data, tasks, seed, out)
    backtest_tasks(
        cfg, policy, run_dir, steps, split, console=console, allow_seen=allow_seen, **extra
    )


# ---- demo -------------------------------------------------------------------------------
@app.command("demo")
@cli_errors
def demo_cmd(
    config: str | None = ConfigOpt,
    data: Path | None = DataOpt,
    tasks: str | None = TasksOpt,
    seed: int | None = SeedOpt,
    out: Path | None = OutOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bars"),
    strict: bool = StrictOpt,
) -> None:
    """The main job: meta-train on the embedded data, pretrain the PPO baseline with the same
    env-step budget, evaluate both on held-out tasks against baselines, print the reports."""
    from metatrade.training.demo import run_demo

    cfg = _run_name(
        _config(config, data, tasks, seed, out, default="demo", strict=strict), config or "demo"
    )
    save_config(cfg, cfg.run_dir() / "config.yaml")
    run_demo(cfg, console=console, progress=progress)
