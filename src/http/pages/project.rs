//! The lead's project pages: create and edit, the overview with import, clips,
//! members, invites and the reward model.

use super::*;

// ---- creating and editing projects ----

#[derive(Template, WebTemplate)]
#[template(path = "project_form.html")]
pub(super) struct ProjectFormPage {
    user: Option<String>,
    csrf: String,
    editing: bool,
    f: SettingsForm,
    error: Option<String>,
}

/// The project settings form. Checkboxes arrive only when ticked, numbers as text.
#[derive(Deserialize, Default, Clone)]
pub(super) struct SettingsForm {
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

pub(super) async fn new_project_form(s: PageSession) -> ProjectFormPage {
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

pub(super) async fn new_project(
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

pub(super) async fn edit_form(
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

pub(super) async fn edit(
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
pub(super) struct OverviewPage {
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
    use crate::http::charts;
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
pub(super) struct ModelRow {
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

pub(super) async fn overview(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult<OverviewPage> {
    let access = projects::access(&state.pool, s.user(), &slug).await?;
    Ok(OverviewPage::load(&state, &s, access).await?)
}

/// One form for both uploads: GIF clips (`clips` parts) and a JSONL file (`pairs` part).
/// Clips are stored first, so the same upload can carry the pairs that name them.
pub(super) async fn upload(
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
pub(super) struct MemberForm {
    csrf: String,
    user: String,
    role: String,
}

pub(super) async fn add_member(
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
pub(super) struct InviteForm {
    csrf: String,
    role: String,
}

pub(super) async fn invite(
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

/// The lead's "Retrain now" button.
pub(super) async fn train(
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
