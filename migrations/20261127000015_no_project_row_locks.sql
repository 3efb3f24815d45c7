-- A foreign key check locks the referenced row (FOR KEY SHARE). Every lease
-- and every judgment referenced its project's row, so with many raters in one
-- project that single row's lock was a MultiXact of all concurrent writers,
-- made anew by each of them: about two per judgment at 32 raters
-- (docs/benchmarks.md, "Round trips and row locks"). The keys now reach the
-- project through rows the writing statement already holds, and still say
-- all they said before:
--
-- * an assignment's (comparison, project) must be a pair of that project
--   (the pair's own key vouches for the project);
-- * a judgment's (assignment, comparison, project, rater) must be exactly its
--   assignment's, which the judging statement has just updated.
create unique index comparisons_id_project_idx on comparisons (id, project_id);
alter table assignments
    drop constraint assignments_comparison_id_fkey,
    drop constraint assignments_project_id_fkey,
    add constraint assignments_pair_fkey foreign key (comparison_id, project_id)
        references comparisons (id, project_id) on delete cascade;

create unique index assignments_keys_idx on assignments (id, comparison_id, project_id, rater_id);
alter table judgments
    drop constraint judgments_assignment_id_fkey,
    drop constraint judgments_comparison_id_fkey,
    drop constraint judgments_project_id_fkey,
    drop constraint judgments_rater_id_fkey,
    add constraint judgments_assignment_fkey
        foreign key (assignment_id, comparison_id, project_id, rater_id)
        references assignments (id, comparison_id, project_id, rater_id);
