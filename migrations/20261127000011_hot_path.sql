-- The `next` → judgment hot path at scale (a million open pairs, a thousand
-- raters with long histories; `backflip bench next`, docs/benchmarks.md).
--
-- Both lease lookups read the global leases index on (expires_at) before:
-- a rater's own live leases (checked on every `next`) walked every live
-- lease of every project, and the reaping of a project's expired leases
-- walked the expired leases of all projects. Each now has an index of its own.

-- A rater's live leases in a project, oldest first.
create index assignments_live_idx on assignments (rater_id, project_id, created_at)
    where state = 'leased';
-- A project's leases by expiry, for the reaping at the start of every `next`.
create index assignments_project_leases_idx on assignments (project_id, expires_at)
    where state = 'leased';
-- Replaced by the two above; no query reads leases across projects.
drop index assignments_leases_idx;
