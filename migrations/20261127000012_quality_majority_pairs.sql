-- The error dashboard's model check (issue 6): the latest pairs with a strict a-or-b majority
-- are stored with the quality report, so a request with a reward model scores those pairs
-- and no longer aggregates every judgment of the project (1.8 s at 1M judgments).
alter table quality_results add column majority_pairs jsonb not null default '[]';
