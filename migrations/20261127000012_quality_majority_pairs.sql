-- The error dashboard's model check (issue 6): the latest pairs with a strict a-or-b majority
-- are stored with the quality report, so a request with a reward model scores those pairs
-- and no longer aggregates every judgment of the project (1.8 s at 1M judgments).
alter table quality_results add column majority_pairs jsonb not null default '[]';

-- Reports stored before this column have no majority pairs: queue their refresh (a queued
-- quality job also marks the stored report stale until it has run).
insert into jobs (kind, project_id, payload)
select 'quality', project_id, '{"reason": "majority pairs added"}' from quality_results
on conflict (project_id, kind) where status = 'queued' do nothing;
