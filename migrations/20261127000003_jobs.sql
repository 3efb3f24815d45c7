-- The worker queue: one table, no broker. Any number of worker processes on any
-- number of machines share it.
--
-- A job is claimed by setting status 'running' with a lease (FOR UPDATE SKIP
-- LOCKED, so claimers never block each other); the worker extends the lease
-- while it runs (heartbeat). A running job whose lease ran out belongs to a
-- worker that died: the next claim takes it over. Failures are retried with an
-- exponential backoff computed in SQL until max_attempts. Finished rows stay as
-- history.
create table jobs (
    id           bigserial primary key,
    kind         text not null,
    project_id   uuid references projects on delete cascade,
    payload      jsonb not null default '{}',
    status       text not null default 'queued'
                 check (status in ('queued', 'running', 'done', 'failed')),
    attempts     int not null default 0,
    max_attempts int not null default 3,
    run_after    timestamptz not null default now(),
    lease_until  timestamptz,
    worker       text,
    progress     jsonb,
    result       jsonb,
    error        text,
    created_at   timestamptz not null default now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
-- Debounce: at most one queued job of a kind per project.
create unique index jobs_one_queued_idx on jobs (project_id, kind) where status = 'queued';
create index jobs_claim_idx on jobs (run_after) where status = 'queued';
create index jobs_leases_idx on jobs (lease_until) where status = 'running';
create index jobs_project_idx on jobs (project_id, kind, created_at desc);

-- Wake idle workers at once; they poll as well, so a lost notification only delays.
create function jobs_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('backflip_jobs', new.kind);
    return null;
end $$;
create trigger jobs_notify after insert on jobs for each row execute function jobs_notify();

-- Retrain automatically after this many new judgments (0: only on demand).
alter table projects add column train_every int not null default 50 check (train_every between 0 and 100000);
