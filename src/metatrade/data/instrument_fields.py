"""The fields of one ``instruments.yaml`` description, parsed and checked: lot sizes (a
number, a dated table or a table's name), dates, costs and time zones. Every error names the
file, the instrument, the key and the fix (``metatrade.data.instruments`` builds the
``Instrument`` from these)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from metatrade.errors import DataError


@dataclass(frozen=True)
class LotSizes:
    """Units per lot over time: ``sizes[i]`` holds from ``starts[i]`` (int64 ns UTC, the
    first entry from the beginning of time) until the next start."""

    starts: tuple[int, ...] = (np.iinfo(np.int64).min,)
    sizes: tuple[int, ...] = (1,)

    @property
    def constant(self) -> bool:
        return len(set(self.sizes)) == 1

    def at(self, timestamps: np.ndarray) -> np.ndarray:
        """Lot size in force at each time (int64 ns UTC [N]) -> int64 [N]."""
        i = np.searchsorted(np.asarray(self.starts), np.asarray(timestamps), side="right") - 1
        return np.asarray(self.sizes, dtype=np.int64)[np.maximum(i, 0)]

    def describe(self) -> str:
        if self.constant:
            return str(self.sizes[0])
        parts = [
            f"{s} from {pd.Timestamp(t, tz='UTC').date()}" if i else str(s)
            for i, (t, s) in enumerate(zip(self.starts, self.sizes, strict=True))
        ]
        return ", ".join(parts)


def field_error(where: str, name: str, key: str, message: str) -> DataError:
    return DataError(f"{where}: instrument {name!r}, key {key!r}: {message}")


def parse_lot_sizes(value: Any, where: str, name: str, tables: Mapping[str, Any]) -> LotSizes:
    """A number, a dated table ``[{from: DATE, size: N}, ...]`` or a table's name."""
    if isinstance(value, str):
        table = tables.get(value, {})
        if name not in table:
            raise field_error(
                where,
                name,
                "lot_size",
                f"no lot table {value!r} for {name!r} "
                f"(tables: {', '.join(sorted(tables)) or 'none'}); give a number or "
                "[{from: 2024-11-20, size: 75}, ...]",
            )
        value = table[name]
    if isinstance(value, bool) or not isinstance(value, int | float | list):
        raise field_error(
            where,
            name,
            "lot_size",
            f"{value!r}: use a positive whole number or a "
            "dated table [{from: 2024-11-20, size: 75}, ...]",
        )
    if not isinstance(value, list):
        value = [{"size": value}]
    starts: list[int] = []
    sizes: list[int] = []
    for i, row in enumerate(value):
        size = row.get("size") if isinstance(row, Mapping) else None
        when = row.get("from") if isinstance(row, Mapping) else None
        if not isinstance(size, int | float) or size < 1 or int(size) != size:
            raise field_error(
                where,
                name,
                "lot_size",
                f"entry {i}: size {size!r} must be a whole "
                "number >= 1; write entries as {from: 2024-11-20, size: 75}",
            )
        if i and when is None:
            raise field_error(where, name, "lot_size", f"entry {i} needs a 'from' date")
        start = np.iinfo(np.int64).min if i == 0 else parse_date_ns(when, where, name)
        if starts and start <= starts[-1]:
            raise field_error(where, name, "lot_size", "dates must increase down the table")
        starts.append(start)
        sizes.append(int(size))
    return LotSizes(tuple(starts), tuple(sizes))


def parse_date_ns(when: Any, where: str, name: str, key: str = "lot_size") -> int:
    try:
        return int(pd.Timestamp(str(when)).tz_localize("UTC").value)
    except (ValueError, TypeError):
        raise field_error(where, name, key, f"date {when!r}: write it as YYYY-MM-DD") from None


def parse_costs(value: Any, where: str, name: str) -> str | tuple[tuple[str, float], ...]:
    from metatrade.market.costs import cost_model  # the market layer owns the presets

    try:
        cost_model(value)
    except (ValueError, TypeError) as err:
        raise field_error(where, name, "costs", str(err)) from None
    if isinstance(value, str):
        return value
    return tuple(sorted((str(k), float(v)) for k, v in value.items()))


def parse_timezone(value: Any, where: str, name: str) -> str:
    try:
        pd.Timestamp("2024-01-01").tz_localize(str(value))
    except Exception:  # pytz/zoneinfo raise different types for an unknown zone
        raise field_error(
            where,
            name,
            "timezone",
            f"{value!r} is not a time zone; use an IANA "
            "name such as America/New_York, Europe/London, Asia/Kolkata or UTC",
        ) from None
    return str(value)
