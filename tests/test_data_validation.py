"""Each malformed-input case gives a Problem naming the file, row and field; nothing crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instrument_helpers import describe_instruments
from metatrade.data import DataLoader, DataValidationError, TaskId, validate_folder
from metatrade.data.naming import parse_task_name
from metatrade.data.validation import load_bars

HEADER = ",datetime,open,high,low,close,volume\n"
T0 = 1710733500  # 2024-03-18 09:15 IST


def good_rows(n: int = 5, start: int = 0) -> list[str]:
    return [f"{i},{T0 + 300 * (start + i)},100,101,99,100.5,0" for i in range(n)]


def write(folder: Path, name: str, rows: list[str], header: str = HEADER) -> Path:
    describe_instruments(folder)  # made-up names: NSE-listed instruments
    p = folder / name
    p.write_text(header + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("Nifty_5.csv", ("Nifty", "5")),
        ("Bank_Nifty_5.csv", ("Bank_Nifty", "5")),
        ("Bank_Nifty_240.parquet", ("Bank_Nifty", "240")),
        ("Syn003_m045_15.parquet", ("Syn003_m045", "15")),
    ],
)
def test_parse_task_name(name: str, task: tuple[str, str]) -> None:
    assert parse_task_name(name) == TaskId(*task)


@pytest.mark.parametrize(
    "name", ["Nifty.csv", "Nifty_5m.csv", "_5.csv", "Nifty_0.csv", "Nifty_5.txt"]
)
def test_bad_task_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"Nifty_5|\.csv or \.parquet"):
        parse_task_name(name)


def test_real_format_sorts_and_drops_exact_duplicates(tmp_path: Path) -> None:
    rows = good_rows(6)
    chunked = rows[3:] + rows[:4]  # out-of-order chunks overlapping on one identical row
    bars = load_bars(write(tmp_path, "Nifty_5.csv", chunked))
    assert len(bars) == 6 and bars.index.is_monotonic_increasing
    assert bars.index[0] == pd.Timestamp("2024-03-18 09:15", tz="Asia/Kolkata")


def test_iso_strings_naive_and_with_offset(tmp_path: Path) -> None:
    text = (
        "datetime,open,high,low,close\n"
        "2024-03-18 09:15:00,100,101,99,100\n"
        "2024-03-18T09:20:00+05:30,100,101,99,100\n"
        "2024-03-18T03:55:00Z,100,101,99,100\n"
    )
    (tmp_path / "X_5.csv").write_text(text)
    describe_instruments(tmp_path)
    bars = load_bars(tmp_path / "X_5.csv")
    assert list(bars.index.strftime("%H:%M")) == ["09:15", "09:20", "09:25"]
    assert (bars["volume"] == 0).all()


def test_parquet_with_datetime_index(tmp_path: Path) -> None:
    idx = pd.date_range(
        "2024-03-18 09:15", periods=4, freq="5min", tz="Asia/Kolkata", name="datetime"
    )
    df = pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5}, index=idx)
    df.to_parquet(tmp_path / "Y_5.parquet")
    describe_instruments(tmp_path)
    assert load_bars(tmp_path / "Y_5.parquet").index.equals(idx)


CASES = {
    "missing column": (HEADER.replace(",low", ""), [f"0,{T0},100,101,100.5,0"], None, "low"),
    "non-numeric": (HEADER, [*good_rows(2), f"2,{T0 + 600},abc,101,99,100,0"], 3, "open"),
    "nan": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,,99,100,0"], 3, "high"),
    "inf": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,inf,99,100,0"], 3, "high"),
    "non-positive": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,101,-1,100,0"], 3, "low"),
    "high below body": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,100.2,99,100.5,0"], 3, "high"),
    "low above body": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,101,100.2,100.5,0"], 3, "low"),
    "high below low": (HEADER, [*good_rows(2), f"2,{T0 + 600},100,98,99,100,0"], 3, "high"),
    "conflicting duplicate": (
        HEADER,
        [*good_rows(3), f"3,{T0 + 300},100,101,99,100.7,0"],
        4,
        "datetime",
    ),
    "bad datetime": (HEADER, [*good_rows(2), "2,yesterday,100,101,99,100,0"], 3, "datetime"),
    "header only": (HEADER, [], None, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_validation_case(tmp_path: Path, case: str) -> None:
    header, rows, row, field = CASES[case]
    path = write(tmp_path, "Nifty_5.csv", rows, header)
    with pytest.raises(DataValidationError) as info:
        load_bars(path)
    assert isinstance(info.value, ValueError)
    problem = info.value.problems[0]
    assert problem.file == "Nifty_5.csv" and problem.row == row and problem.field == field
    if row is not None:
        assert problem.line == row + 1
        assert f"row {row} (line {row + 1})" in str(info.value)
    assert "Nifty_5.csv" in str(info.value)


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    describe_instruments(tmp_path)
    (tmp_path / "A_5.csv").write_text("")
    (tmp_path / "B_5.parquet").write_bytes(b"not parquet at all")
    problems = validate_folder(tmp_path)
    assert [(p.file, "empty" in p.message or "cannot read" in p.message) for p in problems] == [
        ("A_5.csv", True),
        ("B_5.parquet", True),
    ]


def test_validate_folder_collects_every_problem(tmp_path: Path) -> None:
    for i, case in enumerate(CASES):
        header, rows, _, _ = CASES[case]
        write(tmp_path, f"Case{i}_5.csv", rows, header)
    write(tmp_path, "Good_5.csv", good_rows(5))
    write(tmp_path, "badname.csv", good_rows(2))
    (tmp_path / "notes.txt").write_text("ignored")
    problems = validate_folder(tmp_path)
    files = {p.file for p in problems}
    assert files == {f"Case{i}_5.csv" for i in range(len(CASES))} | {"badname.csv"}
    # a file with two bad rows reports both
    two = tmp_path.parent / "two"
    two.mkdir()
    write(
        two,
        "Z_5.csv",
        [*good_rows(2), f"2,{T0 + 600},x,101,99,100,0", f"3,{T0 + 900},100,101,-5,100,0"],
    )
    assert [(p.row, p.field) for p in validate_folder(two)] == [(3, "open"), (4, "low")]
    with pytest.raises(DataValidationError, match="badname.csv"):
        DataLoader(tmp_path, cache_dir=False, strict=True)


def test_many_bad_rows_are_summarised(tmp_path: Path) -> None:
    rows = [f"{i},{T0 + 300 * i},100,101,-1,100,0" for i in range(50)]
    problems = validate_folder(write(tmp_path, "Q_5.csv", rows))
    assert len(problems) == 21 and "30 more" in problems[-1].message


def test_no_volume_column_and_float_precision(tmp_path: Path) -> None:
    describe_instruments(tmp_path)
    price = np.float64(22450.123456789012)
    (tmp_path / "P_5.csv").write_text(
        "datetime,open,high,low,close\n" + f"{T0}," + ",".join([repr(float(price))] * 4) + "\n"
    )
    bars = load_bars(tmp_path / "P_5.csv")
    assert bars["close"].iloc[0] == price
