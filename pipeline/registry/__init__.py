"""MLflow: policy runs, the model registry, review state and review actions.

- :mod:`~pipeline.registry.draft`: what the optimizer hands over (plain values).
- :mod:`~pipeline.registry.policies`: ``register_proposal`` (run, plot, pyfunc, version).
- :mod:`~pipeline.registry.actions`: the review actions ``approve``, ``reject``, ``rollback``.
- :mod:`~pipeline.registry.canary`: canary review actions: ``start_canary``,
  ``approve_canary`` (a reviewer's), ``promote_canary``, ``rollback_canary``.
- :mod:`~pipeline.registry.tags`: the one writer of review tags and audit events.
- :mod:`~pipeline.registry.versions`: reading versions, aliases and policies.
- :mod:`~pipeline.registry.transitions`, :mod:`~pipeline.registry.carrier`,
  :mod:`~pipeline.registry.compare`, :mod:`~pipeline.registry.report`,
  :mod:`~pipeline.registry.names`: pure rules (which review move is allowed, what
  a canary carrier serves), diffs, table rows and names.
- :mod:`~pipeline.registry.review_page`: the review page (verdict, per-key table,
  Pareto plot) as Markdown and self-contained HTML; the version's description.
- :mod:`~pipeline.registry.policy_model`: the pyfunc model (logged as code).

Nothing is imported here: MLflow loads only when a function needs it.
See docs/adr-002-policy-versions.md for why the policy version is the MLflow
version and a rollback is a new version.
"""
