"""The fleet seen from its policy acks: who applied what, who refused, who is behind.

- ``view``: pure; acks, publications and a clock -> one row per node and a verdict.
- ``reader``: thin Kafka adapter; acks from a point in time, publications on the control topic.
- ``errors``: :class:`FleetUnavailableError`.
"""

from pipeline.fleet.errors import FleetUnavailableError
from pipeline.fleet.view import FleetRow, FleetView, Publication, fleet_view, parse_duration

__all__ = [
    "FleetRow",
    "FleetUnavailableError",
    "FleetView",
    "Publication",
    "fleet_view",
    "parse_duration",
]
