"""Bulk writes: one statement for many rows.

On PostgreSQL the rows travel in one statement with a fixed text (prepared once by the server),
in one round trip, in one of two forms:

- as one JSON array written by orjson, spread out again by `json_populate_recordset`: a quarter
  of the client CPU of per-column arrays for wide rows (psycopg's list dumper is Python, element
  by element), at about the same server time;
- for the outbox (`ARRAY_TABLES`), as one array per column spread out by `unnest`: its values are
  long JSON texts, which the server would have to unescape (2,000 outbox rows: 41 ms as JSON,
  20 ms as arrays); in process the write phase took 1.24 instead of 1.54 s per 30,000 events
  (three alternating runs each, bench/RESULTS.md).

Either way it is about three times faster than a pipelined executemany, which costs Python
work per row. SQLite keeps SQLAlchemy's executemany (in-process: no round trip to save).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
from collections.abc import Sequence

import orjson
from psycopg.rows import dict_row, namedtuple_row, tuple_row
from psycopg.types.json import Json
from sqlalchemy import Boolean, Table, bindparam
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from services.store import tables as _tables
from services.store.db import insert_stmt

_PG = postgresql.dialect()
_STATEMENTS: dict[tuple, object] = {}  # statement text by shape (SQLite: with its parameter order)


def _pg_array_type(column) -> str:
    return column.type.compile(dialect=_PG) + "[]"


# Tables written as one array per column instead of JSON rows (see the module's docstring).
ARRAY_TABLES: frozenset[str] = frozenset({"outbox"})


def _insert_sql(table: Table, columns: tuple[str, ...], conflict: tuple[str, ...] | None, update: bool,
                returning: tuple[str, ...]) -> str:
    key = (table.name, columns, conflict, update, returning)
    if key not in _STATEMENTS:
        quote = _PG.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        # In row order, so serial ids (the outbox's publishing order) follow the order of `rows`.
        if table.name in ARRAY_TABLES:  # %(name)b: binary arrays, no escaping of the strings at all
            arrays = ", ".join(f"%(c{i})b::{_pg_array_type(table.c[name])}" for i, name in enumerate(columns))
            aliases = ", ".join(f"c{i}" for i in range(len(columns)))
            source = f"SELECT {aliases} FROM unnest({arrays}) WITH ORDINALITY AS u({aliases}, n) ORDER BY n"
        else:
            source = (f"SELECT {names} FROM json_populate_recordset(NULL::{table.name}, %(rows)s) "
                      f"WITH ORDINALITY AS r ORDER BY r.ordinality")
        sql = f"INSERT INTO {table.name} ({names}) {source}"
        if conflict is not None:
            others = [c for c in columns if c not in conflict]
            if update and others:
                sql += (f" ON CONFLICT ({', '.join(map(quote, conflict))}) DO UPDATE SET "
                        + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in others))
            else:
                sql += f" ON CONFLICT ({', '.join(map(quote, conflict))}) DO NOTHING"
        if returning:
            sql += " RETURNING " + ", ".join(map(quote, returning))
        _STATEMENTS[key] = sql
    return _STATEMENTS[key]


# Row values are str, int, bool or None (every column is VARCHAR, INTEGER, BIGINT or BOOLEAN). Of
# other types orjson writes what it knows its own way (dates in ISO form); the rest as their str.
_dump_rows = functools.partial(orjson.dumps, default=str)


class Later:
    """Rows a statement returns, read when asked for.

    Inside `pipelined` a statement is only sent; reading its rows at once would cost a round trip
    of its own. Read them after the block: the block's end fetched every result in one.
    """

    def __init__(self, cursors=(), rows=None):
        self._cursors = list(cursors)
        self._rows = rows

    def rows(self) -> list:
        if self._rows is None:
            self._rows = []
            for cursor in self._cursors:
                with cursor:
                    self._rows += cursor.fetchall()
            self._cursors = []
        return self._rows


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict], *, conflict: Sequence[str] | None = None,
                update: bool = False, returning: Sequence[str] = ()) -> list[tuple]:
    """Insert `rows`; on a `conflict` of those columns update the rest or skip.

    Returns the `returning` columns of the rows written (on PostgreSQL in no particular order).
    """
    return bulk_insert_later(conn, table, rows, conflict=conflict, update=update, returning=returning).rows()


def bulk_insert_later(conn: Connection, table: Table, rows: Sequence[dict], *, conflict: Sequence[str] | None = None,
                      update: bool = False, returning: Sequence[str] = ()) -> Later:
    """`bulk_insert`, its `returning` rows read when asked for (see `Later`)."""
    conflict = tuple(conflict) if conflict is not None else None
    returning = tuple(returning)
    by_shape: dict[frozenset[str], list[dict]] = {}  # the same columns in another order: the same statement
    for row in rows:
        by_shape.setdefault(frozenset(row), []).append(row)
    if conn.dialect.name != "postgresql":
        out: list[tuple] = []
        for same in by_shape.values():
            out += _executemany(conn, table, same, conflict, update, returning)
        return Later(rows=out)
    cursors = []
    for same in by_shape.values():
        columns = tuple(same[0])
        sql = _insert_sql(table, columns, conflict, update, returning)
        # The driver's own cursor: its results can be read after a psycopg pipeline (see `pipelined`).
        cursor = conn.connection.dbapi_connection.cursor(row_factory=tuple_row)
        cursor.execute(sql, {f"c{i}": [row[name] for row in same] for i, name in enumerate(columns)}
                       if table.name in ARRAY_TABLES else {"rows": Json(same, dumps=_dump_rows)})
        if returning:
            cursors.append(cursor)
        else:
            cursor.close()
    return Later(cursors, rows=None if returning else [])


def _executemany(conn: Connection, table: Table, rows, conflict, update, returning) -> list[tuple]:
    """SQLite: the rows through the driver's executemany, the statement compiled once per shape.

    Built and compiled anew for every call, the upserts cost SQLAlchemy more than SQLite's work:
    at 16 events per batch, 4,144 compilations took a quarter of the batch's time (a new
    `excluded` alias each time defeats SQLAlchemy's statement cache).
    """
    columns = tuple(rows[0])
    if returning:  # sqlite3's executemany returns no rows: all of them in one statement instead
        return sqlite_rows(conn, _sqlite_insert_returning(table, columns, conflict, update, returning),
                           (orjson.dumps([[row[c] for c in columns] for row in rows], default=str).decode(),))
    key = ("sqlite", table.name, columns, conflict, update, returning)
    if (compiled := _STATEMENTS.get(key)) is None:
        stmt = insert_stmt(conn, table).values({c: bindparam(c) for c in columns})
        if conflict is not None:
            others = {c: stmt.excluded[c] for c in columns if c not in conflict}
            stmt = (stmt.on_conflict_do_update(index_elements=list(conflict), set_=others) if update and others
                    else stmt.on_conflict_do_nothing(index_elements=list(conflict)))
        if returning:
            stmt = stmt.returning(*(table.c[c] for c in returning))
        sql = stmt.compile(dialect=conn.dialect)
        compiled = _STATEMENTS[key] = (str(sql), tuple(sql.positiontup))
    sql, order = compiled
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.executemany(sql, [[row[name] for name in order] for row in rows])
        return []
    finally:
        cursor.close()


def _sqlite_insert_returning(table: Table, columns: tuple[str, ...], conflict, update: bool,
                             returning: tuple[str, ...]) -> str:
    """SQLite: INSERT … RETURNING of many rows given as one JSON array of arrays, in row order (ids follow it)."""
    key = ("sqlite-returning", table.name, columns, conflict, update, returning)
    if (sql := _STATEMENTS.get(key)) is None:
        names = ", ".join(f'"{c}"' for c in columns)
        values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
        sql = f"INSERT INTO {table.name} ({names}) SELECT {values} FROM json_each(?) WHERE true ORDER BY key"
        if conflict is not None:
            others = [c for c in columns if c not in conflict]
            target = ", ".join(f'"{c}"' for c in conflict)
            sql += (f" ON CONFLICT ({target}) DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in others)
                    if update and others else f" ON CONFLICT ({target}) DO NOTHING")
        sql += " RETURNING " + ", ".join(f'"{c}"' for c in returning)
        _STATEMENTS[key] = sql
    return sql


def increment_versions(conn: Connection, keys: Sequence[str]) -> Later:
    """Add one to the `key_versions` counter of each key (creating it at 1); the new versions as (key, version) rows."""
    if conn.dialect.name == "postgresql":
        return send(conn, "INSERT INTO key_versions (key, version) SELECT k, 1 FROM unnest(%(keys)b::VARCHAR[]) AS k "
                          "ON CONFLICT (key) DO UPDATE SET version = key_versions.version + 1 RETURNING key, version",
                    {"keys": list(keys)}, prepare=None)
    # SQLite: the same in one fixed statement, the keys as one JSON array (`sqlite_rows`)
    return Later(rows=sqlite_rows(conn, "INSERT INTO key_versions (key, version) SELECT value, 1 FROM json_each(?) "
                                        "WHERE true ON CONFLICT (key) DO UPDATE SET version = version + 1 "
                                        "RETURNING key, version", (json_list(keys),)))


@contextlib.contextmanager
def pipelined(conn: Connection):
    """Send the statements of the block without waiting for each reply (psycopg pipeline mode).

    Only for statements whose results are read through the driver's cursor (as `bulk_insert`
    does) or not at all; an error surfaces at the next read or at the end of the block. Each
    read inside the block waits for a round trip; results read after it (`Later`) come with
    the block's end, so a block whose rows are all read after it costs a single round trip.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    with conn.connection.dbapi_connection.pipeline():
        yield


