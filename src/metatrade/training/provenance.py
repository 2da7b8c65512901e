"""Where each of the demo's settings was chosen (issue 21, item 7): none on a test period.

A figure read on the test period and then used to pick a setting is no longer a test figure
(Bailey & López de Prado 2014: every configuration tried is a trial). So every setting the
packaged ``configs/demo.yaml`` names carries its provenance here, one of ``SOURCES``:
chosen on the held-out tasks' *validation* split (with the command and figures), fixed
*a priori* (a design choice or a convention, before any return was read), taken from the
*paper*, sized by *speed* or the 15-minute budget (seconds, not returns), forced by the
*data* (how many windows fit) or *required* by another setting. A setting once chosen on a
test figure says so, and what re-checked it on validation.

The demo prints the table and writes ``<run>/provenance.md`` and ``provenance.json``;
``missing_provenance`` (tested) keeps the table complete when ``demo.yaml`` changes. A run
whose config differs from the demo's on a key shows ``set for this run`` there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metatrade.io import atomic_write_text
from metatrade.training.config import RunConfig, packaged_config, read_yaml, validate_config

SOURCES = {
    "validation": "chosen on the held-out tasks' validation split",
    "a priori": "fixed before any return was read (design or convention)",
    "paper": "from the paper",
    "speed": "chosen on seconds or the 15-minute budget, not on returns",
    "data": "forced by the data (how many windows fit)",
    "required": "required by another setting",
    "run": "set for this run (not the demo's value): its provenance is the user's",
}
"""how a setting was chosen; never on a test period"""

_EXACT_VS_SAMPLED = (
    "4.2x faster per meta-iteration (0.31 s against 1.31 s); first picked (2026-11-28) on the "
    "test split (+0.33% vs -0.76% per window, a look made before the registry: counted in "
    "DEMO_CONFIGURATIONS); re-checked on validation (2026-12-07, `python "
    "benchmarks/exact_trading.py --no-stressed`): MAML k=1 exact -1.11% [-2.06, -0.34] vs "
    "sampled -0.16% [-0.85, +0.44] (seed 0; seeds 1-2 pooled: "
    "-1.08 vs -0.34), intervals overlapping: "
    "kept on speed by the rule written first, not on returns, which favour sampled "
    "(docs/exact.md, 'How the demo's settings were chosen')"
)

DEMO_PROVENANCE: dict[str, tuple[str, str]] = {
    "data.family": ("a priori", "the embedded NSE index bars"),
    "data.tasks": (
        "a priori",
        "every embedded timeframe of 2-60 minutes (longer bars leave "
        "too few test bars for 128-bar windows)",
    ),
    "data.heldout.instruments": (
        "a priori",
        "a whole instrument held out: a market the policy never saw (first demo config, c6ca3e6)",
    ),
    "data.splits": ("a priori", "70/15/15 chronological, since the first demo config"),
    "env.lookback": (
        "speed",
        "32 bars: 0.44 s per meta-iteration against 1.05 s at 16 (commit 096cd0e)",
    ),
    "env.episode_length": ("a priori", "128-bar windows, since the first demo config"),
    "env.observation": ("required", "meta.estimator: exact needs the position observation"),
    "policy": (
        "a priori",
        "MLP 64x64 tanh, the usual PPO network (Stable-Baselines3's "
        "default), since the first demo config",
    ),
    "meta.estimator": ("speed", _EXACT_VS_SAMPLED),
    "meta.num_meta_iterations": ("speed", "200: the demo's 15-minute budget"),
    "meta.meta_batch_size": ("a priori", "8 tasks per meta-iteration, since the first demo config"),
    "meta.episodes_per_task": ("data", "4 + 4 windows of 128 bars fit Nifty:60's train split"),
    "meta.num_evaluation_episodes": (
        "data",
        "4 + 4 windows of 128 bars fit Nifty:60's train split",
    ),
    "meta.num_inner_steps": (
        "paper",
        "one inner gradient step in meta-training (Finn et al. 2017, section 5.3)",
    ),
    "meta.inner_lr": (
        "validation",
        "10 against 1 on the validation split (`python "
        "benchmarks/exact_trading.py --exact-only --set meta.inner_lr=1`): "
        "-0.83% and -0.73% per window, intervals overlapping; 10 kept "
        "(docs/exact.md)",
    ),
    "meta.optimizer": ("a priori", "Adam, since the first demo config"),
    "meta.lr": ("a priori", "Adam's default step 1e-3 (Kingma & Ba 2015)"),
    "objective.normalize": (
        "validation",
        "on the synthetic regimes' validation tasks the raw "
        "P&L objective scored -0.12 of the oracle (docs/exact.md)",
    ),
    "objective.risk": ("a priori", "risk-neutral: the expected P&L itself"),
    "ppo.match_meta_budget": (
        "a priori",
        "the same environment steps as meta-training (a fair baseline)",
    ),
    "ppo.episodes_per_task": ("a priori", "since the first demo config"),
    "ppo.n_steps": ("a priori", "one 128-bar window per rollout (env.episode_length)"),
    "ppo": (
        "a priori",
        "conventional PPO settings (Schulman et al. 2017: step 3e-4; "
        "CleanRL's 4 minibatches x 4 epochs), not tuned",
    ),
    "evaluation.adaptation_steps": (
        "paper",
        "0-3 gradient steps at test time, as in the paper's figures (Finn et al. 2017)",
    ),
    "evaluation.adaptation_episodes": (
        "a priori",
        "the inner loop's 4 windows (meta.episodes_per_task)",
    ),
    "evaluation": (
        "a priori",
        "the protocol: 16 test windows per task, 1000 bootstrap "
        "resamples, every baseline and classical rule of issue 19 with its "
        "default grid",
    ),
    "run.seed": ("a priori", "seed 0"),
    "run": ("a priori", "bookkeeping (logging, checkpoints): no effect on any figure"),
}
"""dotted setting (or a section: its keys not named on their own) -> (source, evidence)"""

DEMO_FIXED: dict[str, tuple[Any, str, str]] = {
    "demo walk-forward": (
        "5-session folds after 10, k=1, carry",
        "a priori",
        "the walkforward command's default geometry, one week after two (walkforward.fold_spec)",
    ),
    "demo second table costs": (
        "nse_index_futures",
        "a priori",
        "statutory NSE index-futures charges (demo.REALISTIC_COSTS, docs/market.md)",
    ),
}
"""the demo's settings fixed in code rather than in demo.yaml -> (value, source, evidence)"""


