//! Projects: settings, members, invites, access rules and counts.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{self, Role, User},
    error::{Error, Result, ResultExt},
    users,
};

/// A labeling project and its settings.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Markdown shown to raters (rendered sanitised).
    pub instructions: String,
    /// `text` or `gif`.
    pub media_kind: String,
    /// How many raters judge each pair.
    pub overlap: i32,
    /// Answers raters may give: a subset of left, right, tie, cant_tell.
    pub options: Vec<String>,
    /// When set, raters may give a strength 1..=strength_scale.
    pub strength_scale: Option<i32>,
    /// `off`, `optional` or `required`.
    pub rationale: String,
    pub content_warning: Option<String>,
    /// How long a rater holds an assigned pair before it returns to the queue.
    pub lease_seconds: i32,
    /// Exposure limit: pairs per labeling session before a break (none: no limit).
    pub session_cap_pairs: Option<i32>,
    /// Exposure limit: minutes per labeling session before a break (none: no limit).
    pub session_cap_minutes: Option<i32>,
    /// Retrain the reward model after this many new judgments (0: only on demand).
    pub train_every: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

const PROJECT_COLUMNS: &str = "id, slug, name, instructions, media_kind, overlap, options, \
     strength_scale, rationale, content_warning, lease_seconds, session_cap_pairs, \
     session_cap_minutes, train_every, created_at";

/// Settings for a new project, or the new settings of an existing one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub instructions: String,
    /// `text` (default) or `gif`.
    #[serde(default = "default_media")]
    pub media_kind: String,
    #[serde(default = "default_overlap")]
    pub overlap: i32,
    #[serde(default = "default_options")]
    pub options: Vec<String>,
    #[serde(default)]
    pub strength_scale: Option<i32>,
    #[serde(default = "default_rationale")]
    pub rationale: String,
    #[serde(default)]
    pub content_warning: Option<String>,
    #[serde(default = "default_lease")]
    pub lease_seconds: i32,
    #[serde(default)]
    pub session_cap_pairs: Option<i32>,
    #[serde(default)]
    pub session_cap_minutes: Option<i32>,
    #[serde(default = "default_train_every")]
    pub train_every: i32,
}

fn default_train_every() -> i32 {
    50
}

fn default_media() -> String {
    "text".into()
}
fn default_overlap() -> i32 {
    3
}
pub fn default_options() -> Vec<String> {
    ANSWERS.iter().map(|s| s.to_string()).collect()
}
fn default_rationale() -> String {
    "off".into()
}
fn default_lease() -> i32 {
    600
}

/// Every answer a project may offer, in display order.
pub const ANSWERS: [&str; 4] = ["left", "right", "tie", "cant_tell"];

impl ProjectSettings {
    /// Defaults for everything but the slug and name.
    pub fn new(slug: &str, name: &str) -> Self {
        serde_json::from_value(serde_json::json!({"slug": slug, "name": name}))
            .expect("defaults deserialize")
    }

    /// Check every field, reporting the first problem in words a lead understands.
    pub fn validate(&mut self) -> Result<()> {
        let slug_ok = (1..=63).contains(&self.slug.len())
            && self
                .slug
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !slug_ok {
            return Err(Error::invalid(
                "slug: 1-63 lower-case letters, digits or '-', starting with a letter or digit",
            ));
        }
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() || self.name.len() > 200 {
            return Err(Error::invalid("name: 1-200 characters"));
        }
        if !["text", "gif"].contains(&self.media_kind.as_str()) {
            return Err(Error::invalid("media_kind: `text` or `gif`"));
        }
        if !(1..=100).contains(&self.overlap) {
            return Err(Error::invalid("overlap: between 1 and 100 raters per pair"));
        }
        if let Some(bad) = self.options.iter().find(|o| !ANSWERS.contains(&o.as_str())) {
            return Err(Error::invalid(format!(
                "options: unknown answer {bad:?} (use left, right, tie, cant_tell)"
            )));
        }
        // Keep the canonical order and drop repeats.
        let chosen: Vec<String> = ANSWERS
            .iter()
            .filter(|a| self.options.iter().any(|o| o == *a))
            .map(|a| a.to_string())
            .collect();
        if !(chosen.iter().any(|o| o == "left") && chosen.iter().any(|o| o == "right")) {
            return Err(Error::invalid("options: must include left and right"));
        }
        self.options = chosen;
        if let Some(s) = self.strength_scale
            && !(2..=10).contains(&s)
        {
            return Err(Error::invalid("strength_scale: between 2 and 10, or none"));
        }
        if !["off", "optional", "required"].contains(&self.rationale.as_str()) {
            return Err(Error::invalid("rationale: off, optional or required"));
        }
        if self
            .content_warning
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            self.content_warning = None;
        }
        if !(10..=86400).contains(&self.lease_seconds) {
            return Err(Error::invalid("lease_seconds: between 10 and 86400"));
        }
        if self
            .session_cap_pairs
            .is_some_and(|n| !(1..=10000).contains(&n))
        {
            return Err(Error::invalid(
                "session_cap_pairs: between 1 and 10000, or none",
            ));
        }
        if self
            .session_cap_minutes
            .is_some_and(|n| !(1..=1440).contains(&n))
        {
            return Err(Error::invalid(
                "session_cap_minutes: between 1 and 1440, or none",
            ));
        }
        Ok(())
    }
}

