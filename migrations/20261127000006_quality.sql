-- Rater quality: gold and swapped repeat pairs mixed into the queue, pausing a
-- rater, and the project settings for them and for reliability-weighted training.
--
-- comparisons.gold (a, b or tie) exists since the spine migration; a lead sets it.

alter table projects
    -- share of `next` answers that are a gold pair the rater has not seen yet
    add column gold_rate real not null default 0 check (gold_rate between 0 and 0.5),
    -- share of `next` answers that repeat one of the rater's judged pairs, sides swapped
    add column repeat_rate real not null default 0 check (repeat_rate between 0 and 0.5),
    -- reward-model training weights each judgment by its rater's estimated reliability
    add column reliability_weighting boolean not null default false;

-- What an assignment is for. Only 'regular' assignments move a pair's
-- leased_count and judged_count: gold checks and repeats never count twice
-- towards coverage.
alter table assignments
    add column kind text not null default 'regular' check (kind in ('regular', 'gold', 'repeat')),
    -- for a repeat: the rater's earlier assignment of the same pair
    add column repeat_of uuid references assignments,
    -- set on a judged regular assignment once a repeat of it was scheduled
    add column repeated boolean not null default false;

-- The one-pair-per-rater rule no longer holds for repeats, which show the same
-- pair to the same rater a second time by design.
drop index assignments_rater_pair_idx;
create unique index assignments_rater_pair_idx on assignments (comparison_id, rater_id)
    where state <> 'expired' and kind <> 'repeat';
-- At most one repeat of each earlier assignment.
create unique index assignments_repeat_of_idx on assignments (repeat_of) where state <> 'expired';
-- The repeat draw: a rater's judged, not yet repeated pairs, oldest first.
create index assignments_repeatable_idx on assignments (rater_id, project_id, judged_at)
    where state = 'judged' and kind = 'regular' and not repeated;
-- The gold draw: a project's gold pairs.
create index comparisons_gold_idx on comparisons (project_id, seq) where gold is not null;

-- The judgment keeps its assignment's kind, so statistics and training can tell
-- a repeat (used only for self-consistency) from a first answer. Adding a
-- column with a default rewrites no row and fires no update trigger.
alter table judgments
    add column kind text not null default 'regular' check (kind in ('regular', 'gold', 'repeat'));
create index judgments_rater_idx on judgments (rater_id, project_id, created_at);

-- A paused rater gets no new pairs (their judgments still count).
alter table project_members add column paused_at timestamptz;
