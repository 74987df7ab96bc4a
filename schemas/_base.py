"""Base classes: immutable, strict, JSON-first models.

Validation is strict (no ``"1"`` for an int, no ``1`` for a bool), except
where JSON itself has no type for the value: an ISO 8601 string is a
datetime, an integer is a float, an array is a tuple. Bytes travel as
base64 in JSON (URL-safe on output; both alphabets accepted on input).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, field_validator


class Part(BaseModel):
    """A nested piece of a message: immutable, strict, no unknown fields."""

    # Literal here (not a shared constant) so the pydantic mypy plugin sees frozen=True.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        use_attribute_docstrings=True,
        validate_default=True,
    )


class Message(Part):
    """A top-level message carried on a topic.

    Raises:
        pydantic.ValidationError: from the constructor and from
            :meth:`from_bytes` when the data breaks the contract.
    """

    schema_version: Literal[1] = 1
    """Version of this contract; consumers refuse versions they do not know."""

    @field_validator("schema_version", mode="before")
    @classmethod
    def _no_bool_version(cls, value: object) -> object:
        # A Literal[1] alone takes True (True == 1); the JSON Schema's const 1 does not.
        if isinstance(value, bool):
            msg = "schema_version is an integer, not a boolean"
            raise ValueError(msg)
        return value

    def to_bytes(self) -> bytes:
        """Serialise to compact UTF-8 JSON, the wire format of every topic."""
        # What model_dump_json().encode() gives, without its Python wrapper and the str copy.
        data: bytes = self.__pydantic_serializer__.to_json(self)
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse and validate wire bytes produced by :meth:`to_bytes` or any JSON producer."""
        message: Self = cls.__pydantic_validator__.validate_json(data)  # model_validate_json's core
        return message
