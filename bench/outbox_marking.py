"""The server's cost of marking published outputs sent: delete the rows (what the relay does) against the
earlier `UPDATE … SET sent_at` (the baseline), alternating, on the real outbox table and a durable server.

Each round fills the outbox with `--batches` × `--rows` outputs of about 1 KB (committed as the processor
commits them), checkpoints, then marks them the round's way, one transaction per batch as the relay does,
and reports µs per row. The rows are then removed and the table vacuumed, so every round starts alike.

    uv run --frozen python bench/outbox_marking.py [--rounds 4] [--batches 28] [--rows 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _harness as h
import orjson

from services.store.db import create_tables, make_engine

MARKINGS = {
    "update (baseline)": "UPDATE outbox SET sent_at = %(now)s WHERE id = ANY(%(ids)b::bigint[])",
    "delete": "DELETE FROM outbox WHERE id = ANY(%(ids)b::bigint[]) AND sent_at IS NULL",
}


def _fill(cursor, batches: int, rows: int) -> list[list[int]]:
    value = orjson.dumps({"alert_id": "a" * 32, "detail": "x" * 900}).decode()
    filled = []
    for _ in range(batches):
        cursor.execute("INSERT INTO outbox (topic, key, value, created_at) SELECT 'kam.alerts', k, %(value)s, "
                       "'2026-12-02T00:00:00Z' FROM unnest(%(keys)b::VARCHAR[]) AS k RETURNING id",
                       {"value": value, "keys": [f"K-{i}" for i in range(rows)]})
        filled.append([i for (i,) in cursor.fetchall()])
        cursor.connection.commit()
    return filled


def main(args) -> None:
    with h.postgres(args.database_url) as url:
        engine = make_engine(url)
        create_tables(engine)
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            per_row: dict[str, list[float]] = {name: [] for name in MARKINGS}
            for round_ in range(args.rounds):
                order = list(MARKINGS) if round_ % 2 == 0 else list(reversed(MARKINGS))
                for name in order:
                    with conn.cursor() as cursor:
                        batches = _fill(cursor, args.batches, args.rows)
                        conn.autocommit = True
                        cursor.execute("CHECKPOINT")  # every round starts with the same full-page writes ahead
                        conn.autocommit = False
                        began = time.perf_counter()
                        for ids in batches:
                            cursor.execute(MARKINGS[name], {"ids": ids, "now": "2026-12-02T00:00:01Z"})
                            conn.commit()
                        elapsed = time.perf_counter() - began
                        per_row[name].append(elapsed / (args.batches * args.rows) * 1e6)
                        cursor.execute("DELETE FROM outbox")
                        conn.commit()
                        conn.autocommit = True
                        cursor.execute("VACUUM outbox")
                        conn.autocommit = False
                    print(f"round {round_ + 1} {name:18} {per_row[name][-1]:6.1f} µs per row", flush=True)
        finally:
            raw.close()
            engine.dispose()
    baseline = statistics.median(per_row["update (baseline)"])
    for name, values in per_row.items():
        median = statistics.median(values)
        print(f"{name:18} median {median:6.1f} µs per row (ratio to the baseline {median / baseline:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=28)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--database-url")
    main(parser.parse_args())
