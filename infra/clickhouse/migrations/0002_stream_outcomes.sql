-- What the stream worker's sink writes: joined outcomes, trajectory points, user
-- feedback and dead letters.
--
-- Idempotence: every insert carries an insert_deduplication_token made of the Kafka
-- topic/partition/offset ranges it covers (honoured because
-- non_replicated_deduplication_window > 0), so a retried batch is written once.
-- Outcomes are also checked against the table before insert: the sink skips a
-- (request_id, version) that is already there, so a replay after a crash adds no row.
-- ReplacingMergeTree collapses whatever still slips through; read with FINAL when
-- exact per-request answers matter.

-- One row per emitted outcome version; a later version of a request replaces an
-- earlier one (ReplacingMergeTree on version). Sorted by request_id so the sink's
-- lookup of existing versions reads one granule per request.
CREATE TABLE IF NOT EXISTS {db}.outcomes
(
    request_id         String,
    version            UInt64,
    event_id           String,
    ts                 DateTime64(3, 'UTC'),
    node_id            LowCardinality(String),
    model              LowCardinality(String),
    tenant             LowCardinality(String),
    task               LowCardinality(String),
    length_bucket      LowCardinality(String),
    policy_name        LowCardinality(String),
    policy_version     UInt64,
    threshold          Nullable(Float32),
    arm                LowCardinality(String),
    exploration        Bool,
    tokens_prompt      UInt32,
    tokens_generated   UInt32,
    tokens_budget      UInt32,
    stop_reason        LowCardinality(String),
    confidence         Float32,
    latency_ms         Float32,
    node_load          Float32,
    answer             String,
    labeled            Bool,
    em                 Nullable(Bool),
    em_full            Nullable(Bool),
    checkpoints        UInt16,
    feedback_count     UInt64,
    negative_feedback  UInt64,
    joined_at          DateTime64(3, 'UTC'),
    src_topic          LowCardinality(String),
    src_partition      UInt16,
    src_offset         UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY request_id
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per checkpoint of an exploration request's trajectory, with its EM once
-- labeled: what the optimizer replays thresholds on. Rows of a later outcome version
-- replace those of an earlier one.
CREATE TABLE IF NOT EXISTS {db}.trajectory_points
(
    request_id         String,
    version            UInt64,
    idx                UInt16,
    ts                 DateTime64(3, 'UTC'),
    model              LowCardinality(String),
    tenant             LowCardinality(String),
    task               LowCardinality(String),
    length_bucket      LowCardinality(String),
    policy_name        LowCardinality(String),
    policy_version     UInt64,
    arm                LowCardinality(String),
    tokens             UInt32,
    confidence         Float32,
    answer             String,
    em                 Nullable(Bool),
    em_final           Nullable(Bool),
    em_full            Nullable(Bool),
    tokens_generated   UInt32,
    tokens_budget      UInt32,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (request_id, idx)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.user_feedback
(
    feedback_id        String,
    request_id         String,
    ts                 DateTime64(3, 'UTC'),
    kind               LowCardinality(String),
    rating             Int8,
    correction         Nullable(String),
    src_topic          LowCardinality(String),
    src_partition      UInt16,
    src_offset         UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (request_id, feedback_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Dead letters as the worker reported them. The full record stays on the
-- dead-letters topic for replay; here are its first 4 KiB and its size.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    source_topic       LowCardinality(String),
    partition          UInt32,
    offset             UInt64,
    error_kind         LowCardinality(String),
    error              String,
    key                Nullable(String),
    raw_head           String,
    raw_bytes          UInt64,
    ts                 DateTime64(3, 'UTC'),
    worker_id          LowCardinality(String),
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (source_topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;

-- Dead letters per minute, source topic and kind. A set of record positions
-- rather than a sum, so a record reported twice (a replay) still counts once
-- when minutes are merged: uniqExactMerge over any range is exact.
CREATE TABLE IF NOT EXISTS {db}.dead_letter_counts_1m
(
    minute             DateTime('UTC'),
    source_topic       LowCardinality(String),
    error_kind         LowCardinality(String),
    records            AggregateFunction(uniqExact, String, UInt32, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (minute, source_topic, error_kind)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.dead_letter_counts_1m_mv
TO {db}.dead_letter_counts_1m
AS SELECT
    toStartOfMinute(ts) AS minute,
    source_topic,
    error_kind,
    uniqExactState(toString(source_topic), partition, offset) AS records
FROM {db}.dead_letters
GROUP BY minute, source_topic, error_kind;

CREATE VIEW IF NOT EXISTS {db}.dead_letter_counts
AS SELECT
    minute,
    source_topic,
    error_kind,
    uniqExactMerge(records) AS records
FROM {db}.dead_letter_counts_1m
GROUP BY minute, source_topic, error_kind;
