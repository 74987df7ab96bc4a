-- Per-minute rollups of outcomes (minute x segment x policy version x arm) and named
-- views for analysts.
--
-- An outcome is emitted again, with a higher version, when a label or feedback
-- arrives; a rollup that summed every row would count the request once per version.
-- So each outcomes row also carries `prev`, the rollup contribution of the version
-- it replaces (filled in by the sink, which looks it up before inserting; version 0
-- when there is none). The view adds the row's contribution and subtracts prev's,
-- so the sums always equal those of the latest version of each request. This holds
-- because the sink inserts each (request_id, version) once and in increasing order.
ALTER TABLE {db}.outcomes ADD COLUMN IF NOT EXISTS prev Tuple(
    version UInt64,
    minute DateTime('UTC'),
    tenant String,
    task String,
    length_bucket String,
    policy_name String,
    policy_version UInt64,
    arm String,
    labeled UInt8,
    em UInt8,
    tokens_generated UInt32,
    tokens_budget UInt32,
    feedback_count UInt64,
    negative_feedback UInt64
);

CREATE TABLE IF NOT EXISTS {db}.outcome_rollup_1m
(
    minute             DateTime('UTC'),
    tenant             LowCardinality(String),
    task               LowCardinality(String),
    length_bucket      LowCardinality(String),
    policy_name        LowCardinality(String),
    policy_version     UInt64,
    arm                LowCardinality(String),
    requests           SimpleAggregateFunction(sum, Int64),
    labeled            SimpleAggregateFunction(sum, Int64),
    em                 SimpleAggregateFunction(sum, Int64),
    tokens_generated   SimpleAggregateFunction(sum, Int64),
    tokens_budget      SimpleAggregateFunction(sum, Int64),
    tokens_saved       SimpleAggregateFunction(sum, Int64),
    feedback           SimpleAggregateFunction(sum, Int64),
    negative_feedback  SimpleAggregateFunction(sum, Int64)
)
ENGINE = AggregatingMergeTree
ORDER BY (minute, tenant, task, length_bucket, policy_name, policy_version, arm)
SETTINGS non_replicated_deduplication_window = 1000;

-- The inner query names its columns r_* so they cannot shadow the source columns.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.outcome_rollup_1m_mv
TO {db}.outcome_rollup_1m
AS SELECT
    r_minute AS minute,
    r_tenant AS tenant,
    r_task AS task,
    r_length_bucket AS length_bucket,
    r_policy_name AS policy_name,
    r_policy_version AS policy_version,
    r_arm AS arm,
    sum(r_sign) AS requests,
    sum(r_sign * r_labeled) AS labeled,
    sum(r_sign * r_em) AS em,
    sum(r_sign * r_tokens_generated) AS tokens_generated,
    sum(r_sign * r_tokens_budget) AS tokens_budget,
    sum(r_sign * (r_tokens_budget - r_tokens_generated)) AS tokens_saved,
    sum(r_sign * r_feedback) AS feedback,
    sum(r_sign * r_negative_feedback) AS negative_feedback
FROM
(
    SELECT
        tupleElement(c, 1) AS r_sign,
        tupleElement(c, 2) AS r_minute,
        tupleElement(c, 3) AS r_tenant,
        tupleElement(c, 4) AS r_task,
        tupleElement(c, 5) AS r_length_bucket,
        tupleElement(c, 6) AS r_policy_name,
        tupleElement(c, 7) AS r_policy_version,
        tupleElement(c, 8) AS r_arm,
        tupleElement(c, 9) AS r_labeled,
        tupleElement(c, 10) AS r_em,
        tupleElement(c, 11) AS r_tokens_generated,
        tupleElement(c, 12) AS r_tokens_budget,
        tupleElement(c, 13) AS r_feedback,
        tupleElement(c, 14) AS r_negative_feedback
    FROM {db}.outcomes
    ARRAY JOIN arrayFilter(x -> tupleElement(x, 1) != 0, [
        (
            toInt64(1), toDateTime(toStartOfMinute(ts), 'UTC'), toString(tenant), toString(task),
            toString(length_bucket), toString(policy_name), policy_version, toString(arm),
            toInt64(labeled), toInt64(ifNull(em, false)), toInt64(tokens_generated),
            toInt64(tokens_budget), toInt64(feedback_count), toInt64(negative_feedback)
        ),
        (
            if(prev.version > 0, toInt64(-1), toInt64(0)), prev.minute, prev.tenant, prev.task,
            prev.length_bucket, prev.policy_name, prev.policy_version, prev.arm,
            toInt64(prev.labeled), toInt64(prev.em), toInt64(prev.tokens_generated),
            toInt64(prev.tokens_budget), toInt64(prev.feedback_count),
            toInt64(prev.negative_feedback)
        )
    ]) AS c
)
GROUP BY minute, tenant, task, length_bucket, policy_name, policy_version, arm;

-- Analysts: one row per minute x segment x policy version x arm, with rates.
CREATE VIEW IF NOT EXISTS {db}.outcome_minutes
AS SELECT
    *,
    em / nullIf(labeled, 0) AS em_rate,
    tokens_saved / nullIf(tokens_budget, 0) AS saved_share,
    negative_feedback / nullIf(requests, 0) AS negative_rate
FROM
(
    SELECT
        minute, tenant, task, length_bucket, policy_name, policy_version, arm,
        sum(requests) AS requests,
        sum(labeled) AS labeled,
        sum(em) AS em,
        sum(tokens_generated) AS tokens_generated,
        sum(tokens_budget) AS tokens_budget,
        sum(tokens_saved) AS tokens_saved,
        sum(feedback) AS feedback,
        sum(negative_feedback) AS negative_feedback
    FROM {db}.outcome_rollup_1m
    GROUP BY minute, tenant, task, length_bucket, policy_name, policy_version, arm
)
WHERE requests != 0;

-- Analysts: the canary against production over the last hour, per policy and segment.
CREATE VIEW IF NOT EXISTS {db}.arm_comparison_1h
AS SELECT
    policy_name, tenant, task, length_bucket, arm, policy_version,
    sum(requests) AS n_requests,
    sum(labeled) AS n_labeled,
    sum(em) / nullIf(sum(labeled), 0) AS em_rate,
    sum(tokens_saved) / nullIf(sum(tokens_budget), 0) AS saved_share,
    sum(negative_feedback) / nullIf(sum(requests), 0) AS negative_rate
FROM {db}.outcome_rollup_1m
WHERE minute >= now() - INTERVAL 1 HOUR
GROUP BY policy_name, tenant, task, length_bucket, arm, policy_version
HAVING n_requests != 0;

-- Analysts: the latest version of every outcome and of every trajectory point.
CREATE VIEW IF NOT EXISTS {db}.outcomes_latest
AS SELECT * EXCEPT (prev) FROM {db}.outcomes FINAL;

CREATE VIEW IF NOT EXISTS {db}.trajectory_latest
AS SELECT * FROM {db}.trajectory_points FINAL;
