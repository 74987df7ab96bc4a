"""What the message-contract tests share: the examples, and JSON as other producers send it."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from schemas import Message
from schemas.examples import example_messages

EXAMPLES = example_messages()
M = TypeVar("M", bound=Message)


def wire(message: Message) -> dict[str, Any]:
    """The message as a JSON object, as a non-Python producer would send it."""
    data: dict[str, Any] = json.loads(message.to_bytes())
    return data


def parse(cls: type[M], data: dict[str, Any]) -> M:
    """``data`` as wire bytes, parsed by ``cls``."""
    return cls.from_bytes(json.dumps(data).encode())
