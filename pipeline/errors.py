"""The exception tree of the pipeline.

Every error the pipeline raises on purpose derives from :class:`PipelineError`;
each subclass says in its docstring what the operator should do. The CLI turns
any of them into one line on stderr and a non-zero exit code.

- PipelineError
    - ConfigError: a setting is invalid; the message names the setting.
        - TrajectoryFileError: a trajectory file cannot be read; file, line and reason.
        - SecretFileError: a generated secret's file is unsafe (readable by others) or unreadable.
    - PrerequisiteError: a program the stack needs is missing (Java, Maven).
    - StackError: an embedded service could not start, or stop.
        - PortInUseError: a port the stack needs is taken by another process.
    - ContractError: a message does not satisfy its schema.
    - WarehouseError: ClickHouse refused or could not run a statement.
    - RegistryError: MLflow refused or could not be reached.
    - AuditError: an audit event did not reach the audit topic.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A setting is invalid: fix the environment variable the message names."""


class TrajectoryFileError(ConfigError):
    """A trajectory file cannot be used: the message names the file, line and reason."""


class SecretFileError(ConfigError):
    """A secret file is unsafe or unreadable: fix its mode (``chmod 600``) and rotate it."""


class PrerequisiteError(PipelineError):
    """A program the embedded stack needs is missing: install what the message says."""


class StackError(PipelineError):
    """An embedded service failed to start or stop: read its log under the state folder."""


class PortInUseError(StackError):
    """A port the stack needs is taken: stop that process or set another port."""


class ContractError(PipelineError):
    """A message violates its contract: it belongs on the dead-letter topic, not in the data."""


class WarehouseError(PipelineError):
    """ClickHouse could not run a statement: check the warehouse URL and its log."""


class RegistryError(PipelineError):
    """MLflow could not be reached or refused a request: check the tracking URI."""


class AuditError(PipelineError):
    """The audit topic did not take an event: check Kafka; MLflow tags still hold the record."""
