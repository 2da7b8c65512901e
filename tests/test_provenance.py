"""Where each of the demo's settings was chosen (issue 21, item 7): every setting that
configs/demo.yaml names has a provenance, none of them a test period; a run that changes a
setting says that setting is its own; the table is written into the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metatrade.training import provenance
from metatrade.training.config import load_config, packaged_config, read_yaml
from metatrade.training.provenance import (
    SOURCES,
    demo_settings,
    missing_provenance,
    provenance_text,
    settings_provenance,
    write_provenance,
)


def test_every_setting_of_the_demo_config_says_where_it_was_chosen() -> None:
    assert missing_provenance() == []
    rows = settings_provenance(load_config("demo"))
    assert [r.key for r in rows] == [
        *demo_settings(),
        "demo walk-forward",
        "demo second table costs",
    ]
    assert "meta.inner_lr" in demo_settings() and "data.splits.test" in demo_settings()
    assert {r.source for r in rows} <= set(SOURCES) - {"run"}  # the demo's own values
    for r in rows:
        assert r.evidence, r.key
        if r.source == "validation":  # a choice on data names what read it
            assert "validation" in r.evidence and (
                "benchmarks/" in r.evidence or "docs/" in r.evidence
            )
        # a setting once picked on a test figure must say what re-checked it on validation
        assert "test split" not in r.evidence or "re-checked on validation" in r.evidence
    text = provenance_text(rows)
    assert text.startswith("Settings provenance (none chosen on a test period)")
    assert "meta.inner_lr = 10.0 [validation]" in text


def test_a_demo_setting_without_provenance_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(provenance.DEMO_PROVENANCE, "meta.inner_lr")
    monkeypatch.delitem(provenance.DEMO_PROVENANCE, "ppo")  # the section's unnamed keys
    ppo = ["ppo.learning_rate", "ppo.num_minibatches", "ppo.update_epochs"]
    assert missing_provenance() == ["meta.inner_lr", *ppo]
    with pytest.raises(KeyError, match="meta.inner_lr: no provenance"):
        settings_provenance(load_config("demo"))


def test_a_setting_changed_for_a_run_is_the_runs_own(tmp_path: Path) -> None:
    cfg = load_config("demo", seed=3, overrides={"meta.inner_lr": 3.0})
    rows = {r.key: r for r in settings_provenance(cfg)}
    assert rows["meta.inner_lr"].source == "run" and rows["meta.inner_lr"].value == 3.0
    assert rows["run.seed"].source == "run" and rows["meta.lr"].source == "a priori"
    assert "meta.inner_lr = 3.0 [run]: the demo's value is 10.0" in provenance_text(
        list(rows.values())
    )
    files = write_provenance(tmp_path, list(rows.values()))
    doc = json.loads(files["json"].read_text())
    assert doc["sources"] == SOURCES
    assert {d["key"]: d["source"] for d in doc["settings"]}["meta.inner_lr"] == "run"
    assert files["md"].read_text().startswith("Settings provenance")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["provenance.json", "provenance.md"]


def test_the_demo_yaml_is_what_the_table_reads() -> None:
    raw = read_yaml(packaged_config("demo"))
    assert demo_settings()["meta.inner_lr"] == raw["meta"]["inner_lr"]
    assert demo_settings()["data.splits.validation"] == raw["data"]["splits"]["validation"]
