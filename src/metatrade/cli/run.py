"""``metatrade meta-train | train | adapt | backtest | evaluate | demo``.

Thin: each command resolves a ``RunConfig`` (``--config`` YAML + ``--data``, ``--tasks``,
``--seed``, ``--out``), then calls the Trainer, the factories in ``training.build`` and the
evaluation layer. Bad input (``metatrade.errors.UserError``: config, data, checkpoint; or an
``OSError``: a missing file, no permission, a full disk) ends with a one-line error and exit
code 2 (set ``METATRADE_DEBUG=1`` to see the traceback); any other exception is a bug and
shows its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from metatrade.cli import app
from metatrade.errors import ConfigError, UserError
from metatrade.runtime import configure_cpu
from metatrade.training.config import RunConfig, apply_overrides, load_config

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
ResumeOpt = typer.Option(False, "--resume", help="continue the run directory's run")
OverwriteOpt = typer.Option(
    False, "--overwrite", help="replace what an earlier run wrote in the run directory"
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
        except KeyboardInterrupt as exc:
            # TrainingInterrupted says what was saved; a command that can continue says how
            what = getattr(exc, "message", "interrupted")
            hint = getattr(exc, "resume_command", None)
            err_console.print(f"{what}; continue with: {hint}" if hint else what)
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


@contextlib.contextmanager
def _writing(run_dir: Path, resume_command: str | None = None) -> Iterator[Path]:
    """Hold ``run_dir``'s lock; on Ctrl-C attach the command that continues the run."""
    from metatrade.io import run_dir_lock

    with run_dir_lock(run_dir) as path:
        try:
            yield path
        except KeyboardInterrupt as exc:
            exc.resume_command = resume_command  # type: ignore[attr-defined]
            if not hasattr(exc, "message"):
                exc.message = "interrupted; the run directory keeps its last checkpoints"  # type: ignore[attr-defined]
            raise


def _fresh_output(folder: Path, *, overwrite: bool) -> None:
    """Refuse to replace an earlier command's results in ``folder`` without --overwrite."""
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        from metatrade.io import RunDirError

        raise RunDirError(
            f"{folder} already holds results of an earlier run of this command; pass "
            "--overwrite to replace them or --out DIR to write elsewhere"
        )


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
    overwrite: bool = OverwriteOpt,
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
    cfg = _run_name(_config(config, data, tasks, seed, out, strict=strict), config)
    given = {"run.backend": backend, "run.address": address, "run.workers": workers}
    backend_overrides = {k: v for k, v in given.items() if v is not None}
    run_dir = cfg.run_dir()
    with _writing(run_dir, f"metatrade meta-train --resume --out {run_dir}"):
        _meta_train(
            cfg, config=config, cli=(data, tasks, seed), iterations=iterations, resume=resume,
            overwrite=overwrite, progress=progress, backend_overrides=backend_overrides,
        )  # fmt: skip


