"""``metatrade meta-train | train | demo``: the commands that train and write a run.

Thin: each command resolves a ``RunConfig`` (``--config`` YAML + ``--data``, ``--tasks``,
``--seed``, ``--out``), locks the run directory and calls the Trainer (``cli.common`` has
what the commands share; ``cli.evaluate`` the commands that read a run).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from metatrade.cli import app
from metatrade.cli.common import (
    SEEDED,
    ConfigOpt,
    DataOpt,
    OutOpt,
    OverwriteOpt,
    ResumeOpt,
    SeedOpt,
    SeedsOpt,
    StrictOpt,
    TasksOpt,
    _config,
    _run_name,
    _writing,
    cli_errors,
    resume_command,
    seeds_from,
)
from metatrade.cli.output import console
from metatrade.training.config import RunConfig, apply_overrides, load_config
from metatrade.training.multiseed import seed_run_dir


# ---- meta-train -------------------------------------------------------------------------
@app.command("meta-train", context_settings=SEEDED)
@cli_errors
def meta_train_cmd(
    ctx: typer.Context,
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
    seeds: str | None = SeedsOpt,
) -> None:
    """Meta-train a policy with MAML; writes config, logs and checkpoints to the run dir.
    --seeds 0 1 2: one run per seed, <out>-seed<S> (default runs/<name>-seed<S>), each a
    trial in the registry; evaluate/walkforward --checkpoint <out> --seeds 0 1 2 pool them."""
    given = {"run.backend": backend, "run.address": address, "run.workers": workers}
    backend_overrides = {k: v for k, v in given.items() if v is not None}
    extra = ("-n", str(iterations)) if iterations is not None else ()
    runs: list[int | None] = [*seeds_from(seeds, ctx, seed)] or [seed]  # one run: --seed's
    for one in runs:
        where = out if seeds is None or out is None or one is None else seed_run_dir(out, one)
        cfg = _run_name(_config(config, data, tasks, one, where, strict=strict), config)
        run_dir = cfg.run_dir()
        again = resume_command(
            "meta-train", config=config, data=data, tasks=tasks, seed=one, out=run_dir, extra=extra
        )
        with _writing(run_dir, again):
            _meta_train(
                cfg,
                config=config,
                cli=(data, tasks, one),
                iterations=iterations,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
                backend_overrides=backend_overrides,
            )


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
    from metatrade.agents.networks.base import Policy
    from metatrade.io import run_dir_lock
    from metatrade.training.build import make_family
    from metatrade.training.checkpoint import checkpoint_path
    from metatrade.training.pretrained import PretrainingJob, pretrained_for_run
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
    given = {"meta.num_meta_iterations": iterations, **backend_overrides}
    # -n, --backend/--address/--workers (also on resume), validated as the config keys they set
    cfg = apply_overrides(cfg, {k: v for k, v in given.items() if v is not None})
    console.print(
        f"meta-train: family={cfg.data.family} optimizer={cfg.meta.optimizer} "
        f"iterations={cfg.meta.num_meta_iterations} seed={cfg.run.seed} -> {run_dir}"
    )
    show = None if progress else False
    family = make_family(cfg)
    trainer = Trainer(family, None, config=cfg, run_dir=run_dir, progress=show, overwrite=overwrite)
    resumed = resume_from is not None
    t0 = time.perf_counter()
    with run_dir_lock(run_dir):
        if not resumed:
            trainer.claim_meta_run()  # (--overwrite moves the old run aside before the child)
        # the exact estimator's "pretrained" row of evaluate, trained beside meta-training
        job = PretrainingJob.start_if_useful(cfg, resume=resumed)
        try:
            trainer.meta_train(resume=resume_from)
        except BaseException:
            if job is not None:
                job.stop()
            raise
    console.print(
        f"done in {time.perf_counter() - t0:.1f} s; checkpoint {checkpoint_path(run_dir)}"
    )
    policy = trainer._policy()
    if isinstance(policy, Policy):  # a trading family's policy (not 2-D navigation's toy)
        pretrained_for_run(
            cfg, family, policy, console, resume=resumed, run_id=trainer.run_id, job=job
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
    Writes under <run dir>/ppo, beside a meta-training run, where evaluate finds it
    (--out is the run directory; an --out that ends in /ppo is taken as that folder)."""
    from metatrade.training.build import make_family, multitask_env
    from metatrade.training.checkpoint import PPO_DIR, checkpoint_path
    from metatrade.training.trainer import Trainer

    if out is not None and Path(out).name == PPO_DIR:  # `--out RUN/ppo` names the ppo folder
        console.print(f"--out {out}: the PPO baseline of run directory {Path(out).parent}")
        out = Path(out).parent
    cfg = _run_name(_config(config, data, tasks, seed, out, strict=strict), config)
    run_dir = cfg.run_dir()
    own = run_dir / PPO_DIR
    extra = ("--timesteps", str(timesteps)) if timesteps is not None else ()
    again = resume_command(
        "train", config=config, data=data, tasks=tasks, seed=seed, out=run_dir, extra=extra
    )
    with _writing(own, again):
        last = checkpoint_path(own)
        if resume and config is None and (own / "config.yaml").is_file():
            cfg = load_config(
                own / "config.yaml", seed=seed, tasks=tasks, data_dir=data, out_dir=run_dir
            )
        if resume and not last.is_file():
            console.print(f"no checkpoint in {own}: starting from iteration 0")
        if timesteps is not None:  # validated as the key it sets (0 is an error, not a no-op)
            cfg = apply_overrides(cfg, {"ppo.total_timesteps": timesteps})
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
    again = resume_command("demo", config=config, data=data, tasks=tasks, seed=seed, out=run_dir)
    with _writing(run_dir, again):
        run_demo(cfg, console=console, progress=progress, resume=resume, overwrite=overwrite)
