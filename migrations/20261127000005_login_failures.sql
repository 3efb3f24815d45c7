-- Failed web logins, per login name, for rate limiting: after too many failures in a
-- window, further attempts for that name are refused until the window has passed.
-- Kept in PostgreSQL so every server node sees the same count.
create table login_failures (
    name text not null,
    at   timestamptz not null default now()
);
create index login_failures_name_at on login_failures (name, at);
create index login_failures_at on login_failures (at);
