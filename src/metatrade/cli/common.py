"""What every ``metatrade`` run command shares: the options, the error wrapper (a user
error is one line and exit 2, a bug keeps its traceback), resolving a ``RunConfig``, locking
the run directory, and loading a meta-training run's checkpoint.

Bad input (``metatrade.errors.UserError``: config, data, checkpoint; or an ``OSError``: a
missing file, no permission, a full disk) ends with a one-line error and exit code 2 (set
``METATRADE_DEBUG=1`` to see the traceback); any other exception is a bug and shows its
traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from metatrade.cli.output import err_console
from metatrade.errors import ConfigError, UserError
from metatrade.runtime import configure_cpu
from metatrade.training.config import RunConfig, load_config

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
StepsOpt = typer.Option(
    None,
    "--steps",
    "-k",
    min=0,
    help="inner adaptation steps (default: the run's meta.num_inner_steps, the k its "
    "meta-training optimised the adapted return for)",
)
ResumeOpt = typer.Option(False, "--resume", help="continue the run directory's run")
FinalOpt = typer.Option(
    False,
    "--final",
    help="score the sealed test split: a final act, each look recorded in the trial "
    "registry (default: the validation split, what choosing a setting may read)",
)
SeedsOpt = typer.Option(
    None,
    "--seeds",
    help="training seeds, e.g. --seeds 0 1 2: one run per seed (<run>-seed<S>), each "
    "figure per seed, its spread and pooled",
)
SEEDED = {"allow_extra_args": True}
"""context settings of a command with ``--seeds``: the values after the first arrive as
extra arguments (click options take one value), ``seeds_from`` gathers them"""
OverwriteOpt = typer.Option(
    False, "--overwrite", help="replace what an earlier run wrote in the run directory"
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """What the user can fix: ``UserError`` (config, data, checkpoint) and ``OSError`` (a
    missing file, an --out under a regular file, no permission, a full disk). A plain
    ``ValueError``/``KeyError``/... is a bug: it keeps its traceback."""
    from metatrade.agents.checkpoint import CheckpointError  # until it is errors.CheckpointError

    return (UserError, CheckpointError, OSError)


def _one_line_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kw: Any
) -> None:
    """A user warning (e.g. ``DataWarning``: a skipped file) as one ``warning:`` line on
    stderr, not Python's two lines with a source line; others as Python shows them."""
    if issubclass(category, UserWarning):
        err_console.print(f"[yellow]warning:[/yellow] {' '.join(str(message).split())}")
    else:
        _show_warning(message, category, *args, **kw)


_show_warning = warnings.showwarning


def cli_errors(func: F) -> F:
    """Turn bad-input exceptions into ``error: <message>`` and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(), _first_interrupt_only():
                warnings.showwarning = _one_line_warning
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


@contextlib.contextmanager
def _first_interrupt_only() -> Iterator[None]:
    """The first Ctrl-C stops the command (KeyboardInterrupt: it saves what it must and says
    how to continue); every later one only prints "stopping, please wait", so quick repeated
    presses never cut that save short or print a traceback. After a press the command is
    ending: Ctrl-C stays ignored to the process's exit (SIG_IGN, which the interpreter keeps
    while it shuts down; a Python handler would be reset to the default there and a late press
    would kill the process). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        pressed.append(signum)
        if len(pressed) == 1:
            raise KeyboardInterrupt
        print("stopping, please wait", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN if pressed else previous)


def resume_command(
    command: str,
    *,
    config: str | None,
    data: Path | None,
    tasks: str | None,
    seed: int | None,
    out: Path,
    extra: tuple[str, ...] = (),
) -> str:
    """The command line that continues an interrupted run as it was started: the same
    config, data folder, tasks and seed (paths absolute, so it works from any directory),
    ``--resume --out <run>``; ``extra``: the command's own options (e.g. ``-n 200``)."""
    words = ["metatrade", command]
    if config is not None:
        words += ["-c", os.path.abspath(config) if Path(config).is_file() else config]
    if data is not None:
        words += ["--data", os.path.abspath(data)]
    if tasks is not None:
        words += ["--tasks", tasks]
    if seed is not None:
        words += ["--seed", str(seed)]
    words += [*extra, "--resume", "--out", os.path.abspath(out)]
    return shlex.join(words)


