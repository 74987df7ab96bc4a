"""MLflow: policy runs, the model registry, review state.

- :mod:`~pipeline.registry.draft`: what the optimizer hands over (plain values).
- :mod:`~pipeline.registry.policies`: ``register_proposal`` (run, plot, pyfunc, version).
- :mod:`~pipeline.registry.actions`: ``approve``, ``reject``, ``rollback``.
- :mod:`~pipeline.registry.versions`: reading versions, aliases and policies.
- :mod:`~pipeline.registry.transitions`, :mod:`~pipeline.registry.compare`,
  :mod:`~pipeline.registry.report`, :mod:`~pipeline.registry.names`: pure rules,
  diffs, table rows and names.
- :mod:`~pipeline.registry.policy_model`: the pyfunc model (logged as code).

Nothing is imported here: MLflow loads only when a function needs it.
See docs/adr-002-policy-versions.md for why the policy version is the MLflow
version and a rollback is a new version.
"""