/// A member's role inside one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Annotator,
    Lead,
    Researcher,
}

impl MemberRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Annotator => "annotator",
            MemberRole::Lead => "lead",
            MemberRole::Researcher => "researcher",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "annotator" => MemberRole::Annotator,
            "lead" => MemberRole::Lead,
            "researcher" => MemberRole::Researcher,
            _ => return None,
        })
    }
}

/// What one user may do in one project. Admins may do everything; leads of
/// the project manage it; researchers read it; annotators (and leads) label it.
#[derive(Debug, Clone)]
pub struct Access {
    pub project: Project,
    pub user: User,
    pub member: Option<MemberRole>,
}

impl Access {
    pub fn can_manage(&self) -> bool {
        self.user.is_admin() || self.member == Some(MemberRole::Lead)
    }
    pub fn can_read(&self) -> bool {
        self.can_manage() || self.member == Some(MemberRole::Researcher)
    }
    pub fn can_label(&self) -> bool {
        self.user.is_admin()
            || matches!(self.member, Some(MemberRole::Annotator | MemberRole::Lead))
    }
    pub fn require_manage(self) -> Result<Self> {
        if self.can_manage() {
            Ok(self)
        } else {
            Err(Error::forbidden("only the project's leads may do this"))
        }
    }
    pub fn require_read(self) -> Result<Self> {
        if self.can_read() {
            Ok(self)
        } else {
            Err(Error::forbidden(
                "only the project's leads and researchers may see this",
            ))
        }
    }
    pub fn require_label(self) -> Result<Self> {
        if self.can_label() {
            Ok(self)
        } else {
            Err(Error::forbidden(
                "only the project's annotators may label it",
            ))
        }
    }
}

/// Resolve a project for a user. A project the user does not belong to is
/// reported as not found, so its existence does not leak.
pub async fn access(db: impl sqlx::PgExecutor<'_>, user: &User, slug: &str) -> Result<Access> {
    // One round trip: every API call on a project starts here.
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        project: Project,
        member_role: Option<String>,
    }
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select {PROJECT_COLUMNS},
                    (select role from project_members m
                     where m.project_id = projects.id and m.user_id = $2) as member_role
             from projects where slug = $1"
        )
    });
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(slug)
        .bind(user.id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("project"))?;
    admit(row.project, user.clone(), row.member_role.as_deref())
}

