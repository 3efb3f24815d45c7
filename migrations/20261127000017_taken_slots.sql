-- One count per pair: the slots taken (docs/design.md, "Pair counts").
--
-- A pair carried `leased_count` and `judged_count`, and every judgment moved
-- one slot from the first to the second: an update of the pair (and a lock on
-- it) in every judging statement, though the pair's openness never changed.
-- The pair now counts only its taken slots: a regular lease takes one; an
-- expired or reported lease gives it back; a judgment keeps it,
-- unless its rater is excluded (their judgments cover nothing, as before:
-- excluding a rater gives back the slots of their judgments, and including
-- them again takes those back). So
--
--   taken_count = the pair's regular assignments in state 'leased'
--               + its regular judgments by raters not excluded,
--
-- and the two old counts are derived where they are read: `leased_count` is
-- the first term, `judged_count` the taken slots less those (the view
-- `pair_counts`). A judgment no longer writes the pair at all.
alter table comparisons add column taken_count int not null default 0 check (taken_count >= 0);
update comparisons set taken_count = judged_count + leased_count;

drop index comparisons_open_idx;
drop index comparisons_open_generated_idx;
alter table comparisons drop column is_open;
alter table comparisons drop column judged_count, drop column leased_count;
alter table comparisons
    add column is_open boolean generated always as (taken_count < overlap) stored;
create index comparisons_open_idx on comparisons (project_id, priority desc, seq) where is_open;
create index comparisons_open_generated_idx on comparisons (project_id) where generated and is_open;

-- A pair's leases and judgments towards its coverage. The leases are grouped by
-- project as well as pair, so a query of one project's pairs reads only that
-- project's leases (`assignments_project_leases_idx`).
create view pair_counts as
select c.id, c.project_id, c.overlap, c.taken_count,
       c.taken_count - coalesce(l.n, 0)::int as judged_count,
       coalesce(l.n, 0)::int as leased_count
from comparisons c
left join (select project_id, comparison_id, count(*) as n from assignments
           where state = 'leased' and kind = 'regular'
           group by project_id, comparison_id) l
    on l.project_id = c.project_id and l.comparison_id = c.id;
