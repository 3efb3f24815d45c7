-- Choosing what to ask: rollouts imported on their own, in groups, and pairs
-- generated within groups by the project's strategy (src/selection/).
--
-- Generated pairs are ordinary comparisons rows, so `next` serves them through
-- the same open-pairs index (comparisons_open_idx: priority, then seq) with no
-- change; the generator inserts them in the order it wants them asked.

alter table projects
    -- how the generator picks pairs within groups
    add column strategy text not null default 'random'
        check (strategy in ('random', 'uncertainty', 'mixed')),
    -- for 'mixed': the share of generated pairs drawn at random
    add column random_share real not null default 0.3 check (random_share between 0 and 1),
    -- how many generated pairs the generator keeps open (not yet fully judged)
    add column open_target int not null default 200 check (open_target between 1 and 100000);

alter table rollouts
    -- rollouts of one group (same prompt or task) are comparable; null for
    -- rollouts that came in an imported pair
    add column group_key text,
    -- the rollout's own id from the import file (re-import skips it)
    add column external_id text,
    -- the prompt shown with the group's pairs
    add column prompt text;
create unique index rollouts_external_idx on rollouts (project_id, external_id)
    where external_id is not null;
create index rollouts_group_idx on rollouts (project_id, group_key) where group_key is not null;

-- Set on pairs the generator made (not imported); the judging transaction
-- queues a refill when one of them is complete.
alter table comparisons add column generated boolean not null default false;
-- Never the same unordered pair twice. Imported pairs always bring fresh
-- rollouts, so this holds for every existing row too.
create unique index comparisons_unordered_pair_idx
    on comparisons (least(rollout_a, rollout_b), greatest(rollout_a, rollout_b));
-- The generator counts a project's open generated pairs.
create index comparisons_open_generated_idx on comparisons (project_id)
    where generated and judged_count + leased_count < overlap;
