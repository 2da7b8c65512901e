"""`metatrade data list|validate` smoke tests (tiny folders, no traceback on bad data)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from metatrade.cli import app
from metatrade.data import DataLoader, write_synthetic_tasks

runner = CliRunner()


def test_data_list_synthetic(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METATRADE_CACHE", str(tmp_path / "cache"))
    tasks = write_synthetic_tasks(tmp_path / "d", 2, seed=0, n_bars=400)
    result = runner.invoke(
        app, ["data", "list", "--data", str(tmp_path / "d")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "2 tasks" in result.output
    assert "markets" in result.output and "INR" in result.output and "origin" in result.output
    loader = DataLoader(tmp_path / "d", cache_dir=False)
    for task in tasks:  # one row per task: bars, then the split sizes the loader computes
        row = next(line for line in result.output.splitlines() if f"{task}" in line)
        cells = [c.strip() for c in row.split("│") if c.strip()]
        splits = loader.get_task_arrays(*task).splits
        sizes = [str(hi - lo) for lo, hi in (splits[s] for s in ("train", "validation", "test"))]
        assert cells[1] == "400" and cells[4:] == sizes


def test_data_validate_ok_and_bad(tmp_path: Path, monkeypatch) -> None:
    write_synthetic_tasks(tmp_path / "d", 1, seed=0, n_bars=100, fmt="csv")
    ok = runner.invoke(app, ["data", "validate", str(tmp_path / "d")])
    assert ok.exit_code == 0 and "OK" in ok.output
    (tmp_path / "d" / "Bad_5.csv").write_text(
        "datetime,open,high,low,close\n1710733500,100,99,98,100.5\n"
    )
    (tmp_path / "d" / "noname.csv").write_text("")
    bad = runner.invoke(app, ["data", "validate", str(tmp_path / "d")])
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit)
    assert "Bad_5.csv" in bad.output and "noname.csv" in bad.output and "high" in bad.output
    assert "Traceback" not in bad.output


def test_data_list_bad_folder_exits_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "list", "--data", str(tmp_path / "missing")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "no such folder" in result.output


def test_data_list_strict_on_a_bad_file_exits_2(tmp_path: Path) -> None:
    """Reproduction: `data list --strict` exited 1 on a bad file; bad input is exit 2 in
    every command (`data validate` alone exits 1 for "problems found", like a linter)."""
    write_synthetic_tasks(tmp_path / "d", 1, seed=0, n_bars=400)
    (tmp_path / "d" / "Bad_5.csv").write_text("x\n1\n")
    result = runner.invoke(app, ["data", "list", "--data", str(tmp_path / "d"), "--strict"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "Bad_5.csv" in result.output
    assert "Traceback" not in result.output
