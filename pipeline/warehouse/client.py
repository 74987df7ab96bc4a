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

from pipeline.config import Settings, is_loopback, with_stored_secrets
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


def connect(settings: Settings, **options: Any) -> Any:
    """A clickhouse-connect HTTP client for ``settings.clickhouse``, its database selected.

    Datetimes come back timezone-aware (``tz_mode="aware"``). Compression is
    off on loopback, where it only costs CPU, and on elsewhere. ``options``
    pass through to ``clickhouse_connect.get_client`` and override these and
    the database (``database="default"`` before the migrations create it).

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
