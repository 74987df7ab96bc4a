-- Probe tokens: what confidence probes (trial answers at checkpoints) cost a request.
-- A node whose confidence comes from a probe generates tokens that are not the answer;
-- every saving is net of them (InferenceEvent.tokens_probe; 0 when confidence is free).
ALTER TABLE {db}.inference_events ADD COLUMN IF NOT EXISTS tokens_probe UInt32 DEFAULT 0;
ALTER TABLE {db}.outcomes ADD COLUMN IF NOT EXISTS tokens_probe UInt32 DEFAULT 0;
-- The request's total, on each of its points: the optimizer nets it per checkpoint.
ALTER TABLE {db}.trajectory_points ADD COLUMN IF NOT EXISTS tokens_probe UInt32 DEFAULT 0;
ALTER TABLE {db}.outcome_rollup_1m
    ADD COLUMN IF NOT EXISTS tokens_probe SimpleAggregateFunction(sum, Int64) DEFAULT 0;

-- A request's probe tokens never change across its outcome versions (labels and
-- feedback do, the event does not), so they are counted from its first version only
-- (prev.version = 0) and need no subtraction. Rows here add 0 to every other sum.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.outcome_probe_rollup_1m_mv
TO {db}.outcome_rollup_1m
AS SELECT
    r_minute AS minute,
    r_tenant AS tenant,
    r_task AS task,
    r_length_bucket AS length_bucket,
    r_policy_name AS policy_name,
    r_policy_version AS policy_version,
    r_arm AS arm,
    toInt64(0) AS requests,
    toInt64(0) AS labeled,
    toInt64(0) AS em,
    toInt64(0) AS tokens_generated,
    toInt64(0) AS tokens_budget,
    toInt64(0) AS tokens_saved,
    toInt64(0) AS feedback,
    toInt64(0) AS negative_feedback,
    sum(r_tokens_probe) AS tokens_probe
FROM
(
    -- r_* names, so the aliases above cannot shadow the source columns.
    SELECT
        toDateTime(toStartOfMinute(ts), 'UTC') AS r_minute,
        toString(tenant) AS r_tenant,
        toString(task) AS r_task,
        toString(length_bucket) AS r_length_bucket,
        toString(policy_name) AS r_policy_name,
        policy_version AS r_policy_version,
        toString(arm) AS r_arm,
        toInt64(tokens_probe) AS r_tokens_probe
    FROM {db}.outcomes
    WHERE prev.version = 0 AND tokens_probe > 0
)
GROUP BY minute, tenant, task, length_bucket, policy_name, policy_version, arm;

-- The analysts' views, again, with probe tokens and the saving net of them:
-- tokens_saved stays gross (budget - generated); tokens_saved_net subtracts probes.
CREATE OR REPLACE VIEW {db}.outcome_minutes
AS SELECT
    *,
    tokens_saved - tokens_probe AS tokens_saved_net,
    em / nullIf(labeled, 0) AS em_rate,
    (tokens_saved - tokens_probe) / nullIf(tokens_budget, 0) AS saved_share,
    negative_feedback / nullIf(requests, 0) AS negative_rate
FROM
(
    SELECT
        minute, tenant, task, length_bucket, policy_name, policy_version, arm,
        sum(requests) AS requests,
        sum(labeled) AS labeled,
        sum(em) AS em,
        sum(tokens_generated) AS tokens_generated,
        sum(tokens_probe) AS tokens_probe,
        sum(tokens_budget) AS tokens_budget,
        sum(tokens_saved) AS tokens_saved,
        sum(feedback) AS feedback,
        sum(negative_feedback) AS negative_feedback
    FROM {db}.outcome_rollup_1m
    GROUP BY minute, tenant, task, length_bucket, policy_name, policy_version, arm
)
WHERE requests != 0;

CREATE OR REPLACE VIEW {db}.arm_comparison_1h
AS SELECT
    policy_name, tenant, task, length_bucket, arm, policy_version,
    sum(requests) AS n_requests,
    sum(labeled) AS n_labeled,
    sum(em) / nullIf(sum(labeled), 0) AS em_rate,
    (sum(tokens_saved) - sum(tokens_probe)) / nullIf(sum(tokens_budget), 0) AS saved_share,
    sum(tokens_probe) AS n_probe_tokens,
    sum(negative_feedback) / nullIf(sum(requests), 0) AS negative_rate
FROM {db}.outcome_rollup_1m
WHERE minute >= now() - INTERVAL 1 HOUR
GROUP BY policy_name, tenant, task, length_bucket, arm, policy_version
HAVING n_requests != 0;

CREATE OR REPLACE VIEW {db}.outcomes_latest
AS SELECT * EXCEPT (prev) FROM {db}.outcomes FINAL;

CREATE OR REPLACE VIEW {db}.trajectory_latest
AS SELECT * FROM {db}.trajectory_points FINAL;
