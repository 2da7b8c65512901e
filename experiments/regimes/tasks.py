"""Task sets of the research prototype: regime tasks (``metatrade.data.regimes``) as arrays.

A task gives per-bar features X [N, F] (z-scored with the statistics of the bars before its
test period, clipped to +-10, as the product does), the traded next return ``nxt`` [N]
(the body of bar t+1: a position decided at bar t fills at open[t+1] and, with the session
square-off, holds no overnight gap), the oracle's expected next return, and its scale (std
of its returns before the test period). Evaluation tasks end with ``test_bars`` bars of
test; the 512 bars before them are the adaptation window.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.regimes import features as F
from metatrade.data.regime_config import RegimesConfig
from metatrade.data.regimes import TaskRule, draw_rules, generate_task

WARMUP = 256
RAW_GROUPS = tuple(g for g in os.environ.get("REGIMES_RAW", "").split(",") if g)
"""feature groups left un-z-scored (e.g. one-hot time of day)"""
CACHE = Path(os.environ.get("REGIMES_CACHE", "/tmp/h19r_regimes_cache"))


@dataclass
class TaskSet:
    x: torch.Tensor  # [T, N, F]
    nxt: torch.Tensor  # [T, N]
    scale: torch.Tensor  # [T]
    expected: np.ndarray  # [T, N] oracle E[next | t]
    kinds: list[str]
    rules: list[TaskRule]
    bars: list[F.Bars]  # after warm-up, for the classical rules
    names: list[str]
    test_start: int  # first test row (N for training tasks)


def build_tasks(
    rules: list[TaskRule], spec: str, *, n_bars: int, test_bars: int = 0, oracle: str = "state"
) -> TaskSet:
    xs, nxts, scales, exps, bars = [], [], [], [], []
    names: list[str] = []
    full_rules = []
    for rule in rules:
        df, rule_full = generate_task(rule, n_bars + WARMUP)
        o, c = df.open.to_numpy(), df.close.to_numpy()
        ts = df.index.as_unit("ns").asi8
        full = F.Bars(o, c, ts)
        x, names = F.build(full, spec)
        full_rules.append(rule_full)
        e = rule_full.expected_next(open_=o, close=c, timestamps=ts, oracle=oracle)
        x, e = x[WARMUP:], e[WARMUP:]
        b = F.Bars(o[WARMUP:], c[WARMUP:], ts[WARMUP:])
        stop = len(b.ret) - test_bars
        mu, sd = x[:stop].mean(0), x[:stop].std(0)
        raw = np.array([F.group_of(n) in RAW_GROUPS for n in names])
        mu, sd = np.where(raw, 0.0, mu), np.where(raw | (sd <= 0), 1.0, sd)
        x = np.clip((x - mu) / sd, -10, 10)
        nxt = np.zeros(len(b.ret))
        nxt[:-1] = b.body[1:]
        xs.append(x)
        nxts.append(nxt)
        scales.append(b.ret[:stop].std())
        exps.append(e)
        bars.append(b)
    return TaskSet(
        x=torch.tensor(np.stack(xs), dtype=torch.float32),
        nxt=torch.tensor(np.stack(nxts), dtype=torch.float32),
        scale=torch.tensor(scales, dtype=torch.float32),
        expected=np.stack(exps),
        kinds=[r.kind for r in rules],
        rules=full_rules,
        bars=bars,
        names=names,
        test_start=n_bars - test_bars,
    )


def family(
    seed: int, n_tasks: int, spec: str, *, n_bars: int, test_bars: int = 0, config=None
) -> TaskSet:
    """``n_tasks`` tasks drawn from the family with ``seed`` (train: 1000 + S, validation:
    5000 + S, test: 2000 + S in the runner); cached on disk under ``CACHE``."""
    config = config or RegimesConfig()
    key = repr((seed, n_tasks, spec, n_bars, test_bars, config, RAW_GROUPS))
    key = hashlib.sha1(key.encode()).hexdigest()
    path = CACHE / f"{key[:16]}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    rules = draw_rules(config, n_tasks, seed)
    out = build_tasks(rules, spec, n_bars=n_bars, test_bars=test_bars)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(out))
    tmp.rename(path)
    return out