def send_commit(conn: Connection) -> None:
    """PostgreSQL, inside `pipelined`: COMMIT with the block's statements, in its one round trip.

    The transaction's context manager then finds the connection idle and its commit costs
    nothing. Nothing may run in the transaction after this. SQLite: nothing (the context commits).
    """
    if conn.dialect.name == "postgresql":
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute("COMMIT")


def fetch_rows(conn: Connection, sql: str, params: dict, row_factory=tuple_row) -> list:
    """Run a fixed statement on the driver's cursor; rows as plain tuples unless told otherwise.

    For the reads every batch makes: building and compiling a SQLAlchemy select costs about
    150 µs of Python per call, the statement itself often less. Written once in PostgreSQL's
    form; on SQLite it runs translated (`sqlite_form`). Not prepared, for the reason
    `select_by_ids` gives.
    """
    return send(conn, sql, params, row_factory).rows()


def send(conn: Connection, sql: str, params: dict, row_factory=tuple_row, prepare: bool | None = False) -> Later:
    """`fetch_rows`, the rows read when asked for (see `Later`; on SQLite they are read at once)."""
    if conn.dialect.name != "postgresql":
        return Later(rows=_sqlite_read(conn, sql, params, row_factory))
    cursor = conn.connection.dbapi_connection.cursor(row_factory=row_factory)
    cursor.execute(sql, params, prepare=prepare)
    return Later([cursor])


