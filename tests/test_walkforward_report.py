"""The walk-forward report: a self-contained HTML page (checked with html.parser), CSV and
JSON of everything; and the CLI's one-line errors for a bad fold geometry."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.evaluation.protocol import Start, module_params, random_start
from metatrade.evaluation.walkforward import (
    FoldSpec,
    InnerLoopAdapter,
    WalkForwardConfig,
    run_walkforward,
)
from metatrade.evaluation.walkforward.figures import FIGURES
from metatrade.evaluation.walkforward.report import render_html, save_report, text_table, to_json
from metatrade.market.config import TradingEnvConfig
from metatrade.meta.config import AdaptationConfig
from walkforward_helpers import ar_task, tiny_policy


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: dict[str, list[str]] = {"h2": [], "th": [], "title": []}
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1] in self.text:
            self.text[self._open[-1]].append(data.strip())


def test_report_is_one_self_contained_page_with_every_section(tmp_path: Path) -> None:
    env = TradingEnvConfig(lookback=4, episode_length=16)
    _, t1 = ar_task(0.4, n_bars=1000, seed=1, name="SynA")
    _, t2 = ar_task(-0.3, n_bars=1000, seed=2, name="SynB")
    pol = tiny_policy(4)
    starts = {"MAML": Start(pol, module_params(pol)), "random": random_start(pol, 1)}
    adaptation = AdaptationConfig(episodes_per_task=4, inner_lr=1.0)
    adapter = InnerLoopAdapter(env.with_overrides(episode_length=16), adaptation, steps=1)
    cfg = WalkForwardConfig(folds=FoldSpec(100, 150), env=env, start=650, bootstrap_samples=50)
    res = run_walkforward(starts, [t1, t2], adapter, cfg)
    files = save_report(res, tmp_path)

    page = _Page()
    page.feed(files["html"].read_text())
    assert page.text["title"] == ["metatrade walk-forward report"]
    for section in (
        "Pooled",
        "Paired differences",
        "Stitched equity curves",
        "Drawdowns",
        "Per-fold returns",
        "Cost sweep",
        "Adaptation curve",
        "Task SynA:5",
    ):
        assert any(h.startswith(section) for h in page.text["h2"]), section
    imgs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(imgs) == 5
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe")]
    external = [v for _, a in page.tags for v in a.values() if v and "://" in v]
    assert not external  # nothing to fetch at view time
    assert {"DSR", "PSR", "break-even bps/side", "Sharpe 95% CI"} <= set(page.text["th"])
    tables = [t for t, _ in page.tags if t == "table"]
    assert len(tables) == 2 + 2  # pooled, differences, one per task

    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == 3 * len(res.labels)  # two tasks + pooled
    doc = json.loads(files["json"].read_text())
    trials = doc["scopes"]["pooled"]["trials"]
    assert trials["n_trials"] == 4  # the 4 policy rows: no registry, this run's rows alone
    assert trials["source"] == "this run's rows (no registry)"
    assert set(doc["tasks"]) == {"SynA:5", "SynB:5"}
    first, header = files["txt"].read_text().splitlines()[:2]
    split = trials["split"]  # the table states the split scored and the looks at test
    assert first == f"scored on the {split} split; looks at its test period: 0"
    assert header.split()[0] == "row"
    assert {r["split"] for r in rows} == {split} and rows[0]["test_looks"] == "0.0"


def test_cli_rejects_mixed_fold_units_in_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["walkforward", "--checkpoint", str(tmp_path), "--fold-bars", "50", "--adapt-days", "2"],
    )
    assert res.exit_code == 2
    assert "in bars" in res.output and "Traceback" not in res.output


def test_rows_stopped_by_the_ruin_rule_are_flagged_in_the_text_and_the_html() -> None:
    """Reproduction: a row the ruin rule stopped (equity at ruin_fraction of the capital)
    looked like any other row in the text table and the HTML. With the ruin level at 99.99%
    of the capital, the first loss stops a trading row; flat never trades and is not flagged."""
    env = TradingEnvConfig(lookback=4, episode_length=16, ruin_fraction=0.9999)
    _, task = ar_task(0.4, n_bars=600, seed=1, name="SynA")
    pol = tiny_policy(4)
    adapter = InnerLoopAdapter(env, AdaptationConfig(episodes_per_task=2), steps=0)
    cfg = WalkForwardConfig(folds=FoldSpec(100, 150), env=env, start=300, bootstrap_samples=20)
    res = run_walkforward({"random": random_start(pol, 1)}, [task], adapter, cfg)
    text = text_table(res)
    flagged = {line.split()[0] for line in text.splitlines() if "[RUIN]" in line.split()[1:2]}
    assert "random@k0" in flagged and "buy-and-hold" in flagged and "flat" not in flagged
    assert "stopped by the ruin rule (equity fell to 99.99% of the capital" in text
    assert "random@k0 (SynA:5 on 20" in text
    page = render_html(res, dict.fromkeys(FIGURES, b""))  # (the figures are not the point)
    assert page.count("random@k0 [RUIN]") == 2  # the pooled table and the task's
    assert page.count('<p class="ruin">') == 2
    stopped = to_json(res)["tasks"]["SynA:5"]["stopped_by_ruin"]
    assert set(stopped) == {"random@k0", "buy-and-hold"}
