"""Benchmark the contacts CSV import: rows per second and peak memory.

    python bench/import_contacts.py            # 100,000 and 1,000,000 rows
    python bench/import_contacts.py 50000      # any row counts

Each run generates its CSV into a temporary folder, imports it into a fresh SQLite database (or
TEST_DATABASE_URL when set), and prints rows/s and the process's peak resident memory for the
first import, then re-imports the same file (all updates) under tracemalloc for the peak of Python
allocations. Memory must stay flat as the row count grows: the import
streams the file and writes it in chunks.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import create_app  # noqa: E402
from app.config import TestConfig  # noqa: E402
from app.extensions import db  # noqa: E402
from app.services.contacts import import_csv  # noqa: E402


def generate(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,last_transaction,list,city,plan\n")
        for i in range(rows):
            out.write(
                f"user{i}@example{i % 97}.org,User {i},2024-{1 + i % 12:02d}-{1 + i % 28:02d},"
                f"L{i % 5},City {i % 1000},{'gold' if i % 3 else 'silver'}\n"
            )


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.csv"
        generate(path, rows)
        config = TestConfig(tmp)
        if not config.SQLALCHEMY_DATABASE_URI.startswith("sqlite"):
            config.SQLALCHEMY_ENGINE_OPTIONS = {}  # the SQLite busy timeout means nothing there
        app = create_app(config)
        with app.app_context():
            db.create_all()
            rss_before = peak_rss_mb()
            # First import: every row is new. Timed without tracemalloc, which slows Python
            # several times over.
            started = time.perf_counter()
            with path.open("rb") as stream:
                result = import_csv(stream, list_name="Bench")
            elapsed = time.perf_counter() - started
            rss_after = peak_rss_mb()
            # Re-import: every row is an update; measured under tracemalloc for the peak of
            # Python allocations (its speed is therefore not comparable).
            tracemalloc.start()
            started = time.perf_counter()
            with path.open("rb") as stream:
                again = import_csv(stream, list_name="Bench")
            elapsed_again = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert result.created == rows and again.updated == rows, (result, again)
            print(
                f"{rows:>9,} rows  {path.stat().st_size / 1e6:6.1f} MB file  "
                f"import {elapsed:6.1f} s = {rows / elapsed:7,.0f} rows/s  "
                f"peak RSS {rss_after:6.1f} MB (before {rss_before:.1f} MB)  "
                f"re-import under tracemalloc {elapsed_again:6.1f} s, "
                f"tracemalloc peak {peak / 1e6:5.1f} MB  [{db.engine.dialect.name}]",
                flush=True,
            )
            db.session.remove()
            if db.engine.dialect.name == "postgresql":
                db.drop_all()
            db.engine.dispose()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    for rows in sizes:
        run(rows)


if __name__ == "__main__":
    main()