def seeds_from(first: str | None, ctx: typer.Context, seed: int | None = None) -> list[int]:
    """``--seeds 0 1 2`` (or ``--seeds 0,1,2``) as a list (empty without the option); any
    other extra argument, a non-integer seed, a repeated one or ``--seed`` beside it is a
    ``ConfigError``."""
    extra = list(ctx.args)
    if first is None:
        if extra:
            raise ConfigError(f"unexpected argument(s) {' '.join(extra)}: see --help")
        return []
    words = [w for part in [first, *extra] for w in part.replace(",", " ").split()]
    if not all(w.lstrip("-").isdigit() for w in words):
        raise ConfigError(f"--seeds {' '.join(words)}: integer seeds, e.g. --seeds 0 1 2")
    seeds = [int(w) for w in words]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(words)}: a seed appears twice")
    if seed is not None:
        raise ConfigError("--seed and --seeds: give one (--seeds runs one run per seed)")
    return seeds


def command_line(command: str) -> str:
    """The command as typed (what a look at the test split records): ``metatrade <args>``
    from ``sys.argv`` when run as ``metatrade``, else ``metatrade <command>``."""
    if Path(sys.argv[0]).name == "metatrade":
        return shlex.join(["metatrade", *sys.argv[1:]])
    return f"metatrade {command}"


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
    """Refuse to replace an earlier command's results in ``folder`` without --overwrite; with
    it, the whole folder goes (no result of the earlier run stays beside the new ones)."""
    from metatrade.io import LOCK_NAME, RunDirError

    found = [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []
    if found and not overwrite:
        raise RunDirError(
            f"{folder} already holds results of an earlier run of this command; pass "
            "--overwrite to replace them or --out DIR to write elsewhere"
        )
    for path in found:  # the folder's own lock (walkforward --out DIR) stays
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _run_name(cfg: RunConfig, config: str | None) -> RunConfig:
    """Name default run directories after the config file (runs/<stem>-seed<seed>)."""
    if cfg.run.name is None and cfg.run.out_dir is None and config:
        return cfg.model_copy(
            update={"run": cfg.run.model_copy(update={"name": Path(config).stem})}
        )
    return cfg


# ---- adapt / backtest / evaluate ----------------------------------------------------------
def _output_dir(checkpoint: Path, out: Path | None) -> Path:
    """``--out``, else the run directory of ``<run>/checkpoints/<file>.pt`` (or of a run
    directory), else the folder of a loose checkpoint file: never a folder above it."""
    from metatrade.training.artefacts import run_dir_of

    return Path(out) if out is not None else run_dir_of(checkpoint)


@dataclass
class LoadedRun:
    """What evaluating a run needs besides its config and policy: ``trained`` (the run's
    exact meta-training tasks), ``inner_lrs`` (its learned Meta-SGD step sizes, or None) and
    ``artefacts`` (``training.artefacts.resolve_run``: its checkpoint, PPO baseline and
    pretrained start, each checked to be of this run, never of the output folder)."""

    trained: list[str] | None
    inner_lrs: dict[str, Any] | None
    artefacts: Any

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"trained": self.trained, "inner_lrs": self.inner_lrs}

    def pretrained(self) -> dict[str, Any] | None:
        """The run's pretrained start (hash-verified), or None."""
        from metatrade.training.pretrained import load_pretrained_file

        path = self.artefacts.pretrained
        return None if path is None else load_pretrained_file(path)


def _load_run(
    checkpoint: Path, data: Path | None, tasks: str | None, seed: int | None, out: Path | None
) -> tuple[RunConfig, Any, Path, LoadedRun]:
    """The run's config (with the CLI's data/tasks/seed/out applied), its meta-policy, the
    output directory and the rest of the run (``LoadedRun``)."""
    from metatrade.training.artefacts import resolve_run
    from metatrade.training.build import load_inner_lrs, load_meta_policy
    from metatrade.training.checkpoint import load_run_checkpoint
    from metatrade.training.config import apply_overrides, parse_tasks

    artefacts = resolve_run(checkpoint)
    path = artefacts.checkpoint
    ck_cfg, state = load_run_checkpoint(path)
    flat: dict[str, Any] = {}
    if data is not None:
        flat["data.data_dir"] = str(data)
    if seed is not None:
        flat["run.seed"] = seed
    run_dir = _output_dir(path, out)
    flat["run.out_dir"] = str(run_dir)
    if ck_cfg.run.registry is None:  # the run's registry, wherever --out writes (issue 21)
        from metatrade.evaluation.registry import registry_path

        flat["run.registry"] = str(registry_path(artefacts.run_dir))
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
    run = LoadedRun(_trained_tasks(ck_cfg, state), load_inner_lrs(state), artefacts)
    return cfg, policy, run_dir, run


def _steps(cfg: RunConfig, steps: int | None) -> int:
    """``-k``, else the run's own number of inner steps: MAML optimises the return after
    exactly that many steps (Finn et al., 2017, eq. 1), so it is the k to trade."""
    return cfg.meta.num_inner_steps if steps is None else steps


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