# PostgreSQL's list parameters, `x = ANY(%(name)b::TYPE[])` and `x <> ALL(...)`, read on SQLite as one JSON
# list each (`json_each`); other parameters `%(name)s` become `:name`.
_ANY = re.compile(r"= ANY\(%\((\w+)\)[sb]::[\w ()]+\[\]\)")
_ALL = re.compile(r"<> ALL\(%\((\w+)\)[sb]::[\w ()]+\[\]\)")
_PARAMETER = re.compile(r"%\((\w+)\)[sb]")
_BOOLEANS = frozenset(c.name for table in _tables.metadata.tables.values() for c in table.c
                      if isinstance(c.type, Boolean))


def sqlite_form(sql: str) -> str:
    """A fixed PostgreSQL statement as SQLite runs it (lists as JSON; see `_ANY`). Only the forms the
    store writes are known: anything else PostgreSQL-only is refused rather than run wrong."""
    translated = _STATEMENTS.get(("sqlite-form", sql))
    if translated is None:
        translated = _ALL.sub(r"NOT IN (SELECT value FROM json_each(:\1))",
                              _ANY.sub(r"IN (SELECT value FROM json_each(:\1))", sql))
        translated = _PARAMETER.sub(r":\1", translated)
        if "::" in translated or "unnest(" in translated:
            raise ValueError(f"no SQLite form for {sql!r}")
        _STATEMENTS[("sqlite-form", sql)] = translated
    return translated


