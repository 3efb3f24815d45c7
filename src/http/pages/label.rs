//! The labeling page: a plain form, enhanced by `static/label.js`.

use super::*;

// ---- the labeling page (a plain form, enhanced by static/label.js) ----

#[derive(Template, WebTemplate)]
#[template(path = "label.html")]
pub(super) struct LabelPage {
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
        // One connection for the pair and the progress: each trip to the pool
        // costs a round trip when the connection is given back.
        let mut conn = state.pool.acquire().await?;
        let pair = match labeling::next(&mut conn, &access).await {
            Ok(pair) => pair,
            Err(Error::Conflict {
                code: "content_warning",
                ..
            }) => {
                warning = access.project.content_warning.clone();
                None
            }
            // A paused rater sees the message where the break message goes.
            Err(Error::Conflict {
                code: "break_time" | "paused",
                message,
            }) => {
                break_message = Some(message);
                None
            }
            Err(e) => return Err(e),
        };
        let progress = rater::progress(&mut conn, &access).await?;
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

pub(super) async fn label_page(
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
pub(super) struct LabelForm {
    csrf: String,
    assignment_id: uuid::Uuid,
    choice: String,
    #[serde(default)]
    rationale: Option<String>,
    #[serde(default)]
    strength: Option<String>,
}

/// The form's answer (without JavaScript).
pub(super) async fn label(
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
    match labeling::submit(
        &state.judgments,
        labeling::Judge::User(s.user()),
        f.assignment_id,
        Some(&slug),
        &input,
        Some(&key),
    )
    .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/projects/{slug}/label")).into_response()),
        Err(e @ (Error::Invalid { .. } | Error::Gone { .. } | Error::Conflict { .. })) => {
            let page = LabelPage::load(&state, &s, access, Some(e.to_string())).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn accept_warning(
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
pub(super) struct ReportForm {
    csrf: String,
    assignment_id: uuid::Uuid,
    reason: String,
}

/// "Report and skip" without JavaScript.
pub(super) async fn report(
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
