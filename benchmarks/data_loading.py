"""Time loading every task with features: cold (parse + validate + TA-Lib) and warm (disk cache).

    .venv/bin/python benchmarks/data_loading.py [--data DIR] [--quick]

Acceptance: all 36 real tasks from a warm cache in under 2 s. Each timing uses a fresh
DataLoader (no in-memory cache), so "warm" measures the on-disk cache only. The last line
printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from metatrade.data import DataLoader

REAL = Path("/work/shared/data/ohlcv")


def load_all(data: Path | None, cache: Path) -> tuple[float, int, int]:
    """Seconds to load every task's arrays with a fresh loader; also (tasks, rows)."""
    start = time.perf_counter()
    loader = DataLoader(data, cache_dir=cache)
    rows = 0
    tasks = loader.get_available_tasks()
    for task in tasks:
        rows += len(loader.get_task_arrays(*task))
    return time.perf_counter() - start, len(tasks), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REAL if REAL.is_dir() else None)
    parser.add_argument("--quick", action="store_true", help="one warm repetition instead of 5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        cold, n_tasks, rows = load_all(args.data, cache)
        warm = [load_all(args.data, cache)[0] for _ in range(1 if args.quick else 5)]
    source = str(args.data) if args.data else "embedded sample"
    print(f"{n_tasks} tasks, {rows} feature rows from {source}")
    print(f"cold (parse + features, writes cache): {cold:.3f} s")
    print(f"warm (disk cache), median of {len(warm)}: {statistics.median(warm):.3f} s")
    key = f"{n_tasks}_tasks"
    print(
        json.dumps(
            {
                f"warm_load_{key}_s": round(statistics.median(warm), 4),
                f"cold_load_{key}_s": round(cold, 4),
                "rows": rows,
                "source": source,
            }
        )
    )


if __name__ == "__main__":
    main()
