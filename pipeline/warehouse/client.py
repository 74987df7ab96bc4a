"""Connect any component to ClickHouse over HTTP: one code path for both stacks.

Locally the URL points at the embedded warehouse, in production at a
ClickHouse server; nothing else differs. Errors name the URL and the setting
to fix, never the password. A password left unset comes from the state
folder's generated file, even when the settings were built before
``pipeline up`` generated it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pipeline.config import ClickHouseSettings, Settings, is_loopback, with_stored_secrets
from pipeline.errors import WarehouseError
from pipeline.warehouse.errors import WarehouseUnreachableError

_AUTH_CODES = {192, 193, 194, 516}
_UNKNOWN_DATABASE = 81


def display_url(url: str) -> str:
    """The URL without any user info, safe to print."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def session_settings(ch: ClickHouseSettings) -> dict[str, Any]:
    """ClickHouse settings every request of a client carries.

    In cluster mode, inserts into a ``Distributed`` table are synchronous: the
    insert returns only once one replica of every shard stored its part, under
    the insert's ``insert_deduplication_token``. The default (queued on the
    receiving node's disk, sent later, possibly merged with other inserts)
    would acknowledge a batch the sink then commits in Kafka even if that node
    dies before sending it, and a retry would not meet its token.
    """
    return {} if ch.cluster is None else {"insert_distributed_sync": 1}


def connect(settings: Settings, **options: Any) -> Any:
    """A clickhouse-connect HTTP client for ``settings.clickhouse``, its database selected.

    Datetimes come back timezone-aware (``tz_mode="aware"``). Compression is
    off on loopback, where it only costs CPU, and on elsewhere. ``options``
    pass through to ``clickhouse_connect.get_client`` and override these and
    the database (``database="default"`` before the migrations create it).
    :func:`session_settings` go with every request.

    Raises:
        WarehouseUnreachableError: nothing answers at the URL.
        WarehouseError: the server refused the credentials or lacks the database.
        SecretFileError: the generated password's file is readable by others.
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    ch = with_stored_secrets(settings).clickhouse
    host, port = ch.host_port
    url = display_url(ch.url)
    options.setdefault("compress", not is_loopback(host))
    options.setdefault("tz_mode", "aware")
    options.setdefault("database", ch.database)
    if session := session_settings(ch):
        options["settings"] = {**session, **options.get("settings", {})}
    try:
        return clickhouse_connect.get_client(
            host=host,
            port=port,
            secure=urlsplit(ch.url).scheme == "https",
            username=ch.username,
            password=ch.password.get_secret_value(),
            **options,
        )
    except OperationalError:
        msg = f"ClickHouse at {url} is not reachable: is `pipeline up` running?"
        raise WarehouseUnreachableError(msg) from None
    except DatabaseError as exc:
        code = getattr(exc, "code", None)
        if code in _AUTH_CODES:
            msg = (
                f"ClickHouse at {url} refused user {ch.username!r}: check "
                f"PIPELINE_CLICKHOUSE__USERNAME and PIPELINE_CLICKHOUSE__PASSWORD"
            )
        elif code == _UNKNOWN_DATABASE:
            msg = (
                f"ClickHouse at {url} has no database {options['database']!r}: run the migrations "
                f"(`pipeline up` does) or fix PIPELINE_CLICKHOUSE__DATABASE"
            )
        else:
            msg = f"ClickHouse at {url} refused the connection: {exc}"
        raise WarehouseError(msg) from None
