"""Request bodies: fixed-length or chunked, optionally compressed, read as a stream.

clickhouse-connect streams inserts with ``Transfer-Encoding: chunked`` and,
when compression is on, sends each Native block as its own lz4 or zstd frame
(gzip as one stream). Decoding chunk by chunk keeps an insert's memory at one
block, however large the batch, exactly as a ClickHouse server would.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, cast

from pipeline.stack.clickhouse.protocol import BAD_ARGUMENTS, NOT_IMPLEMENTED, ClickHouseError

READ_SIZE = 1 << 20


class Readable(Protocol):
    """The part of a socket file the body readers use."""

    def read(self, size: int = -1, /) -> bytes: ...  # noqa: D102
    def readline(self, size: int = -1, /) -> bytes: ...  # noqa: D102


def _bad(message: str) -> ClickHouseError:
    return ClickHouseError.new(BAD_ARGUMENTS, message)


def _read_exact(stream: Readable, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        msg = "The request body ended before its declared length"
        raise _bad(msg)
    return data


def _chunked(stream: Readable) -> Iterator[bytes]:
    while True:
        line = stream.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            msg = "Malformed chunked transfer encoding"
            raise _bad(msg) from None
        if size == 0:
            while stream.readline(1024).strip():  # trailers, up to the blank line
                pass
            return
        yield _read_exact(stream, size)
        if _read_exact(stream, 2) != b"\r\n":
            msg = "Malformed chunked transfer encoding: missing CRLF after a chunk"
            raise _bad(msg)


def _sized(stream: Readable, length: int) -> Iterator[bytes]:
    while length > 0:
        data = _read_exact(stream, min(length, READ_SIZE))
        length -= len(data)
        yield data


def raw_chunks(stream: Readable, headers: Mapping[str, str]) -> Iterator[bytes]:
    """The body as it arrives, de-chunked but still encoded (header names in lower case)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(stream)
    try:
        length = int(headers.get("content-length", "0") or "0")
    except ValueError:
        msg = "Malformed Content-Length header"
        raise _bad(msg) from None
    return _sized(stream, length)


def _module(name: str, package: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        msg = f"Content-Encoding needs the {package} package, which is not installed here"
        raise ClickHouseError.new(NOT_IMPLEMENTED, msg) from None


def _zstd() -> Any:
    try:
        return importlib.import_module("compression.zstd")  # Python 3.14+
    except ImportError:
        return _module("backports.zstd", "backports.zstd")


def decompressor_factory(encoding: str) -> Callable[[], Any] | None:
    """A constructor of streaming decompressors for a Content-Encoding, None for identity.

    Raises:
        ClickHouseError: for an encoding this server cannot decode.
    """
    encoding = encoding.strip().lower()
    if encoding in {"", "identity"}:
        return None
    if encoding == "gzip":
        return lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj
    if encoding == "lz4":
        return cast("Callable[[], Any]", _module("lz4.frame", "lz4").LZ4FrameDecompressor)
    if encoding == "zstd":
        return cast("Callable[[], Any]", _zstd().ZstdDecompressor)
    msg = f"Unknown HTTP compression method {encoding!r}: use lz4, zstd, gzip or deflate"
    raise ClickHouseError.new(NOT_IMPLEMENTED, msg)


def decompress(chunks: Iterator[bytes], factory: Callable[[], Any]) -> Iterator[bytes]:
    """Decode a stream of concatenated frames (each insert block may be one frame)."""
    current = factory()
    pending = False
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = current.decompress(data)
            except Exception as exc:
                msg = f"Cannot decompress the request body: {exc}"
                raise _bad(msg) from None
            pending = True
            if out:
                yield out
            if current.eof:
                data, current, pending = current.unused_data, factory(), False
            else:
                data = b""
    if pending:
        msg = "The compressed request body is truncated"
        raise _bad(msg)


def body_chunks(stream: Readable, headers: Mapping[str, str]) -> Iterator[bytes]:
    """The decoded body as a stream of byte chunks (header names in lower case)."""
    chunks = raw_chunks(stream, headers)
    factory = decompressor_factory(headers.get("content-encoding", ""))
    return chunks if factory is None else decompress(chunks, factory)