def _sqlite_read(conn: Connection, sql: str, params: dict, row_factory) -> list:
    """SQLite: `fetch_rows`'s statement and rows, in the `row_factory`'s shape (tuple, dict, named tuple);
    booleans come back as booleans, as from PostgreSQL (SQLite stores 0 and 1)."""
    values = {name: json_list(value) if isinstance(value, (list, tuple, set, frozenset)) else value
              for name, value in params.items()}
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        rows = cursor.execute(sqlite_form(sql), values).fetchall()
        if row_factory is tuple_row:
            return rows
        names = [d[0] for d in cursor.description]
    finally:
        cursor.close()
    booleans = [i for i, name in enumerate(names) if name in _BOOLEANS]
    if booleans:
        rows = [tuple(bool(v) if i in booleans and v is not None else v for i, v in enumerate(row)) for row in rows]
    if row_factory is dict_row:
        return [dict(zip(names, row)) for row in rows]
    if row_factory is namedtuple_row:
        shape = _named_tuple(tuple(names))
        return [shape._make(row) for row in rows]
    raise ValueError(f"unknown row factory {row_factory!r}")


@functools.lru_cache(maxsize=64)
def _named_tuple(names: tuple[str, ...]):
    return collections.namedtuple("Row", names)


def select_by_ids(conn: Connection, table: Table, key: str, ids: Sequence[str]) -> list[dict]:
    """The rows of `table` whose `key` is one of `ids`, as dicts, in one round trip.

    `key = ANY(binary array)`: one parameter instead of an IN list that SQLAlchemy and psycopg
    render and parse anew for every length. Not prepared: a generic plan does not know the
    array's length and may scan the table where the index is far better.
    """
    return fetch_rows(conn, select_by_ids_sql(table, key), {"ids": list(ids)}, dict_row)


def select_by_ids_sql(table: Table, key: str) -> str:
    """`select_by_ids`'s statement: its one parameter is `ids`."""
    sql = _STATEMENTS.get(("select", table.name, key))
    if sql is None:
        sql = (f"SELECT {', '.join(c.name for c in table.c)} FROM {table.name} "
               f"WHERE {key} = ANY(%(ids)b::{_pg_array_type(table.c[key])})")
        _STATEMENTS[("select", table.name, key)] = sql
    return sql


def select_by_keys(conn: Connection, table: Table, names: Sequence[str], keys: Sequence[tuple]) -> list[dict]:
    """The rows of `table` whose key columns `names` hold one of `keys`, as dicts, in one fixed statement.

    A one-column key: `select_by_ids`. A composite one travels as one array per column (PostgreSQL,
    `unnest`) or as one JSON array of keys (SQLite): building the IN list's clause anew coerced every
    key value through SQLAlchemy, most of a small SQLite batch's prefetch time.
    """
    if len(names) == 1:
        return select_by_ids(conn, table, names[0], [k[0] for k in keys])
    postgres = conn.dialect.name == "postgresql"
    shape = ("select-keys", postgres, table.name, tuple(names))
    sql = _STATEMENTS.get(shape)
    if sql is None:
        columns = ", ".join(c.name for c in table.c)
        if postgres:
            arrays = ", ".join(f"%(k{i})b::{_pg_array_type(table.c[name])}" for i, name in enumerate(names))
            wanted = f"SELECT * FROM unnest({arrays})"
        else:
            wanted = ("SELECT " + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(names)))
                      + " FROM json_each(:keys)")
        sql = _STATEMENTS[shape] = f"SELECT {columns} FROM {table.name} WHERE ({', '.join(names)}) IN ({wanted})"
    if postgres:
        return fetch_rows(conn, sql, {f"k{i}": [k[i] for k in keys] for i in range(len(names))}, dict_row)
    return _sqlite_read(conn, sql, {"keys": orjson.dumps([list(k) for k in keys]).decode()}, dict_row)


def sqlite_rows(conn: Connection, sql: str, params: Sequence = ()) -> list[tuple]:
    """SQLite: a fixed statement through the driver, its rows as tuples (strings and integers only: no
    SQLAlchemy types apply). Lists travel as one JSON text (`json_list`) read by `json_each(?)`.

    For the statements every batch makes: building and compiling their SQLAlchemy form cost more
    than SQLite's work on them (a 16-event batch spent a fifth of its time so).
    """
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        cursor.close()


def json_list(values) -> str:
    """A list as the one parameter `json_each(?)` reads (`sqlite_rows`)."""
    return orjson.dumps(list(values)).decode()
