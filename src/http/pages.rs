//! Server-rendered pages for leads (and the minimal labeling form for raters):
//! login, project list, create/edit, overview with import, clips, members and invites.
//! Every form post carries the session's CSRF token.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Multipart, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    AppState,
    api::base_url,
    extract::{Form, PageSession, Path, SESSION_COOKIE, constant_eq, cookie},
};
use crate::{
    auth,
    error::{Error, LineError},
    import::{self, ImportReport},
    labeling::{self, JudgmentInput, NextPair},
    projects::{self, Access, Member, MemberRole, Project, ProjectSettings, ProjectSummary, Stats},
    rater::{self, Progress},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/projects/new", get(new_project_form).post(new_project))
        .route("/projects/{slug}", get(overview))
        .route("/projects/{slug}/edit", get(edit_form).post(edit))
        .route(
            "/projects/{slug}/upload",
            post(upload).layer(DefaultBodyLimit::max(256 << 20)),
        )
        .route("/projects/{slug}/members", post(add_member))
        .route("/projects/{slug}/invites", post(invite))
        .route("/projects/{slug}/train", post(train))
        .route("/projects/{slug}/label", get(label_page).post(label))
        .route("/projects/{slug}/warning", post(accept_warning))
        .route("/projects/{slug}/report", post(report))
        .route("/invite/{code}", get(invite_form).post(accept_invite))
}

/// Why a page could not be shown: not logged in (go to the login form), or an error page.
pub enum PageError {
    Login,
    Error(Error),
}

impl<E: Into<Error>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError::Error(e.into())
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    message: String,
    user: Option<String>,
    csrf: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Login => Redirect::to("/login").into_response(),
            PageError::Error(e) => {
                let status = super::error::status(&e);
                if let Error::Internal(cause) = &e {
                    tracing::error!(error = ?cause, "internal error");
                }
                let page = ErrorPage {
                    status: status.as_u16(),
                    message: e.to_string(),
                    user: None,
                    csrf: String::new(),
                };
                (status, page).into_response()
            }
        }
    }
}

type PageResult<T = Response> = Result<T, PageError>;

/// The signed-in user's name and CSRF token, for the layout's header.
struct Chrome {
    user: Option<String>,
    csrf: String,
}

fn chrome(s: &PageSession) -> Chrome {
    Chrome {
        user: Some(s.user().name.clone()),
        csrf: s.session.csrf.clone(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "projects.html")]
struct ProjectsPage {
    user: Option<String>,
    csrf: String,
    projects: Vec<ProjectSummary>,
    can_create: bool,
}

async fn home(State(state): State<AppState>, s: PageSession) -> PageResult<ProjectsPage> {
    let projects = projects::list_for(&state.pool, s.user()).await?;
    let c = chrome(&s);
    Ok(ProjectsPage {
        user: c.user,
        csrf: c.csrf,
        projects,
        can_create: matches!(s.user().role, auth::Role::Admin | auth::Role::Lead),
    })
}

// ---- login and logout ----

const LOGIN_CSRF_COOKIE: &str = "backflip_login_csrf";

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    user: Option<String>,
    csrf: String,
    error: Option<String>,
}

/// The login form. Its CSRF token is a double-submit cookie, as there is no session yet.
async fn login_form() -> Response {
    let csrf = auth::new_secret();
    let cookie = format!("{LOGIN_CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict");
    (
        [(header::SET_COOKIE, cookie)],
        LoginPage {
            user: None,
            csrf,
            error: None,
        },
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let expected = cookie(&parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_eq(expected, &form.csrf) {
        return Err(Error::forbidden("the login form expired; reload it and try again").into());
    }
    let Some(user) = auth::login(&state.pool, &form.name, &form.password).await? else {
        let page = LoginPage {
            user: None,
            csrf: form.csrf,
            error: Some("wrong name or password".into()),
        };
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    start_session(&state, user.id, "/").await
}

async fn start_session(state: &AppState, user_id: uuid::Uuid, to: &str) -> PageResult {
    let id = auth::create_session(&state.pool, user_id).await?;
    let secure = if state.inner.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        auth::SESSION_TTL.whole_seconds()
    );
    let mut res = Redirect::to(to).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(anyhow::Error::from)?,
    );
    Ok(res)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    s: PageSession,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&form.csrf)?;
    auth::delete_session(&state.pool, &s.id).await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response())
}

// ---- creating and editing projects ----

#[derive(Template, WebTemplate)]
#[template(path = "project_form.html")]
struct ProjectFormPage {
    user: Option<String>,
    csrf: String,
    editing: bool,
    f: SettingsForm,
    error: Option<String>,
}

