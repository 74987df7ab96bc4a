"""MLflow: policy runs, the model registry, review state."""
