//! The quality JSON API: every statistic of the quality pages, and the lead's actions
//! (gold answers, gold/repeat rates, pausing and excluding raters). Reading needs a project
//! lead or researcher; acting needs a lead (or an admin).

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use super::{
    AppState,
    api::ErrorBody,
    extract::{ApiUser, Json, Path},
};
use crate::{
    error::Result,
    projects,
    quality::{
        actions::{self, ExclusionPreview, ExclusionResult, QualitySettings},
        report::{ProjectQuality, RaterQuality},
        series::DayPoint,
        store::{self, Freshness},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects/{slug}/quality", get(quality))
        .route(
            "/api/v1/projects/{slug}/quality/settings",
            get(get_settings).put(put_settings),
        )
        .route(
            "/api/v1/projects/{slug}/quality/raters/{name}",
            get(rater_quality),
        )
        .route("/api/v1/projects/{slug}/pairs/{id}/gold", put(set_gold))
        .route("/api/v1/projects/{slug}/gold/promote", post(promote))
        .route("/api/v1/projects/{slug}/raters/{name}/pause", post(pause))
        .route(
            "/api/v1/projects/{slug}/raters/{name}/exclusion",
            get(preview).post(exclude),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        quality,
        get_settings,
        put_settings,
        rater_quality,
        set_gold,
        promote,
        pause,
        preview,
        exclude
    ),
    components(schemas(ErrorBody))
)]
pub struct QualityDoc;

async fn access(
    state: &AppState,
    user: &crate::auth::User,
    slug: &str,
    manage: bool,
) -> Result<projects::Access> {
    let access = projects::access(&state.pool, user, slug).await?;
    if manage {
        access.require_manage()
    } else {
        access.require_read()
    }
}

/// The report's figures with where they come from and how fresh they are.
#[derive(Serialize, ToSchema)]
pub struct QualityReport {
    /// Absent while a large project's first report is being computed (status 202).
    #[serde(flatten)]
    pub report: Option<ProjectQuality>,
    pub freshness: Freshness,
}

/// 202 Accepted while the figures are being computed, else 200.
fn status_of(f: &Freshness) -> StatusCode {
    match f.source.as_str() {
        "computing" => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    }
}

/// The project's quality report: agreement, per-rater figures with flags, rater-pair kappas,
/// split pairs and gold failures (leads and researchers), and `freshness`: a stored report
/// says its age and whether judgments or a lead's changes came after it.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/quality",
    responses((status = 200, body = QualityReport), (status = 202, body = QualityReport),
        (status = 403, body = ErrorBody)))]
async fn quality(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<impl IntoResponse> {
    let access = access(&state, &user, &slug, false).await?;
    // A `QualityReport`, as text: a stored one is composed in SQL.
    let (body, freshness) = store::report_json(&state.pool, access.project.id).await?;
    let json = [(header::CONTENT_TYPE, "application/json")];
    Ok((status_of(&freshness), json, body))
}

/// One rater's figures and their day-by-day series.
#[derive(Serialize, ToSchema)]
pub struct RaterReport {
    #[serde(flatten)]
    pub rater: Option<RaterQuality>,
    pub days: Vec<DayPoint>,
    pub freshness: Freshness,
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/quality/raters/{name}",
    responses((status = 200, body = RaterReport), (status = 202, body = RaterReport),
        (status = 404, body = ErrorBody)))]
async fn rater_quality(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, name)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<RaterReport>)> {
    let access = access(&state, &user, &slug, false).await?;
    let (found, freshness) = store::rater(&state.pool, access.project.id, &name).await?;
    let (rater, days) = found.map_or((None, vec![]), |(r, d)| (Some(r), d));
    Ok((
        status_of(&freshness),
        axum::Json(RaterReport {
            rater,
            days,
            freshness,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/quality/settings",
    responses((status = 200, body = QualitySettings)))]
async fn get_settings(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<QualitySettings>> {
    let access = access(&state, &user, &slug, false).await?;
    Ok(axum::Json(
        actions::settings(&state.pool, access.project.id).await?,
    ))
}

/// Set the gold and repeat rates and reliability weighting (leads).
#[utoipa::path(put, path = "/api/v1/projects/{slug}/quality/settings", request_body = QualitySettings,
    responses((status = 200, body = QualitySettings), (status = 422, body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(s): Json<QualitySettings>,
) -> Result<axum::Json<QualitySettings>> {
    let access = access(&state, &user, &slug, true).await?;
    actions::update_settings(&state.pool, &access, s).await?;
    Ok(axum::Json(s))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoldInput {
    /// a, b or tie; null unmarks the pair.
    pub answer: Option<String>,
}

/// Mark a pair gold with its right answer, or unmark it (leads).
#[utoipa::path(put, path = "/api/v1/projects/{slug}/pairs/{id}/gold", request_body = GoldInput,
    responses((status = 200, body = GoldInput), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_gold(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, id)): Path<(String, Uuid)>,
    Json(input): Json<GoldInput>,
) -> Result<axum::Json<GoldInput>> {
    let access = access(&state, &user, &slug, true).await?;
    actions::set_gold(&state.pool, &access, id, input.answer.as_deref()).await?;
    Ok(axum::Json(input))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteInput {
    /// Least number of agreeing answers (default 3).
    #[serde(default)]
    pub min_answers: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Promoted {
    pub promoted: u64,
}

/// Make gold of the pairs every counted rater answered the same way (leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/gold/promote", request_body = PromoteInput,
    responses((status = 200, body = Promoted)))]
async fn promote(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(input): Json<PromoteInput>,
) -> Result<axum::Json<Promoted>> {
    let access = access(&state, &user, &slug, true).await?;
    let n = input.min_answers.unwrap_or(3);
    let promoted = actions::promote_unanimous(&state.pool, &access, n).await?;
    Ok(axum::Json(Promoted { promoted }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseInput {
    pub paused: bool,
}

/// Pause a rater (no new pairs) or let them go on (leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/raters/{name}/pause", request_body = PauseInput,
    responses((status = 200, body = PauseInput), (status = 404, body = ErrorBody)))]
async fn pause(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, name)): Path<(String, String)>,
    Json(input): Json<PauseInput>,
) -> Result<axum::Json<PauseInput>> {
    let access = access(&state, &user, &slug, true).await?;
    actions::set_paused(&state.pool, &access, &name, input.paused).await?;
    Ok(axum::Json(input))
}

/// What excluding (or taking back) the rater would change in project agreement (leads).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/raters/{name}/exclusion",
    responses((status = 200, body = ExclusionPreview), (status = 404, body = ErrorBody)))]
async fn preview(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, name)): Path<(String, String)>,
) -> Result<axum::Json<ExclusionPreview>> {
    let access = access(&state, &user, &slug, true).await?;
    Ok(axum::Json(
        actions::preview_exclusion(&state.pool, &access, &name).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExcludeInput {
    pub excluded: bool,
}

/// Exclude a rater's judgments from training, export and agreement, re-queueing the pairs
/// that lose coverage; `excluded: false` takes them back (leads; audit-logged).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/raters/{name}/exclusion", request_body = ExcludeInput,
    responses((status = 200, body = ExclusionResult), (status = 404, body = ErrorBody)))]
async fn exclude(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, name)): Path<(String, String)>,
    Json(input): Json<ExcludeInput>,
) -> Result<(StatusCode, axum::Json<ExclusionResult>)> {
    let access = access(&state, &user, &slug, true).await?;
    let result = actions::set_excluded(&state.pool, &access, &name, input.excluded).await?;
    Ok((StatusCode::OK, axum::Json(result)))
}
