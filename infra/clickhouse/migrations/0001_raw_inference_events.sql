-- Raw InferenceEvent messages, one row per event, as the stream worker's sink writes them.
--
-- Replays are idempotent twice over: the sink passes an insert_deduplication_token
-- per Kafka batch (honoured because non_replicated_deduplication_window > 0), and
-- ReplacingMergeTree collapses any duplicate that slips through on the sorting key,
-- keeping the latest ingested_at. Read with FINAL, or GROUP BY the key, when exact
-- counts matter.
CREATE DATABASE IF NOT EXISTS {db};

CREATE TABLE IF NOT EXISTS {db}.inference_events
(
    event_id          String,
    request_id        String,
    node_id           LowCardinality(String),
    ts                DateTime64(3, 'UTC'),
    model             LowCardinality(String),
    tenant            LowCardinality(String),
    task              LowCardinality(String),
    length_bucket     LowCardinality(String),
    policy_name       LowCardinality(String),
    policy_version    UInt32,
    threshold         Nullable(Float32),
    arm               LowCardinality(String),
    exploration       Bool,
    tokens_prompt     UInt32,
    tokens_generated  UInt32,
    tokens_budget     UInt32,
    stop_reason       LowCardinality(String),
    confidence        Float32,
    answer            String,
    latency_ms        Float32,
    node_load         Float32,
    src_topic         LowCardinality(String),
    src_partition     UInt16,
    src_offset        UInt64,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, task, request_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
