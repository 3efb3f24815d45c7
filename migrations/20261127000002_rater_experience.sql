-- What the annotator page records and enforces: clip viewing behaviour with each
-- judgment, content reports, content-warning acceptance and session caps.

-- How many times the rater restarted the clips, and whether they answered before
-- the clips had played through once (null for text pairs or API clients that
-- do not say).
alter table judgments
    add column replays int check (replays >= 0),
    add column answered_before_clip_end boolean;

-- A reported pair leaves the reporter's queue; its slot returns to other raters.
alter table assignments drop constraint assignments_state_check;
alter table assignments add constraint assignments_state_check
    check (state in ('leased', 'judged', 'expired', 'reported'));

create table content_reports (
    id            uuid primary key default gen_random_uuid(),
    assignment_id uuid not null unique references assignments,
    comparison_id uuid not null references comparisons,
    project_id    uuid not null references projects on delete cascade,
    rater_id      uuid not null references users,
    reason        text not null,
    created_at    timestamptz not null default now()
);
create index content_reports_project_idx on content_reports (project_id, created_at);

-- A rater sees a project's content warning, and must accept it, before the first pair.
create table warning_acceptances (
    project_id  uuid not null references projects on delete cascade,
    user_id     uuid not null references users on delete cascade,
    accepted_at timestamptz not null default now(),
    primary key (project_id, user_id)
);

-- Optional exposure limits per labeling session (judgments less than the break
-- length apart): at most this many pairs, or this many minutes, then a break.
alter table projects
    add column session_cap_pairs int check (session_cap_pairs between 1 and 10000),
    add column session_cap_minutes int check (session_cap_minutes between 1 and 1440);
