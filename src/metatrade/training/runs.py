"""The run directories under a folder, each summed up in its key figures, and two runs side
by side: what ``metatrade runs`` prints.

A run directory is found by its checkpoint (``checkpoint.checkpoint_path``: the
meta-training run's ``checkpoints/last.pt``; a PPO run's own ``ppo/`` folder is part of its
run, not a run of its own). Everything is read through the loaders that write it:
``checkpoint.load_run_checkpoint`` (config and completed iterations),
``checkpoint.ppo_baseline_path``, ``pretrained.load_pretrained``'s file and the last
``evaluate``'s ``eval/evaluation.json``. A directory whose checkpoint cannot be read is
listed with the reason, never skipped in silence.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from metatrade.errors import UserError
from metatrade.training.checkpoint import (
    CHECKPOINT_DIR,
    LAST,
    PPO_DIR,
    load_run_checkpoint,
    ppo_baseline_path,
)
from metatrade.training.config import RunConfig

EVALUATION = Path("eval") / "evaluation.json"
# The evaluation row summed up per run: MAML after one inner step, the adaptation MAML
# meta-trains for by default (meta.num_inner_steps: 1).
SUMMARY_ROW = ("MAML", 1)


def find_runs(root: str | Path) -> list[Path]:
    """Run directories at or under ``root`` (sorted), each holding a meta-training
    checkpoint; a ``ppo/`` folder inside a run is that run's baseline, not another run."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of run directories")
    found = {
        last.parent.parent
        for last in root.glob(f"**/{CHECKPOINT_DIR}/{LAST}")
        if last.parent.parent.name != PPO_DIR
    }
    return sorted(found)


def summarise_run(run_dir: str | Path) -> dict[str, Any]:
    """A run's key figures (one flat record; absent figures are None): its name,
    estimator and optimizer, iterations done of the total, held-out set, whether it has a
    PPO baseline / pretrained start / walk-forward report, the last evaluation's MAML k = 1
    mean test-window return and 95% interval, and when the directory was first written.
    ``name``: ``run.name`` (the config file's name for a default run directory), else the
    task family."""
    run_dir = Path(run_dir)
    record: dict[str, Any] = {"run": str(run_dir)}
    try:
        cfg, state = load_run_checkpoint(run_dir)
    except UserError as err:  # a damaged checkpoint is a row that says so
        return record | {"error": " ".join(str(err).split())}
    record |= {
        "name": cfg.run.name or cfg.data.family,
        "estimator": cfg.meta.estimator,
        "optimizer": cfg.meta.optimizer,
        "iterations": f"{state['iteration']}/{cfg.meta.num_meta_iterations}",
        "held_out": heldout_text(cfg),
        "seed": cfg.run.seed,
        "ppo": ppo_baseline_path(run_dir) is not None,
        "pretrained": (run_dir / "pretrained" / "params.pt").is_file(),
        "walkforward": (run_dir / "walkforward" / "walkforward.json").is_file(),
    }
    return record | evaluation_figures(run_dir) | {"created": first_written(run_dir)}


def heldout_text(cfg: RunConfig) -> str:
    """The held-out set as configured: instruments, timeframes (minutes) and tasks."""
    h = cfg.data.heldout
    parts = [*h.instruments, *(f"{t} min" for t in h.timeframes), *h.tasks]
    if cfg.data.family == "synthetic" and cfg.data.synthetic_heldout:
        parts.append(f"last {cfg.data.synthetic_heldout} generated")
    return ", ".join(parts) or "none"


def evaluation_figures(run_dir: Path) -> dict[str, Any]:
    """The last ``evaluate``'s tasks and its MAML k = 1 row (mean, 95% CI), if any."""
    path = run_dir / EVALUATION
    empty = {
        "evaluated": None,
        "maml_k1_mean": None,
        "maml_k1_ci_low": None,
        "maml_k1_ci_high": None,
    }
    if not path.is_file():
        return empty
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return empty | {"evaluated": f"unreadable {path.name}"}
    rows: list[dict[str, Any]] = doc.get("rows", [])
    row = next((r for r in rows if (r.get("method"), r.get("k")) == SUMMARY_ROW), {})
    return {
        "evaluated": ", ".join(doc.get("tasks", [])) or None,
        "maml_k1_mean": row.get("return_mean"),
        "maml_k1_ci_low": row.get("return_ci_low"),
        "maml_k1_ci_high": row.get("return_ci_high"),
    }


def first_written(run_dir: Path) -> str:
    """When the run directory was first written: its oldest file's modification time (a
    run directory records no start time; rewritten files are newer, never older)."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    oldest = min(p.stat().st_mtime for p in files) if files else run_dir.stat().st_mtime
    return dt.datetime.fromtimestamp(oldest).isoformat(timespec="seconds")


def compare_runs(a: str | Path, b: str | Path) -> list[dict[str, Any]]:
    """Two runs side by side: a row per key figure, then a row per config key whose values
    differ (dotted keys; ``run.out_dir`` and ``run.name`` left out, they differ by design).
    Columns: ``key``, then each run's directory."""
    a, b = Path(a), Path(b)
    names = (str(a), str(b)) if str(a) != str(b) else (f"{a} (A)", f"{b} (B)")
    figures = [summarise_run(a), summarise_run(b)]
    rows = [
        {"key": key, names[0]: figures[0].get(key), names[1]: figures[1].get(key)}
        for key in dict.fromkeys([*figures[0], *figures[1]])
        if key != "run"
    ]
    configs = [_flat(load_run_checkpoint(d)[0].to_dict()) for d in (a, b)]
    for key in dict.fromkeys([*configs[0], *configs[1]]):
        if key in ("run.out_dir", "run.name"):
            continue
        va, vb = configs[0].get(key), configs[1].get(key)
        if va != vb:
            rows.append({"key": key, names[0]: _text(va), names[1]: _text(vb)})
    return rows


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in node.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{name}.")
        else:
            out[prefix + name] = value
    return out


def _text(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value
