"""One protocol run per training seed (``--seeds 0 1 2``): where the runs of a seeded family
live, and the pooled report over them (``evaluation.seeds``).

Naming: ``meta-train --seeds 0 1 2 --out runs/x`` writes ``runs/x-seed0``, ``runs/x-seed1``
and ``runs/x-seed2`` (without ``--out``, the default ``runs/<name>-seed<S>``: the same
pattern). ``evaluate`` and ``walkforward`` take ``--checkpoint runs/x --seeds 0 1 2`` (or any
one of the runs, ``runs/x-seed0``: its ``-seed<S>`` suffix is dropped) and find every
``runs/x-seed<S>``; each run's own report goes where a single run's does, the pooled one
into ``runs/x-seeds/`` (or ``--out``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metatrade.errors import ConfigError

if TYPE_CHECKING:
    from metatrade.evaluation.protocol_result import EvaluationResult
    from metatrade.evaluation.walkforward import WalkForwardResult

_SEED_SUFFIX = re.compile(r"-seed\d+$")


def seed_base(checkpoint: str | Path) -> Path:
    """The family's base path: the run directory of ``checkpoint`` (a run directory, a
    checkpoint file in one, or a base that has no directory of its own) without a trailing
    ``-seed<S>``."""
    from metatrade.training.artefacts import run_dir_of

    path = Path(checkpoint)
    run = run_dir_of(path) if path.exists() else path
    return run.with_name(_SEED_SUFFIX.sub("", run.name))


def seed_run_dir(base: str | Path, seed: int) -> Path:
    """``<base>-seed<seed>``: where ``meta-train --seeds`` writes the run of ``seed``."""
    base = Path(base)
    return base.with_name(f"{base.name}-seed{seed}")


def seed_runs(checkpoint: str | Path, seeds: Sequence[int]) -> dict[int, Path]:
    """The run directory of every seed of the family ``checkpoint`` names
    (``ConfigError`` naming those missing and how to make them)."""
    base = seed_base(checkpoint)
    runs = {s: seed_run_dir(base, s) for s in seeds}
    missing = [str(p) for p in runs.values() if not p.is_dir()]
    if missing:
        listed = " ".join(str(s) for s in seeds)
        raise ConfigError(
            f"--seeds {listed}: no run directory {', '.join(missing)}; meta-train them with "
            f"`metatrade meta-train --seeds {listed} --out {base}`"
        )
    return runs


def seeds_dir(checkpoint: str | Path, out: str | Path | None) -> Path:
    """Where the pooled report goes: ``out``, else ``<base>-seeds``."""
    if out is not None:
        return Path(out)
    base = seed_base(checkpoint)
    return base.with_name(f"{base.name}-seeds")


def pooled_evaluation(
    results: Mapping[int, EvaluationResult], out_dir: Path, *, runs: Mapping[int, Path]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Every meta-test row pooled over the seeds (% of C0) and written to
    ``<out_dir>/evaluation_seeds.{txt,csv,json}``; returns (pools, files)."""
    from metatrade.evaluation.seeds import pool_evaluations, write_seed_report

    pools = pool_evaluations(results, rng=np.random.default_rng(list(results)))
    first = next(iter(results.values()))
    split = first.period.split if first.period is not None else "test"
    title = (
        f"mean {split}-window return % over training seeds {list(results)} (each seed's own "
        f"run; spread = sd over seeds; pooled: seeds and days resampled)"
    )
    files = write_seed_report(
        out_dir, "evaluation_seeds", pools, title=title, scale=100, extra=_extra(results, runs)
    )
    return pools, files


def pooled_walkforward(
    results: Mapping[int, WalkForwardResult], out_dir: Path, *, runs: Mapping[int, Path]
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Every walk-forward row's pooled annualised Sharpe over the seeds, written to
    ``<out_dir>/walkforward_seeds.{txt,csv,json}``; returns (pools, files)."""
    from metatrade.evaluation.seeds import pool_walkforwards, write_seed_report

    first = next(iter(results.values()))
    pools = pool_walkforwards(
        results,
        rng=np.random.default_rng(list(results)),
        reps=int(first.config.get("bootstrap_samples", 1000)),
        confidence=float(first.config.get("confidence", 0.95)),
    )
    split = first.period.split if first.period is not None else "?"
    title = (
        f"walk-forward Sharpe (annualised, pooled tasks) on the {split} split over training "
        f"seeds {list(results)} (spread = sd over seeds; pooled: days, then seeds resampled)"
    )
    files = write_seed_report(
        out_dir, "walkforward_seeds", pools, title=title, extra=_extra(results, runs)
    )
    return pools, files


def _extra(results: Mapping[int, Any], runs: Mapping[int, Path]) -> dict[str, Any]:
    """The JSON's provenance: each seed's run and the period it scored."""
    return {
        "seeds": list(results),
        "runs": {str(s): str(p) for s, p in runs.items()},
        "period": {
            str(s): None if r.period is None else r.period.as_dict() for s, r in results.items()
        },
    }
