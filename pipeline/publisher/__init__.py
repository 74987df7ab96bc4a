"""The publisher: every approved move of ``production`` becomes a signed control message.

- :mod:`.config`: the ``control`` settings section (``PIPELINE_CONTROL__...``: signing
  key, poll period, watched policies, the operator's auto-approve switch).
- :mod:`.gate`: whether to publish the version ``production`` points at (pure).
- :mod:`.service`: the polling loop, MLflow ``production`` alias -> control topic.
- :mod:`.topic`: what is already on the control topic, and adding to it.
- :mod:`.errors`: the exceptions.

Review actions and their audit trail are :mod:`pipeline.registry` and
:mod:`pipeline.audit`. Nothing is imported here, so ``pipeline.config`` can
load the settings without pulling in Kafka or MLflow clients.
"""
