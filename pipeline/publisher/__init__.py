"""The control side of the loop: publishing policies to the fleet, and the audit trail.

- :mod:`pipeline.publisher.config`: the ``control`` settings section.
- :mod:`pipeline.publisher.gate`: what the publisher should do (pure).
- :mod:`pipeline.publisher.service`: MLflow ``production`` alias -> control topic.
- :mod:`pipeline.audit`: the audit record and its Kafka sink.

Nothing is imported here, so ``pipeline.config`` can load the settings
without pulling in Kafka or MLflow clients.
"""
