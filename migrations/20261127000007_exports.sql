-- Exports name raters by a pseudonym: sha256(pseudonym_salt || user id), cut
-- to 12 hex digits. The salt is per project and never leaves the database, so
-- one person's pseudonyms in two projects are unrelated, and knowing a user id
-- does not reveal which export rows are theirs. It never changes: a rater keeps
-- the same pseudonym in every export of the project.
alter table projects add column pseudonym_salt uuid not null default gen_random_uuid();

-- Exports walk a project's pairs in import order (seq); the other seq index is
-- global, and the queue's index holds only open pairs.
create index comparisons_project_seq_idx on comparisons (project_id, seq);
