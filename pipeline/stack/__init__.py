"""The embedded stack: real Kafka, ClickHouse (chdb) and MLflow on one machine."""
