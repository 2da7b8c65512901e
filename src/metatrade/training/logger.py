"""Per-iteration metrics to a CSV file, TensorBoard and the terminal (under a live progress bar).

Keys are namespaced like SB3's logger (``meta/loss``, ``meta/return_pre``, ``time/iteration``).
The CSV is the durable record: one row per iteration. A key that first appears in a later row
gets its own column: the file is rewritten atomically with the wider header (earlier rows
leave it empty), so no metric is ever dropped. On resume the CSV is cut back to the
checkpoint's iteration, so a resumed run's log reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from metatrade.io import atomic_write

# What the one-line terminal summary shows, in order, when the metric exists.
_SUMMARY_KEYS = (
    ("meta/loss", "loss"),
    ("meta/return_pre", "R_pre"),
    ("meta/return_post", "R_post"),
    ("meta/kl", "kl"),
    ("rollout/ep_rew_mean", "ep_return"),
    ("train/policy_loss", "pi_loss"),
    ("train/value_loss", "v_loss"),
    ("train/approx_kl", "kl"),
    ("time/total_timesteps", "steps"),
    ("time/iteration_s", "s/it"),
)


class MetricsLogger:
    """Writes metric rows to ``<log_dir>/metrics.csv`` and TensorBoard (``<log_dir>/tb``)."""

    def __init__(self, log_dir: str | Path, tensorboard: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.log_dir / "metrics.csv"
        self._fields: list[str] | None = None
        self._writer: Any = None
        if tensorboard:
            # Imported here: tensorboard is heavy and tests that don't log need not pay for it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir / "tb"))
        if self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:
                header = next(csv.reader(f), None)
            self._fields = header or None

    def truncate(self, iteration: int) -> None:
        """Drop CSV rows after ``iteration`` (called on resume from that iteration)."""
        if not self.csv_path.is_file():
            return
        with self.csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(float(r.get("iteration", 0))) <= iteration]
        if self._fields is None:
            return
        self._rewrite(self._fields, keep)

    def _rewrite(self, fields: list[str], rows: list[dict[str, Any]]) -> None:
        def write(f: IO[str]) -> None:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

        # a crash mid-rewrite must not lose the log of the iterations being kept
        atomic_write(self.csv_path, write, binary=False)
        self._fields = fields

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Append one row (``iteration`` first) and send every finite scalar to TensorBoard."""
        row: dict[str, Any] = {"iteration": iteration, **metrics}
        if self._fields is None:
            self._rewrite(list(row), [])
        new = [k for k in row if k not in set(self._fields or ())]
        if new:
            with self.csv_path.open(newline="") as f:
                old_rows = list(csv.DictReader(f))
            self._rewrite([*(self._fields or ()), *new], old_rows)
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields or list(row)).writerow(row)
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def summary_line(iteration: int, total: int, metrics: Mapping[str, float]) -> str:
    """A compact one-line summary: ``it  12/50  loss -0.0123  R_pre -41.2  R_post -20.3 ...``."""
    parts = [f"it {iteration:>{len(str(total))}}/{total}"]
    for key, short in _SUMMARY_KEYS:
        if key in metrics:
            parts.append(f"{short} {metrics[key]:.4g}")
    return "  ".join(parts)


@contextmanager
def progress_bar(
    description: str, total: int, completed: int = 0, enabled: bool = True
) -> Iterator[tuple[Progress, Any]]:
    """A rich progress bar (hidden when not enabled); yields ``(progress, task_id)``."""
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield progress, task


def status_text(metrics: dict[str, float]) -> str:
    """The progress bar's one-number status: the post-update return, or PPO's episode return."""
    for key in ("meta/return_post", "rollout/ep_rew_mean"):
        if key in metrics:
            return f"{key.split('/')[-1]} {metrics[key]:.4g}"
    return ""


def notice(text: str) -> None:
    """A line on stderr for the person running a loop (e.g. what happened to their files)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(text)