/// The project settings form. Checkboxes arrive only when ticked, numbers as text.
#[derive(Deserialize, Default, Clone)]
struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    name: String,
    #[serde(default)]
    instructions: String,
    #[serde(default)]
    media_kind: String,
    overlap: String,
    #[serde(default)]
    opt_tie: Option<String>,
    #[serde(default)]
    opt_cant_tell: Option<String>,
    #[serde(default)]
    strength_scale: String,
    rationale: String,
    #[serde(default)]
    content_warning: String,
    lease_seconds: String,
    #[serde(default)]
    session_cap_pairs: String,
    #[serde(default)]
    session_cap_minutes: String,
    #[serde(default)]
    train_every: String,
}

impl SettingsForm {
    fn from_project(p: &Project) -> Self {
        SettingsForm {
            csrf: String::new(),
            slug: p.slug.clone(),
            name: p.name.clone(),
            instructions: p.instructions.clone(),
            media_kind: p.media_kind.clone(),
            overlap: p.overlap.to_string(),
            opt_tie: p.options.iter().any(|o| o == "tie").then(String::new),
            opt_cant_tell: p.options.iter().any(|o| o == "cant_tell").then(String::new),
            strength_scale: p.strength_scale.map(|s| s.to_string()).unwrap_or_default(),
            rationale: p.rationale.clone(),
            content_warning: p.content_warning.clone().unwrap_or_default(),
            lease_seconds: p.lease_seconds.to_string(),
            session_cap_pairs: p
                .session_cap_pairs
                .map(|s| s.to_string())
                .unwrap_or_default(),
            session_cap_minutes: p
                .session_cap_minutes
                .map(|s| s.to_string())
                .unwrap_or_default(),
            train_every: p.train_every.to_string(),
        }
    }

    fn settings(&self) -> Result<ProjectSettings, Error> {
        let int = |field: &str, v: &str| {
            v.trim()
                .parse::<i32>()
                .map_err(|_| Error::invalid(format!("{field}: a whole number, please")))
        };
        let mut options = vec!["left".to_string(), "right".to_string()];
        if self.opt_tie.is_some() {
            options.push("tie".into());
        }
        if self.opt_cant_tell.is_some() {
            options.push("cant_tell".into());
        }
        let mut s = ProjectSettings::new(self.slug.trim(), &self.name);
        s.instructions = self.instructions.clone();
        s.media_kind = self.media_kind.clone();
        s.overlap = int("overlap", &self.overlap)?;
        s.options = options;
        let optional = |field: &str, v: &str| match v.trim() {
            "" => Ok(None),
            v => int(field, v).map(Some),
        };
        s.strength_scale = optional("strength scale", &self.strength_scale)?;
        s.session_cap_pairs = optional("session cap (pairs)", &self.session_cap_pairs)?;
        s.session_cap_minutes = optional("session cap (minutes)", &self.session_cap_minutes)?;
        if let Some(n) = optional("retrain every", &self.train_every)? {
            s.train_every = n;
        }
        s.rationale = self.rationale.clone();
        s.content_warning = Some(self.content_warning.clone());
        s.lease_seconds = int("lease seconds", &self.lease_seconds)?;
        Ok(s)
    }
}

async fn new_project_form(s: PageSession) -> ProjectFormPage {
    let c = chrome(&s);
    let mut f = SettingsForm::from_project(&placeholder_project());
    f.slug.clear();
    f.name.clear();
    ProjectFormPage {
        user: c.user,
        csrf: c.csrf,
        editing: false,
        f,
        error: None,
    }
}