def _meta_train(
    cfg: RunConfig,
    *,
    config: str | None,
    cli: tuple[Path | None, str | None, int | None],
    iterations: int | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
    backend_overrides: dict[str, Any],
) -> None:
    from metatrade.training.build import make_family
    from metatrade.training.checkpoint import checkpoint_path
    from metatrade.training.trainer import Trainer

    data, tasks, seed = cli
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
    cfg = apply_overrides(cfg, backend_overrides)  # --backend/--address/--workers, also on resume
    console.print(
        f"meta-train: family={cfg.data.family} optimizer={cfg.meta.optimizer} "
        f"iterations={cfg.meta.num_meta_iterations} seed={cfg.run.seed} -> {run_dir}"
    )
    show = None if progress else False
    family = make_family(cfg)
    trainer = Trainer(family, None, config=cfg, run_dir=run_dir, progress=show, overwrite=overwrite)
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
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bar"),
    strict: bool = StrictOpt,
) -> None:
    """Train PPO on the training tasks (all of them together: the multi-task baseline).
    Writes under <run dir>/ppo, beside a meta-training run, where evaluate finds it."""
    from metatrade.training.build import make_family, multitask_env
    from metatrade.training.checkpoint import PPO_DIR, checkpoint_path
    from metatrade.training.trainer import Trainer

    cfg = _run_name(_config(config, data, tasks, seed, out, strict=strict), config)
    run_dir = cfg.run_dir()
    own = run_dir / PPO_DIR
    with _writing(own, f"metatrade train --resume --out {run_dir}"):
        last = checkpoint_path(own)
        if resume and config is None and (own / "config.yaml").is_file():
            cfg = load_config(
                own / "config.yaml", seed=seed, tasks=tasks, data_dir=data, out_dir=run_dir
            )
        if resume and not last.is_file():
            console.print(f"no checkpoint in {own}: starting from iteration 0")
        env = multitask_env(cfg, make_family(cfg))
        console.print(
            f"train (PPO): {env.num_tasks} tasks x {env.episodes_per_task} episodes, "
            f"seed={cfg.run.seed} -> {own}"
        )
        show = None if progress else False
        trainer = Trainer(
            env, None, config=cfg, run_dir=run_dir, progress=show, overwrite=overwrite
        )
        trainer.train(total_timesteps=timesteps, resume=last if resume and last.is_file() else None)
    console.print(f"agent saved to {own / 'checkpoints' / 'ppo.pt'}")


# ---- adapt / backtest / evaluate ----------------------------------------------------------
def _output_dir(checkpoint: Path, out: Path | None) -> Path:
    """``--out``, else the run directory of ``<run>/checkpoints/<file>.pt`` (or of a run
    directory), else the folder of a loose checkpoint file: never a folder above it."""
    from metatrade.training.checkpoint import CHECKPOINT_DIR

    if out is not None:
        return Path(out)
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent


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
    run_dir = _output_dir(path, out)
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
    from metatrade.training.task_sets import make_loader, task_pool

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
    overwrite: bool = OverwriteOpt,
) -> None:
    """Meta-test: adapt MAML / PPO / random init on held-out tasks (k = 0..3) vs baselines.
    The run's own config (stored in the checkpoint) sets everything else."""
    from metatrade.training.checkpoint import resolve_checkpoint
    from metatrade.training.commands import run_meta_test

    with _writing(_output_dir(checkpoint, out)) as run_dir:
        _fresh_output(run_dir / "eval", overwrite=overwrite)
        cfg, policy, run_dir, extra = _load_run(checkpoint, data, tasks, seed, out)
        if ppo is None:
            # The baseline trained next to the meta-policy (<run>/ppo/checkpoints/ppo.pt).
            source = _output_dir(resolve_checkpoint(checkpoint), None)
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
    overwrite: bool = OverwriteOpt,
) -> None:
    """Adapt the meta-policy to each task with k inner steps on its adaptation window."""
    from metatrade.training.commands import adapt_to_tasks

    with _writing(_output_dir(checkpoint, out)) as run_dir:
        _fresh_output(run_dir / "adapted", overwrite=overwrite)
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
    overwrite: bool = OverwriteOpt,
) -> None:
    """Backtest the (optionally adapted) meta-policy over a whole split of each task."""
    from metatrade.training.commands import backtest_tasks

    if split not in ("train", "validation", "test"):
        raise ConfigError(f"--split: expected train, validation or test, got {split!r}")
    with _writing(_output_dir(checkpoint, out)) as run_dir:
        _fresh_output(run_dir / "reports", overwrite=overwrite)
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
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bars"),
    strict: bool = StrictOpt,
) -> None:
    """The main job: meta-train on the embedded data, pretrain the PPO baseline with the same
    env-step budget, evaluate both on held-out tasks against baselines, print the reports."""
    from metatrade.training.demo import run_demo

    cfg = _run_name(
        _config(config, data, tasks, seed, out, default="demo", strict=strict), config or "demo"
    )
    run_dir = cfg.run_dir()
    again = f"metatrade demo{f' -c {config}' if config else ''} --resume --out {run_dir}"
    with _writing(run_dir, again):
        run_demo(cfg, console=console, progress=progress, resume=resume, overwrite=overwrite)
