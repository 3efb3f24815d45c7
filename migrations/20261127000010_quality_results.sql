-- Stored quality reports (issue 6, item 8): a `quality` job computes a project's report in
-- the background and keeps it here, so the quality pages and the API read it instead of
-- recomputing over every judgment per request.
--
-- Staleness is read, not guessed: judgments are append-only, so "which judgments does this
-- report cover" is the judgments the computation's snapshot saw. `horizon` is ten seconds
-- before the newest one and `covered_recent` how many covered judgments are newer than it; a
-- reader counts the judgments newer than `horizon` now (an index range over those ten seconds
-- plus whatever arrived since) and the difference is the judgments the report does not
-- include. The ten seconds cover judgment transactions (milliseconds long) that began before
-- the snapshot and committed after it. Lead actions that change the figures (gold, pause, exclusion) queue a `quality` job in
-- their transaction; a queued job, or one running that started after `computed_at`, marks the
-- report stale too.
create table quality_results (
    project_id     uuid primary key references projects on delete cascade,
    -- The report without its two long lists (pages read this one).
    summary        jsonb not null,
    split_pairs    jsonb not null,
    gold_failures  jsonb not null,
    -- Their first 200 rows, for the error dashboard (a large project's lists run to megabytes).
    split_pairs_head   jsonb not null,
    gold_failures_head jsonb not null,
    -- Each rater's day series, by rater id.
    rater_days     jsonb not null,
    -- Judgment rows the report covers (repeats included).
    judgments      bigint not null,
    horizon        timestamptz not null,
    covered_recent bigint not null,
    -- When the computation's snapshot was taken, and how long the job took.
    computed_at    timestamptz not null,
    seconds        double precision not null
);

-- Above this many judgments the pages and the API never compute the report per request: they
-- serve the stored one (saying how stale it is) or queue the job and say it is being computed.
alter table projects add column quality_live_limit int not null default 50000
    check (quality_live_limit >= 0);
-- With a stored report, the judgment that makes this many judgments newer than the last
-- quality job's start queues the next one (like `train_every`).
alter table projects add column quality_every int not null default 200
    check (quality_every > 0);