/// Defaults for the new-project form, from the same defaults the API uses.
fn placeholder_project() -> Project {
    let mut s = ProjectSettings::new("new", "new");
    s.validate().expect("defaults are valid");
    Project {
        id: uuid::Uuid::nil(),
        slug: s.slug,
        name: s.name,
        instructions: s.instructions,
        media_kind: s.media_kind,
        overlap: s.overlap,
        options: s.options,
        strength_scale: s.strength_scale,
        rationale: s.rationale,
        content_warning: s.content_warning,
        lease_seconds: s.lease_seconds,
        session_cap_pairs: s.session_cap_pairs,
        session_cap_minutes: s.session_cap_minutes,
        train_every: s.train_every,
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

async fn new_project(
    State(state): State<AppState>,
    s: PageSession,
    Form(f): Form<SettingsForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let result = match f.settings() {
        Ok(settings) => projects::create(&state.pool, s.user(), settings).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => Ok(Redirect::to(&format!("/projects/{}", p.slug)).into_response()),
        Err(e @ (Error::Invalid { .. } | Error::Conflict { .. })) => {
            let c = chrome(&s);
            let page = ProjectFormPage {
                user: c.user,
                csrf: c.csrf,
                editing: false,
                f,
                error: Some(e.to_string()),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn edit_form(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult<ProjectFormPage> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    let c = chrome(&s);
    Ok(ProjectFormPage {
        user: c.user,
        csrf: c.csrf,
        editing: true,
        f: SettingsForm::from_project(&access.project),
        error: None,
    })
}

async fn edit(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<SettingsForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    let result = match f.settings() {
        Ok(settings) => projects::update(&state.pool, &access, settings).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(p) => Ok(Redirect::to(&format!("/projects/{}", p.slug)).into_response()),
        Err(e @ Error::Invalid { .. }) => {
            let c = chrome(&s);
            let mut f = f;
            f.slug = slug;
            let page = ProjectFormPage {
                user: c.user,
                csrf: c.csrf,
                editing: true,
                f,
                error: Some(e.to_string()),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// ---- the project overview ----

#[derive(Template, WebTemplate)]
#[template(path = "project.html")]
struct OverviewPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    instructions_html: String,
    can_manage: bool,
    can_label: bool,
    stats: Option<Stats>,
    members: Vec<Member>,
    clips: i64,
    notice: Option<String>,
    report: Option<ImportReport>,
    errors: Vec<LineError>,
    invite_url: Option<String>,
    models: Vec<ModelRow>,
    jobs: Vec<crate::jobs::storage::JobRow>,
    /// SVG charts of the reward model (accuracy by labels, calibration, loss).
    charts: Vec<String>,
}

/// The reward-model charts: every version's held-out accuracy by its training
/// pairs, and the current version's calibration and loss curve.
fn model_charts(versions: &[crate::reward::store::ModelVersion]) -> Vec<String> {
    use super::charts;
    let mut by_labels: Vec<(f64, f64)> = versions
        .iter()
        .filter_map(|v| {
            Some((
                f64::from(v.train_pairs),
                v.metrics["held_out"]["accuracy"].as_f64()?,
            ))
        })
        .collect();
    by_labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let current = versions.iter().find(|v| v.current);
    let calibration: Vec<(f64, f64)> = current
        .and_then(|v| v.metrics["held_out"]["calibration"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| Some((b["mean_predicted"].as_f64()?, b["observed"].as_f64()?)))
        .collect();
    let loss: Vec<(f64, f64)> = current
        .and_then(|v| v.metrics["loss_curve"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
        .collect();
    [
        charts::accuracy_vs_labels(&by_labels),
        charts::calibration(&calibration),
        charts::loss_curve(&loss),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A reward-model version as the overview lists it.
struct ModelRow {
    version: i32,
    kind: String,
    current: bool,
    accuracy: String,
    log_loss: String,
    train_pairs: i32,
    held_out_pairs: i32,
    seconds: String,
    created: String,
}

impl ModelRow {
    fn from(v: crate::reward::store::ModelVersion) -> Self {
        let m = &v.metrics;
        let num = |x: &serde_json::Value, digits: usize| {
            x.as_f64()
                .map(|f| format!("{f:.digits$}"))
                .unwrap_or_else(|| "–".into())
        };
        ModelRow {
            version: v.version,
            kind: v.kind,
            current: v.current,
            accuracy: num(&m["held_out"]["accuracy"], 3),
            log_loss: num(&m["held_out"]["log_loss"], 3),
            train_pairs: v.train_pairs,
            held_out_pairs: v.held_out_pairs,
            seconds: num(&m["train_seconds"], 1),
            created: v
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

impl OverviewPage {
    async fn load(state: &AppState, s: &PageSession, access: Access) -> Result<Self, Error> {
        let can_read = access.can_read();
        let stats = match can_read {
            true => Some(projects::stats(&state.pool, access.project.id).await?),
            false => None,
        };
        let members = match access.can_manage() {
            true => projects::members(&state.pool, access.project.id).await?,
            false => vec![],
        };
        let (models, jobs, charts) = match can_read {
            true => {
                let versions =
                    crate::reward::store::versions(&state.pool, access.project.id).await?;
                let charts = model_charts(&versions);
                (
                    versions.into_iter().map(ModelRow::from).collect(),
                    crate::jobs::storage::history(&state.pool, access.project.id, 10).await?,
                    charts,
                )
            }
            false => (vec![], vec![], vec![]),
        };
        let clips: i64 =
            sqlx::query_scalar("select count(*) from project_clips where project_id = $1")
                .bind(access.project.id)
                .fetch_one(&state.pool)
                .await?;
        let c = chrome(s);
        Ok(OverviewPage {
            user: c.user,
            csrf: c.csrf,
            instructions_html: projects::render_markdown(&access.project.instructions),
            can_manage: access.can_manage(),
            can_label: access.can_label(),
            project: access.project,
            stats,
            members,
            clips,
            notice: None,
            report: None,
            errors: vec![],
            invite_url: None,
            models,
            jobs,
            charts,
        })
    }
}

async fn overview(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult<OverviewPage> {
    let access = projects::access(&state.pool, s.user(), &slug).await?;
    Ok(OverviewPage::load(&state, &s, access).await?)
}

/// One form for both uploads: GIF clips (`clips` parts) and a JSONL file (`pairs` part).
/// Clips are stored first, so the same upload can carry the pairs that name them.
async fn upload(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    mut multipart: Multipart,
) -> PageResult {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    let bad = |e: axum::extract::multipart::MultipartError| Error::BadRequest {
        code: "bad_multipart",
        message: e.body_text(),
    };
    let mut csrf_ok = false;
    let mut clips = Vec::new();
    let mut pairs = None;
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(bad)?;
        match (name.as_str(), file_name) {
            ("csrf", _) => {
                csrf_ok = s
                    .check_csrf(std::str::from_utf8(&bytes).unwrap_or(""))
                    .is_ok()
            }
            ("clips", Some(f)) if !f.is_empty() => clips.push((f, bytes)),
            ("pairs", Some(f)) if !f.is_empty() => pairs = Some(bytes),
            _ => {}
        }
    }
    if !csrf_ok {
        return Err(Error::forbidden(
            "the form expired or came from another site; reload and retry",
        )
        .into());
    }
    let mut page = OverviewPage::load(&state, &s, access.clone()).await?;
    let mut stored = 0;
    for (name, bytes) in clips {
        match import::ingest_clip(
            &state.pool,
            &state.clips,
            &access,
            &name,
            bytes,
            &state.inner.clip_limits,
        )
        .await
        {
            Ok(_) => stored += 1,
            Err(e @ Error::Invalid { .. }) => {
                page.notice = Some(e.to_string());
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if stored > 0 {
        page.notice = Some(format!("{stored} clip(s) stored"));
    }
    let status = match pairs {
        Some(body) => match import::import(&state.pool, &access, &body).await {
            Ok(report) => {
                page.report = Some(report);
                StatusCode::OK
            }
            Err(Error::Import(errors)) => {
                page.errors = errors;
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Err(e) => return Err(e.into()),
        },
        None => StatusCode::OK,
    };
    // Show the counts after the import.
    page.stats = Some(projects::stats(&state.pool, access.project.id).await?);
    Ok((status, page).into_response())
}

#[derive(Deserialize)]
struct MemberForm {
    csrf: String,
    user: String,
    role: String,
}

async fn add_member(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<MemberForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    let role = MemberRole::parse(&f.role).ok_or_else(|| Error::invalid("unknown role"))?;
    projects::add_member(&state.pool, &access, f.user.trim(), role).await?;
    Ok(Redirect::to(&format!("/projects/{slug}")).into_response())
}

#[derive(Deserialize)]
struct InviteForm {
    csrf: String,
    role: String,
}

async fn invite(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Form(f): Form<InviteForm>,
) -> PageResult<OverviewPage> {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    let role = MemberRole::parse(&f.role).ok_or_else(|| Error::invalid("unknown role"))?;
    let code = projects::create_invite(&state.pool, &access, role).await?;
    let mut page = OverviewPage::load(&state, &s, access).await?;
    page.invite_url = Some(format!("{}/invite/{code}", base_url(&state, &headers)));
    Ok(page)
}

// ---- accepting an invite ----

#[derive(Template, WebTemplate)]
#[template(path = "invite.html")]
struct InvitePage {
    user: Option<String>,
    csrf: String,
    project: String,
    code: String,
    error: Option<String>,
}

async fn invite_form(State(state): State<AppState>, Path(code): Path<String>) -> PageResult {
    let project = projects::invite_project(&state.pool, &code).await?;
    let csrf = auth::new_secret();
    let cookie = format!("{LOGIN_CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict");
    let page = InvitePage {
        user: None,
        csrf,
        project: project.name,
        code,
        error: None,
    };
    Ok(([(header::SET_COOKIE, cookie)], page).into_response())
}

#[derive(Deserialize)]
struct AcceptForm {
    csrf: String,
    name: String,
    password: String,
}

async fn accept_invite(
    State(state): State<AppState>,
    Path(code): Path<String>,
    parts: Parts,
    Form(f): Form<AcceptForm>,
) -> PageResult {
    let expected = cookie(&parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_eq(expected, &f.csrf) {
        return Err(Error::forbidden("the form expired; reload it and try again").into());
    }
    match projects::accept_invite(&state.pool, &code, f.name.trim(), &f.password).await {
        Ok(user) => start_session(&state, user.id, "/").await,
        Err(e @ (Error::Invalid { .. } | Error::Conflict { .. })) => {
            let project = projects::invite_project(&state.pool, &code).await?;
            let page = InvitePage {
                user: None,
                csrf: f.csrf,
                project: project.name,
                code,
                error: Some(e.to_string()),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

// ---- the labeling page (a plain form, enhanced by static/label.js) ----

#[derive(Template, WebTemplate)]
#[template(path = "label.html")]
struct LabelPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    instructions_html: String,
    pair: Option<NextPair>,
    /// The pair as JSON, for the script (escaped into an attribute).
    pair_json: String,
    progress: Progress,
    /// 1..=strength_scale, empty without a scale.
    strength_levels: Vec<i32>,
    warning: Option<String>,
    break_message: Option<String>,
    error: Option<String>,
}

impl LabelPage {
    /// The page with the rater's next pair, or the content warning, break or
    /// "nothing left" screen in its place.
    async fn load(
        state: &AppState,
        s: &PageSession,
        access: Access,
        error: Option<String>,
    ) -> Result<Self, Error> {
        let (mut warning, mut break_message) = (None, None);
        let pair = match labeling::next(&state.pool, &access).await {
            Ok(pair) => pair,
            Err(Error::Conflict {
                code: "content_warning",
                ..
            }) => {
                warning = access.project.content_warning.clone();
                None
            }
            Err(Error::Conflict {
                code: "break_time",
                message,
            }) => {
                break_message = Some(message);
                None
            }
            Err(e) => return Err(e),
        };
        let progress = rater::progress(&state.pool, &access).await?;
        let pair_json = match &pair {
            Some(p) => serde_json::to_string(p).map_err(anyhow::Error::from)?,
            None => String::new(),
        };
        let c = chrome(s);
        Ok(LabelPage {
            user: c.user,
            csrf: c.csrf,
            instructions_html: projects::render_markdown(&access.project.instructions),
            strength_levels: (1..=access.project.strength_scale.unwrap_or(0)).collect(),
            project: access.project,
            pair,
            pair_json,
            progress,
            warning,
            break_message,
            error,
        })
    }
}

async fn label_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult<LabelPage> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_label()?;
    Ok(LabelPage::load(&state, &s, access, None).await?)
}

#[derive(Deserialize)]
struct LabelForm {
    csrf: String,
    assignment_id: uuid::Uuid,
    choice: String,
    #[serde(default)]
    rationale: Option<String>,
    #[serde(default)]
    strength: Option<String>,
}

/// The form's answer (without JavaScript).
async fn label(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<LabelForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_label()?;
    let input = JudgmentInput {
        choice: f.choice,
        strength: f.strength.as_deref().and_then(|v| v.parse().ok()),
        rationale: f.rationale.filter(|r| !r.trim().is_empty()),
        content_flag: false,
        flag_reason: None,
        duration_ms: None,
        replays: None,
        answered_before_clip_end: None,
    };
    // The assignment id doubles as the idempotency key: a resubmitted form stores nothing new.
    let key = format!("form-{}", f.assignment_id);
    match labeling::submit(&state.pool, s.user(), f.assignment_id, &input, Some(&key)).await {
        Ok(_) => Ok(Redirect::to(&format!("/projects/{slug}/label")).into_response()),
        Err(e @ (Error::Invalid { .. } | Error::Gone { .. } | Error::Conflict { .. })) => {
            let page = LabelPage::load(&state, &s, access, Some(e.to_string())).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn accept_warning(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_label()?;
    rater::accept_warning(&state.pool, &access).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/label")).into_response())
}

#[derive(Deserialize)]
struct ReportForm {
    csrf: String,
    assignment_id: uuid::Uuid,
    reason: String,
}

/// "Report and skip" without JavaScript.
async fn report(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<ReportForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_label()?;
    rater::report(&state.pool, s.user(), f.assignment_id, &f.reason).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/label")).into_response())
}

/// The lead's "Retrain now" button.
async fn train(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_manage()?;
    crate::reward::request_training(&state.pool, &access).await?;
    Ok(Redirect::to(&format!("/projects/{slug}#reward-model")).into_response())
}
