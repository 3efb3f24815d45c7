-- Reward-model versions. A version row is written only when its weights are
-- stored, in the same transaction that makes it the project's current model:
-- a failed run leaves the previous version current.
create table reward_models (
    id             uuid primary key default gen_random_uuid(),
    project_id     uuid not null references projects on delete cascade,
    version        int not null,
    -- 'text' (hashed n-gram features), 'features' (the rollouts' own vectors) or 'clip'
    kind           text not null check (kind in ('text', 'features', 'clip')),
    -- model and training hyper-parameters, as the training code reads them back
    config         jsonb not null,
    -- held-out accuracy, log-loss, calibration, per-member accuracy, loss curve, counts, timings
    metrics        jsonb not null,
    -- judgments used for training and for validation
    train_pairs    int not null,
    held_out_pairs int not null,
    weights_sha256 text not null check (weights_sha256 ~ '^[0-9a-f]{64}$'),
    weights_bytes  int not null,
    job_id         bigint references jobs on delete set null,
    created_at     timestamptz not null default now(),
    unique (project_id, version)
);

alter table projects add column current_model uuid references reward_models on delete set null;

-- A lead can exclude a rater: their judgments stop counting for training (and,
-- later, exports and aggregates) without being deleted.
alter table project_members add column excluded_at timestamptz;
