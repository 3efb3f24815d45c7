-- Time-ordered ids for the rows the hot path writes (docs/benchmarks.md,
-- "Time-ordered ids").
--
-- Every lease inserts an assignment, every judgment inserts a judgment, and
-- their ids were random (version 4): each insert went to a random leaf of the
-- primary key, of `assignments_keys_idx` (which leads with the id) and of
-- `judgments_assignment_id_key`, so each one descended the tree and dirtied a
-- page of its own. A version-7 id starts with the time in milliseconds: new ids
-- land at the right edge of those indexes, where PostgreSQL's insert fast path
-- reuses the rightmost leaf without a descent, and the pages a burst of writes
-- touches stay few. Pairs and rollouts get such ids too (the import makes its
-- own, `Uuid::now_v7`), so a project's pairs, leased roughly in import order,
-- are also neighbours in the indexes that a lease's pair update and its
-- assignment's `(comparison_id, rater_id)` entry go into.
--
-- The 74 bits after the time are random (v4 has 122). An id does tell when its
-- row was made, to the millisecond; nothing in Backflip treats an id as a
-- secret: every call that names one also checks who is asking. Existing ids
-- are kept: the order only matters for new inserts.
create function time_ordered_uuid() returns uuid
language sql volatile parallel safe
as $$
    -- RFC 9562 version 7: 48 bits of Unix time in milliseconds, the version
    -- (7) and variant bits, the rest random (from a random v4 id, whose own
    -- variant bits are already right)
    select encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                    from 1 for 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

alter table assignments alter column id set default time_ordered_uuid();
alter table judgments alter column id set default time_ordered_uuid();
alter table comparisons alter column id set default time_ordered_uuid();
alter table rollouts alter column id set default time_ordered_uuid();