/// Resolve a project for the caller presenting `credential`, looking both up
/// in one statement: the same answers as [`auth::Credential::user`] and then
/// [`access`], in the same order. When the statement finds nothing (an unknown
/// credential or project), those two run to tell which.
pub async fn access_by_credential(
    conn: &mut sqlx::PgConnection,
    credential: &auth::Credential,
    slug: &str,
) -> Result<Access> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        project: Project,
        user_id: Uuid,
        user_name: String,
        user_role: String,
        csrf: Option<String>,
        member_role: Option<String>,
    }
    static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        auth::CALLERS.map(|caller| {
            format!(
                "select {PROJECT_COLUMNS}, c.*,
                        (select role from project_members m
                         where m.project_id = projects.id and m.user_id = c.user_id) as member_role
                 from projects, ({caller}) c where projects.slug = $2"
            )
        })
    });
    let (digest, caller) = credential.lookup();
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(SQL[caller].as_str()))
        .bind(digest)
        .bind(slug)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        let user = credential.user(&mut *conn).await?;
        return access(&mut *conn, &user, slug).await;
    };
    credential.check_csrf(row.csrf.as_deref().unwrap_or_default())?;
    let user = auth::user_from_row(row.user_id, row.user_name, row.user_role);
    admit(row.project, user, row.member_role.as_deref())
}

/// `user`'s access to `project`, given their role in it (None: not a member),
/// or not found.
fn admit(project: Project, user: User, member_role: Option<&str>) -> Result<Access> {
    let member = member_role.and_then(MemberRole::parse);
    if member.is_none() && !user.is_admin() {
        return Err(Error::NotFound("project"));
    }
    Ok(Access {
        project,
        user,
        member,
    })
}

pub async fn by_slug(pool: &PgPool, slug: &str) -> Result<Project> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {PROJECT_COLUMNS} from projects where slug = $1"
    )))
    .bind(slug)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("project"))
}

/// Create a project; its creator becomes one of its leads.
pub async fn create(pool: &PgPool, creator: &User, mut s: ProjectSettings) -> Result<Project> {
    if !matches!(creator.role, Role::Admin | Role::Lead) {
        return Err(Error::forbidden("only leads and admins create projects"));
    }
    s.validate()?;
    let mut tx = pool.begin().await?;
    let project: Project = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into projects (slug, name, instructions, media_kind, overlap, options,
             strength_scale, rationale, content_warning, lease_seconds, created_by,
             session_cap_pairs, session_cap_minutes, train_every)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         returning {PROJECT_COLUMNS}"
    )))
    .bind(&s.slug)
    .bind(&s.name)
    .bind(&s.instructions)
    .bind(&s.media_kind)
    .bind(s.overlap)
    .bind(&s.options)
    .bind(s.strength_scale)
    .bind(&s.rationale)
    .bind(&s.content_warning)
    .bind(s.lease_seconds)
    .bind(creator.id)
    .bind(s.session_cap_pairs)
    .bind(s.session_cap_minutes)
    .bind(s.train_every)
    .fetch_one(&mut *tx)
    .await
    .on_unique(
        "projects_slug_key",
        "slug_taken",
        format!("a project with slug {:?} exists", s.slug),
    )?;
    sqlx::query("insert into project_members (project_id, user_id, role) values ($1, $2, 'lead')")
        .bind(project.id)
        .bind(creator.id)
        .execute(&mut *tx)
        .await?;
    audit(
        &mut tx,
        creator,
        project.id,
        "project.create",
        serde_json::json!({"slug": s.slug}),
    )
    .await?;
    tx.commit().await?;
    Ok(project)
}

/// Change a project's settings. The slug and media kind are fixed once pairs exist
/// elsewhere in the system, so they are not changed here.
pub async fn update(pool: &PgPool, access: &Access, mut s: ProjectSettings) -> Result<Project> {
    s.slug = access.project.slug.clone();
    s.media_kind = access.project.media_kind.clone();
    s.validate()?;
    let mut tx = pool.begin().await?;
    let project: Project = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update projects set name = $2, instructions = $3, overlap = $4, options = $5,
             strength_scale = $6, rationale = $7, content_warning = $8, lease_seconds = $9,
             session_cap_pairs = $10, session_cap_minutes = $11, train_every = $12
         where id = $1 returning {PROJECT_COLUMNS}"
    )))
    .bind(access.project.id)
    .bind(&s.name)
    .bind(&s.instructions)
    .bind(s.overlap)
    .bind(&s.options)
    .bind(s.strength_scale)
    .bind(&s.rationale)
    .bind(&s.content_warning)
    .bind(s.lease_seconds)
    .bind(s.session_cap_pairs)
    .bind(s.session_cap_minutes)
    .bind(s.train_every)
    .fetch_one(&mut *tx)
    .await?;
    audit(
        &mut tx,
        &access.user,
        project.id,
        "project.update",
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(project)
}

