"""``playpulse sql`` with a read key: the project the key belongs to, and for a key limited
to a vendor, a database that holds nothing but that vendor's shop events.

A vendor-scoped key must not reach other vendors' rows through ad hoc SQL, which can name
any table of a connection. So it does not get the project's connection with a filter on
top: it gets a fresh in-memory DuckDB holding one table, ``shop_events``, with only the
rows whose ``vendor_id`` is the key's vendor, and with file and network access off and
the configuration locked (so ``read_parquet`` of the lake, ``ATTACH`` or ``COPY`` cannot
reach anything else).
"""

from __future__ import annotations

import duckdb

from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.projects.registry import project_settings, resolve_key

__all__ = ["read_key_scope", "vendor_connection"]


def read_key_scope(settings: Settings, key: str) -> tuple[Settings, str | None]:
    """The settings of the project read key ``key`` belongs to and the vendor it is
    limited to (``None``: the whole project).

    Raises :class:`~playpulse.errors.ConfigError` when ``key`` is not a read key in
    force in ``settings``' data dir (the message never repeats the key)."""
    found = resolve_key(settings, key.strip())
    if found is None or found[0].kind != "read":
        raise ConfigError(f"that is not a read key in force of a project in {settings.data_dir}")
    info = found[0]
    return project_settings(settings, info.project), info.vendor_id


def vendor_connection(project: Settings, vendor: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection holding only ``shop_events`` rows of ``vendor`` in project
    ``project`` (its settings, :func:`read_key_scope`), with external access disabled and
    the configuration locked."""
    from playpulse.query.engine import connect

    source = connect(project)
    try:
        rows = source.sql(
            "SELECT * FROM shop_events WHERE vendor_id = $vendor", params={"vendor": vendor}
        ).to_arrow_table()
    finally:
        source.close()
    con = duckdb.connect(":memory:")
    con.register("vendor_rows", rows)
    con.execute("CREATE TABLE shop_events AS SELECT * FROM vendor_rows")
    con.unregister("vendor_rows")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con
