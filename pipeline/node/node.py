"""One inference node's SDK objects, built and started together."""

from __future__ import annotations

from pipeline.node.config import NodeSettings
from pipeline.node.controller import Controller
from pipeline.node.emitter import Emitter
from pipeline.node.kafka import KafkaSettings
from pipeline.node.subscriber import ControlSubscriber, SubscriberStatus


class Node:
    """The controller, its control subscriber and (optionally) the event emitter.

    Args:
        kafka: How to reach Kafka.
        settings: The node's settings.
        emit: Build an :class:`Emitter` too (False for a node that only follows policy).
    """

    def __init__(self, kafka: KafkaSettings, settings: NodeSettings, *, emit: bool = True) -> None:
        self.settings = settings
        self.controller = Controller(bands=settings.load, policy_name=settings.policy_name)
        self.subscriber = ControlSubscriber(kafka, settings, self.controller)
        self.emitter = Emitter(kafka, settings.emitter) if emit else None

    def start(self) -> SubscriberStatus:
        """Load the policy (topic, else disk, else default) and start following updates."""
        return self.subscriber.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop following updates and flush the emitter."""
        self.subscriber.stop(timeout)
        if self.emitter is not None:
            self.emitter.close(timeout)

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
