# syntax=docker/dockerfile:1.7
# The worker/controller image (also runs `mlflow server`, see docker-compose.yml).
# Build: docker build -t earlystop-pipeline:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve and install into a venv that the runtime copies as is ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for the odd dependency without a wheel for this platform;
# it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY pipeline ./pipeline

# `server` is the worker/controller extra (faust, clickhouse-connect, mlflow...).
# psycopg2-binary is for the mlflow service's Postgres backend store: neither the
# project nor the official mlflow image ships a Postgres driver.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
    && pip install '.[server]' 'psycopg2-binary>=2.9,<3'

# ---- runtime: no compiler, no sources beyond what the commands read ----
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric non-root user (Kubernetes runAsNonRoot needs a number). The
# directories that compose mounts volumes on are created here and owned by that
# user: an empty named volume copies the ownership of the directory it covers.
RUN groupadd --system --gid 10001 pipeline \
    && useradd --system --uid 10001 --gid pipeline --create-home --home-dir /home/pipeline \
        --shell /usr/sbin/nologin pipeline \
    && mkdir -p /var/lib/pipeline /var/lib/mlflow/auth /var/lib/mlflow/artifacts \
    && chown -R pipeline:pipeline /var/lib/pipeline /var/lib/mlflow

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Read-only inputs of `pipeline topics create`, `pipeline migrate` and the
# controller; owned by root so the service user cannot change them.
COPY infra/kafka ./infra/kafka
COPY infra/clickhouse ./infra/clickhouse
COPY infra/mlflow ./infra/mlflow
COPY policies ./policies

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIPELINE_STATE_DIR=/var/lib/pipeline \
    PIPELINE_INFRA_DIR=/app/infra

USER 10001:10001

ENTRYPOINT ["pipeline"]
CMD ["--help"]