/// One line of a user's project list.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProjectSummary {
    pub slug: String,
    pub name: String,
    pub media_kind: String,
    /// The caller's role in it (null for admins who are not members).
    pub my_role: Option<String>,
    pub pairs: i64,
    pub complete_pairs: i64,
}

/// The projects a user can see: all for admins, their memberships otherwise.
pub async fn list_for(pool: &PgPool, user: &User) -> Result<Vec<ProjectSummary>> {
    Ok(sqlx::query_as(
        "select p.slug, p.name, p.media_kind, m.role as my_role, n.pairs, n.complete_pairs
         from projects p
         left join project_members m on m.project_id = p.id and m.user_id = $1
         -- one pass over each project's pairs
         cross join lateral (
             select count(*) as pairs,
                    count(*) filter (where c.judged_count >= c.overlap) as complete_pairs
             from pair_counts c where c.project_id = p.id) n
         where $2 or m.user_id is not null
         order by p.created_at desc",
    )
    .bind(user.id)
    .bind(user.is_admin())
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub judgments: i64,
}

pub async fn members(pool: &PgPool, project_id: Uuid) -> Result<Vec<Member>> {
    Ok(sqlx::query_as(
        "select u.name, m.role,
                (select count(*) from judgments j where j.project_id = m.project_id
                    and j.rater_id = m.user_id) as judgments
         from project_members m join users u on u.id = m.user_id
         where m.project_id = $1 order by m.role, u.name",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?)
}

/// Add a user to a project (or change their role in it).
pub async fn add_member(
    pool: &PgPool,
    access: &Access,
    name: &str,
    role: MemberRole,
) -> Result<()> {
    let user = users::by_name(pool, name).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into project_members (project_id, user_id, role) values ($1, $2, $3)
         on conflict (project_id, user_id) do update set role = excluded.role",
    )
    .bind(access.project.id)
    .bind(user.id)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"user": name, "role": role.as_str()});
    audit(
        &mut tx,
        &access.user,
        access.project.id,
        "member.add",
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How long an invite link stays valid.
pub const INVITE_TTL: Duration = Duration::days(14);

/// Make a one-time invite code for a project; the link is `/invite/{code}`.
pub async fn create_invite(pool: &PgPool, access: &Access, role: MemberRole) -> Result<String> {
    let code = auth::new_secret();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into invites (code_hash, project_id, role, created_by, expires_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(auth::digest(&code))
    .bind(access.project.id)
    .bind(role.as_str())
    .bind(access.user.id)
    .bind(OffsetDateTime::now_utc() + INVITE_TTL)
    .execute(&mut *tx)
    .await?;
    audit(
        &mut tx,
        &access.user,
        access.project.id,
        "invite.create",
        serde_json::json!({"role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    Ok(code)
}

/// The project an unused, unexpired invite code leads to.
pub async fn invite_project(pool: &PgPool, code: &str) -> Result<Project> {
    let slug: Option<String> = sqlx::query_scalar(
        "select p.slug from invites i join projects p on p.id = i.project_id
         where i.code_hash = $1 and i.used_at is null and i.expires_at > now()",
    )
    .bind(auth::digest(code))
    .fetch_optional(pool)
    .await?;
    let slug = slug.ok_or(Error::Gone {
        code: "invite_invalid",
        message: "this invite link is used, expired or unknown".into(),
    })?;
    by_slug(pool, &slug).await
}

/// Redeem an invite: create the user, add them to the project, mark the code used.
/// The code is claimed with a row lock so two people cannot both use it.
pub async fn accept_invite(pool: &PgPool, code: &str, name: &str, password: &str) -> Result<User> {
    users::check_name(name)?;
    users::check_password(password)?;
    let p = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&p))
        .await
        .map_err(anyhow::Error::from)??;
    let mut tx = pool.begin().await?;
    let invite: Option<(Uuid, String)> = sqlx::query_as(
        "select project_id, role from invites
         where code_hash = $1 and used_at is null and expires_at > now() for update",
    )
    .bind(auth::digest(code))
    .fetch_optional(&mut *tx)
    .await?;
    let (project_id, role) = invite.ok_or(Error::Gone {
        code: "invite_invalid",
        message: "this invite link is used, expired or unknown".into(),
    })?;
    let id: Uuid = sqlx::query_scalar(
        "insert into users (name, role, password_hash) values ($1, 'annotator', $2) returning id",
    )
    .bind(name)
    .bind(hash)
    .fetch_one(&mut *tx)
    .await
    .on_unique(
        "users_name_key",
        "name_taken",
        format!("the name {name:?} is taken"),
    )?;
    sqlx::query("insert into project_members (project_id, user_id, role) values ($1, $2, $3)")
        .bind(project_id)
        .bind(id)
        .bind(&role)
        .execute(&mut *tx)
        .await?;
    sqlx::query("update invites set used_at = now(), used_by = $2 where code_hash = $1")
        .bind(auth::digest(code))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(User {
        id,
        name: name.to_owned(),
        role: Role::Annotator,
    })
}

/// Counts for the overview page and `GET /stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub pairs: i64,
    pub judgments: i64,
    /// Pairs with as many judgments as the overlap asks for.
    pub complete_pairs: i64,
    /// Pairs currently held by a rater (live leases).
    pub leased_pairs: i64,
    pub judgments_per_rater: Vec<RaterCount>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RaterCount {
    pub rater: String,
    pub judgments: i64,
}

pub async fn stats(pool: &PgPool, project_id: Uuid) -> Result<Stats> {
    let (pairs, complete_pairs, leased_pairs): (i64, i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where judged_count >= overlap),
                count(*) filter (where leased_count > 0)
         from pair_counts where project_id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?;
    let judgments_per_rater: Vec<RaterCount> = sqlx::query_as(
        "select u.name as rater, count(*) as judgments from judgments j
         join users u on u.id = j.rater_id where j.project_id = $1
         group by u.name order by count(*) desc, u.name",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(Stats {
        pairs,
        judgments: judgments_per_rater.iter().map(|r| r.judgments).sum(),
        complete_pairs,
        leased_pairs,
        judgments_per_rater,
    })
}

/// Record a lead or admin action.
pub async fn audit(
    conn: &mut sqlx::PgConnection,
    actor: &User,
    project_id: Uuid,
    action: &str,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "insert into audit_log (actor_id, project_id, action, detail) values ($1, $2, $3, $4)",
    )
    .bind((!actor.id.is_nil()).then_some(actor.id))
    .bind(project_id)
    .bind(action)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Render a lead's Markdown to HTML that cannot run anything: pulldown-cmark
/// turns it into HTML, ammonia keeps only harmless tags and attributes.
pub fn render_markdown(src: &str) -> String {
    let parser = pulldown_cmark::Parser::new_ext(src, pulldown_cmark::Options::ENABLE_TABLES);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    ammonia::clean(&html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_sanitised() {
        let html = render_markdown(
            "# Hi\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>",
        );
        assert!(html.contains("<h1>Hi</h1>"));
        assert!(!html.contains("<script"));
        assert!(
            html.contains("<a") && !html.contains("javascript:"),
            "{html}"
        );
        assert!(!html.contains("onerror"));
    }

    #[test]
    fn settings_validation() {
        let mut s = ProjectSettings::new("ok-slug", "Name");
        assert!(s.validate().is_ok());
        assert_eq!(s.options, default_options());
        for (field, value) in [
            ("slug", serde_json::json!("Bad Slug")),
            ("overlap", serde_json::json!(0)),
            ("options", serde_json::json!(["left"])),
            ("options", serde_json::json!(["left", "right", "maybe"])),
            ("media_kind", serde_json::json!("video")),
            ("strength_scale", serde_json::json!(1)),
            ("rationale", serde_json::json!("sometimes")),
        ] {
            let mut v = serde_json::json!({"slug": "s", "name": "n"});
            v[field] = value;
            let mut s: ProjectSettings = serde_json::from_value(v).unwrap();
            assert!(s.validate().is_err(), "{field} should be refused");
        }
        let mut s: ProjectSettings = serde_json::from_value(
            serde_json::json!({"slug": "s", "name": "n", "options": ["right", "left", "left"]}),
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.options, ["left", "right"]);
    }
}
