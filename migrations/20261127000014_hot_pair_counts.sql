-- A pair's counts change on every lease and every judgment. The open-pairs
-- indexes' predicates read the counts, so PostgreSQL could never update a pair
-- in place (a HOT update): each change wrote a new entry into every one of
-- the table's seven indexes. The predicates now read one stored column,
-- `is_open`, which changes only when a pair fills up or opens again: a
-- judgment (judged + 1, leased - 1) and a lease that leaves room are HOT
-- updates when the page has room, hence the fill factor.
alter table comparisons set (fillfactor = 80);
alter table comparisons
    add column is_open boolean generated always as (judged_count + leased_count < overlap) stored;

drop index comparisons_open_idx;
create index comparisons_open_idx on comparisons (project_id, priority desc, seq) where is_open;
drop index comparisons_open_generated_idx;
create index comparisons_open_generated_idx on comparisons (project_id) where generated and is_open;
