-- Every lease inserts an assignment and every judgment updates it; the update
-- cannot be HOT (it changes `state`, which partial indexes' predicates read),
-- so each writes an entry into every index whose predicate the row meets
-- (docs/benchmarks.md, "Fewer index entries per judgment"). Two of those
-- entries served nothing:
--
-- * `assignments_rater_idx` (rater_id, project_id): no query reads it. Every
--   query by rater and project also asks for a state, and has a partial index
--   of its own (`assignments_live_idx` for live leases,
--   `assignments_repeatable_idx` for the repeat draw); a rater's history of a
--   pair is `assignments_rater_pair_idx`. It was scanned 0 times in
--   `backflip bench submit`. (Nothing in Backflip deletes users; a user deleted
--   by hand now finds their assignments by a sequential scan.)
-- * `assignments_repeat_of_idx` held an entry for every regular and gold
--   assignment too, all with a null `repeat_of`, which a unique index never
--   compares. Only repeats need one; the rule it keeps is unchanged.
drop index assignments_rater_idx;
drop index assignments_repeat_of_idx;
create unique index assignments_repeat_of_idx on assignments (repeat_of)
    where repeat_of is not null and state <> 'expired';
