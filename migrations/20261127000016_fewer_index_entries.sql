-- Fewer index entries per lease and per judgment (docs/benchmarks.md, "Fewer
-- index entries, and leases without a flush"). A lease inserts an assignment and a judgment
-- updates it; that update cannot be HOT (it changes `state`, which partial
-- indexes' predicates read), nor can the lease's update of a pair that it fills
-- (it changes `is_open`). Each such write adds an entry to every index whose
-- predicate the new row meets. Four indexes took entries that served nothing:
--
-- * `assignments_rater_idx` (rater_id, project_id): no query reads it. Every
--   query by rater and project also asks for a state and has a partial index
--   of its own (`assignments_live_idx` for live leases,
--   `assignments_repeatable_idx` for the repeat draw); a rater's history of a
--   pair is `assignments_rater_pair_idx`. It was scanned 0 times in
--   `backflip bench submit`. (Nothing in Backflip deletes users; a user deleted
--   by hand now finds their assignments by a sequential scan.)
-- * `assignments_repeat_of_idx` held an entry for every regular and gold
--   assignment too, all with a null `repeat_of`, which a unique index never
--   compares. Only repeats need one; the rule it keeps is unchanged.
-- * `comparisons_seq_key` (seq): `seq` comes from a sequence and every query
--   that orders by it reads one project's pairs, through
--   `comparisons_project_seq_idx` (project_id, seq). That index now also
--   keeps the uniqueness, per project.
-- * `comparisons_project_id_external_id_key` held an entry for every pair
--   without an external id (all generated pairs); only pairs with one can
--   clash. Same rule, as a partial index.
drop index assignments_rater_idx;
drop index assignments_repeat_of_idx;
create unique index assignments_repeat_of_idx on assignments (repeat_of)
    where repeat_of is not null and state <> 'expired';

alter table comparisons drop constraint comparisons_seq_key;
drop index comparisons_project_seq_idx;
create unique index comparisons_project_seq_idx on comparisons (project_id, seq);

alter table comparisons drop constraint comparisons_project_id_external_id_key;
create unique index comparisons_external_idx on comparisons (project_id, external_id)
    where external_id is not null;
