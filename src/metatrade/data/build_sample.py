"""Build the embedded sample data set (``metatrade/data/sample/*.parquet``) from raw CSVs.

    python -m metatrade.data.build_sample /work/shared/data/ohlcv

Every real task is embedded (36 files, about 4 MB): bars are validated and cleaned exactly
as the loader does (sorted, exact duplicates dropped), ``volume`` (always 0 for an index) is
left out, and Parquet is written with delta-encoded timestamps and byte-stream-split prices
under zstd, which is about half the size of plain zstd Parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metatrade.data.loader import SAMPLE_DIR
from metatrade.data.naming import data_files
from metatrade.data.validation import PRICE_COLUMNS, load_bars


def write_compact_parquet(
    path: Path, timestamps_s: np.ndarray, prices: dict[str, np.ndarray]
) -> None:
    """``datetime`` as int64 epoch seconds plus float64 prices, compactly encoded."""
    table = pa.table(
        {
            "datetime": pa.array(timestamps_s, pa.int64()),
            **{k: pa.array(v) for k, v in prices.items()},
        }
    )
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=19,
        use_dictionary=False,
        column_encoding={
            "datetime": "DELTA_BINARY_PACKED",
            **{k: "BYTE_STREAM_SPLIT" for k in prices},
        },
    )


def build(source: Path, dest: Path = SAMPLE_DIR) -> list[Path]:
    """Convert every data file of ``source`` into ``dest``; returns the written paths."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for f in data_files(source):
        bars = load_bars(f)
        seconds = bars.index.as_unit("s").asi8.astype(np.int64)
        out = dest / f"{f.stem}.parquet"
        write_compact_parquet(out, seconds, {k: bars[k].to_numpy() for k in PRICE_COLUMNS})
        written.append(out)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of raw <INSTRUMENT>_<MINUTES>.csv files")
    parser.add_argument("--dest", type=Path, default=SAMPLE_DIR)
    args = parser.parse_args()
    paths = build(args.source, args.dest)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e6:.2f} MB, to {args.dest}")


if __name__ == "__main__":
    main()
