-- The labeling spine: users, auth, projects, rollouts, comparisons, assignments, judgments.
--
-- Conventions: uuid primary keys from gen_random_uuid(); timestamptz everywhere;
-- enumerations are text with a check constraint (cheap to extend with a new
-- migration, readable in psql); secrets (tokens, session ids, invite codes) are
-- stored only as sha256 digests, never in clear.

create table users (
    id            uuid primary key default gen_random_uuid(),
    name          text not null unique check (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    role          text not null check (role in ('admin', 'lead', 'researcher', 'annotator')),
    password_hash text,
    created_at    timestamptz not null default now()
);

create table api_tokens (
    token_hash   bytea primary key,
    user_id      uuid not null references users on delete cascade,
    label        text not null default '',
    created_at   timestamptz not null default now()
);
create index api_tokens_user_idx on api_tokens (user_id);

create table sessions (
    token_hash  bytea primary key,
    user_id     uuid not null references users on delete cascade,
    csrf_token  text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index sessions_user_idx on sessions (user_id);

create table projects (
    id              uuid primary key default gen_random_uuid(),
    slug            text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name            text not null check (length(name) between 1 and 200),
    instructions    text not null default '',
    media_kind      text not null check (media_kind in ('text', 'gif')),
    -- raters per pair
    overlap         int  not null default 3 check (overlap between 1 and 100),
    -- the answers raters may give, a subset of left/right/tie/cant_tell
    options         text[] not null default '{left,right,tie,cant_tell}'
                    check (options <@ '{left,right,tie,cant_tell}' and cardinality(options) >= 2),
    -- null: no strength scale; n: raters may rate strength 1..n
    strength_scale  int check (strength_scale between 2 and 10),
    rationale       text not null default 'off' check (rationale in ('off', 'optional', 'required')),
    content_warning text,
    lease_seconds   int  not null default 600 check (lease_seconds between 10 and 86400),
    created_by      uuid references users on delete set null,
    created_at      timestamptz not null default now()
);

create table project_members (
    project_id uuid not null references projects on delete cascade,
    user_id    uuid not null references users on delete cascade,
    role       text not null check (role in ('annotator', 'lead', 'researcher')),
    added_at   timestamptz not null default now(),
    primary key (project_id, user_id)
);
create index project_members_user_idx on project_members (user_id);

-- One-time invite links: whoever opens one picks a name and password and
-- becomes a member with the invite's role.
create table invites (
    code_hash  bytea primary key,
    project_id uuid not null references projects on delete cascade,
    role       text not null default 'annotator' check (role in ('annotator', 'lead', 'researcher')),
    created_by uuid references users on delete set null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    used_at    timestamptz,
    used_by    uuid references users on delete set null
);

-- GIF clips, content-addressed: the bytes live in the object store under their
-- sha256; the decoded grayscale frames (frame_count x side x side) live here,
-- ready for training without decoding again.
create table clip_blobs (
    sha256      text primary key check (sha256 ~ '^[0-9a-f]{64}$'),
    byte_size   int  not null,
    width       int  not null,
    height      int  not null,
    frame_count int  not null,
    duration_ms int  not null,
    frame_side  int  not null,
    frames      bytea not null,
    created_at  timestamptz not null default now()
);

-- A project's name for a clip (what import lines refer to).
create table project_clips (
    project_id uuid not null references projects on delete cascade,
    name       text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$'),
    sha256     text not null references clip_blobs,
    created_at timestamptz not null default now(),
    primary key (project_id, name)
);

create table rollouts (
    id          uuid primary key default gen_random_uuid(),
    project_id  uuid not null references projects on delete cascade,
    body        text,
    clip_sha256 text references clip_blobs,
    clip_name   text,
    policy      text,
    meta        jsonb not null default '{}',
    created_at  timestamptz not null default now(),
    check ((body is null) <> (clip_sha256 is null))
);
create index rollouts_project_idx on rollouts (project_id);

-- A pair of rollouts in canonical order (a, b). judged_count and leased_count
-- are maintained by the assignment code in the same transactions that create
-- assignments and judgments, so "is this pair still open" is a check on the
-- row itself: a concurrent assigner that locks the row re-checks it.
create table comparisons (
    id           uuid primary key default gen_random_uuid(),
    seq          bigserial not null unique,
    project_id   uuid not null references projects on delete cascade,
    external_id  text,
    prompt       text not null,
    rollout_a    uuid not null references rollouts,
    rollout_b    uuid not null references rollouts,
    meta         jsonb not null default '{}',
    overlap      int  not null check (overlap between 1 and 100),
    priority     int  not null default 0,
    gold         text check (gold in ('a', 'b', 'tie')),
    judged_count int  not null default 0 check (judged_count >= 0),
    leased_count int  not null default 0 check (leased_count >= 0),
    created_at   timestamptz not null default now(),
    unique (project_id, external_id)
);
-- The queue: open pairs by priority, then import order.
create index comparisons_open_idx on comparisons (project_id, priority desc, seq)
    where judged_count + leased_count < overlap;

create table assignments (
    id            uuid primary key default gen_random_uuid(),
    comparison_id uuid not null references comparisons on delete cascade,
    project_id    uuid not null references projects on delete cascade,
    rater_id      uuid not null references users on delete cascade,
    -- which rollout was shown on the left
    left_is_a     boolean not null,
    state         text not null default 'leased' check (state in ('leased', 'judged', 'expired')),
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null,
    judged_at     timestamptz
);
-- A rater is never given the same pair twice (unless an earlier lease expired).
create unique index assignments_rater_pair_idx on assignments (comparison_id, rater_id)
    where state <> 'expired';
create index assignments_leases_idx on assignments (expires_at) where state = 'leased';
create index assignments_rater_idx on assignments (rater_id, project_id);

-- Append-only: a judgment is never updated or deleted (see the trigger below).
create table judgments (
    id              uuid primary key default gen_random_uuid(),
    assignment_id   uuid not null unique references assignments,
    comparison_id   uuid not null references comparisons,
    project_id      uuid not null references projects,
    rater_id        uuid not null references users,
    -- the answer in canonical terms: a, b, tie, cant_tell
    choice          text not null check (choice in ('a', 'b', 'tie', 'cant_tell')),
    -- what the rater pressed, and which rollout was on the left
    displayed_choice text not null check (displayed_choice in ('left', 'right', 'tie', 'cant_tell')),
    left_is_a       boolean not null,
    strength        int,
    rationale       text,
    content_flag    boolean not null default false,
    flag_reason     text,
    duration_ms     int check (duration_ms >= 0),
    idempotency_key text,
    created_at      timestamptz not null default now()
);
create unique index judgments_idempotency_idx on judgments (rater_id, idempotency_key)
    where idempotency_key is not null;
create index judgments_project_idx on judgments (project_id, created_at);
create index judgments_comparison_idx on judgments (comparison_id);

create function judgments_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'judgments are append-only';
end $$;
create trigger judgments_append_only before update or delete on judgments
    for each row execute function judgments_append_only();

-- Lead and admin actions, for accountability.
create table audit_log (
    id         bigserial primary key,
    actor_id   uuid references users on delete set null,
    project_id uuid references projects on delete cascade,
    action     text not null,
    detail     jsonb not null default '{}',
    created_at timestamptz not null default now()
);
