"""Constrained types shared by every message.

Each alias carries its bounds in the type, so the same rule holds in Python,
in the exported JSON Schema and for producers written in other languages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field, Strict, StringConstraints

MAX_TOKENS = 1_000_000
"""Upper bound of every token count; far above any context window in use."""

MAX_INT64 = 2**63 - 1
"""Kafka offsets and row versions are signed 64-bit integers downstream."""

MAX_ID_CHARS = 128
MAX_SHORT_TEXT = 1024
MAX_LONG_TEXT = 4096
MAX_TRAJECTORY_POINTS = 512

_NO_SPACE_OR_CONTROL = r"^[^\s\x00-\x1f\x7f-\x9f]+$"
_SEGMENT_PART = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def _to_utc(value: datetime) -> datetime:
    # One representation per instant: equal instants serialise (and hash) alike.
    return value.astimezone(UTC)


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=_NO_SPACE_OR_CONTROL),
]
"""An identifier: 1 to 128 characters, no whitespace, no control characters."""

SegmentPart = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=_SEGMENT_PART),
]
"""A tenant or task name: ASCII letters, digits, ``.``, ``_``, ``-``; no ``/``."""

ShortText = Annotated[str, StringConstraints(max_length=MAX_SHORT_TEXT)]
"""Free text up to 1024 characters (a trial answer, a gold answer, a reason)."""

LongText = Annotated[str, StringConstraints(max_length=MAX_LONG_TEXT)]
"""Free text up to 4096 characters (a final answer, a correction, an error)."""

Confidence = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A finite probability in [0, 1]."""

Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A finite fraction of traffic in [0, 1]."""

TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
"""A number of tokens, 0 to 1,000,000."""

TokenBudget = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
"""A token budget: at least one token, at most 1,000,000."""

Count = Annotated[int, Field(ge=0, le=MAX_INT64)]
"""A non-negative 64-bit integer (offsets, partitions, counters)."""

Version = Annotated[int, Field(ge=1, le=MAX_INT64)]
"""A version number, starting at 1."""

Timestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC; naive datetimes are refused."""

LaxTuple = Strict(False)
"""Marker for tuple fields: accept a list from Python callers, items stay strict."""

LengthBucket = Literal["short", "medium", "long"]
Arm = Literal["production", "candidate"]
StopReason = Literal["confident", "budget", "natural_end"]
LoadMode = Literal["offpeak", "normal", "peak"]
FeedbackKind = Literal["thumbs", "correction", "regenerate"]
AckStatus = Literal["applied", "refused"]
ErrorKind = Literal["decode", "validate", "process"]
SigningAlgorithm = Literal["hmac-sha256", "ed25519"]