@dataclass(frozen=True)
class SettingSource:
    """One setting of a run and where its value was chosen."""

    key: str
    value: Any
    source: str
    evidence: str


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a YAML mapping (lists and scalars are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _entry(key: str) -> tuple[str, str] | None:
    """The provenance of ``key``: its own entry, else its longest enclosing section's."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        if (hit := DEMO_PROVENANCE.get(".".join(parts[:n]))) is not None:
            return hit
    return None


def demo_settings() -> dict[str, Any]:
    """The settings the packaged demo config names, as dotted keys -> resolved values."""
    raw = read_yaml(packaged_config("demo"))
    values = _leaves(validate_config(raw, "demo").to_dict())
    return {k: values[k] for k in _leaves(raw)}


def missing_provenance() -> list[str]:
    """Settings of ``configs/demo.yaml`` with no provenance entry (empty when complete)."""
    return [k for k in demo_settings() if _entry(k) is None]


def settings_provenance(cfg: RunConfig) -> list[SettingSource]:
    """Each setting the demo config names, its value in ``cfg`` and where it was chosen
    (``run`` where ``cfg`` differs from the demo's own value)."""
    values = _leaves(cfg.to_dict())
    rows = []
    for key, demo_value in demo_settings().items():
        hit = _entry(key)
        if hit is None:
            raise KeyError(f"{key}: no provenance (add it to DEMO_PROVENANCE)")
        source, evidence = hit
        value = values.get(key)
        if value != demo_value:
            source, evidence = "run", json.dumps(demo_value)
        rows.append(SettingSource(key, value, source, evidence))
    return rows + [SettingSource(k, *v) for k, v in DEMO_FIXED.items()]


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def provenance_text(rows: list[SettingSource]) -> str:
    """The table the demo prints and writes: one line per setting (settings sharing one
    reason on one line), then what each source means."""
    counts = {s: sum(r.source == s for r in rows) for s in SOURCES}
    lines = [
        "Settings provenance (none chosen on a test period): "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    ]
    groups: list[list[SettingSource]] = []
    for r in rows:
        same = groups and (groups[-1][0].source, groups[-1][0].evidence) == (r.source, r.evidence)
        if same and r.source != "run":
            groups[-1].append(r)
        else:
            groups.append([r])
    for g in groups:
        keys = ", ".join(f"{r.key} = {_short(r.value)}" for r in g)
        evidence = g[0].evidence
        if g[0].source == "run":
            evidence = "the demo's value is " + _short(json.loads(evidence))
        lines.append(f"  {keys} [{g[0].source}]: {evidence}")
    lines += [f"  [{s}] {meaning}" for s, meaning in SOURCES.items() if counts[s]]
    return "\n".join(lines)


def write_provenance(run_dir: str | Path, rows: list[SettingSource]) -> dict[str, Path]:
    """``<run>/provenance.md`` (the table) and ``provenance.json`` (the rows), atomically."""
    run_dir = Path(run_dir)
    doc = [
        {"key": r.key, "value": r.value, "source": r.source, "evidence": r.evidence} for r in rows
    ]
    return {
        "md": atomic_write_text(run_dir / "provenance.md", provenance_text(rows) + "\n"),
        "json": atomic_write_text(
            run_dir / "provenance.json", json.dumps({"sources": SOURCES, "settings": doc}, indent=1)
        ),
    }


def report_provenance(cfg: RunConfig, run_dir: str | Path, console: Any) -> dict[str, Path]:
    """The demo's last section: print the provenance table and write it into the run."""
    rows = settings_provenance(cfg)
    console.print(f"\n{provenance_text(rows)}", soft_wrap=True, highlight=False, markup=False)
    return write_provenance(run_dir, rows)
