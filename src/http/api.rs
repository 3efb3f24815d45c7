//! The JSON API under `/api/v1`, described by the OpenAPI document at
//! `/api/v1/openapi.json`. Every route authenticates with a bearer token (or a
//! browser session plus `X-CSRF-Token`) and checks the caller's role itself.

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Multipart, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use uuid::Uuid;

use super::{
    AppState,
    extract::{ApiUser, Json, Path, ProjectConn},
};
use crate::{
    auth::{Credential, Role},
    error::{Error, Result},
    import::{self, ClipInfo, ImportReport},
    labeling::{self, Judgment, JudgmentInput, NextPair},
    projects::{self, Member, MemberRole, Project, ProjectSettings, ProjectSummary, Stats},
    rater::{self, Progress, ReportInput},
    users::{self, CreatedUser},
};

pub fn router(state: &AppState) -> Router<AppState> {
    let upload_limit = DefaultBodyLimit::max(state.inner.max_import_bytes);
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", post(create_user))
        .route("/api/v1/projects", get(list_projects).post(create_project))
        .route(
            "/api/v1/projects/{slug}",
            get(get_project).put(update_project),
        )
        .route(
            "/api/v1/projects/{slug}/members",
            get(list_members).post(add_member),
        )
        .route("/api/v1/projects/{slug}/invites", post(create_invite))
        .route(
            "/api/v1/projects/{slug}/clips",
            post(upload_clips).layer(upload_limit),
        )
        .route(
            "/api/v1/projects/{slug}/import",
            post(import_pairs).layer(upload_limit),
        )
        .route(
            "/api/v1/projects/{slug}/next",
            get(next_pair).post(judge_and_next),
        )
        .route("/api/v1/projects/{slug}/stats", get(stats))
        .route("/api/v1/projects/{slug}/progress", get(progress))
        .route("/api/v1/projects/{slug}/warning", post(accept_warning))
        .route("/api/v1/projects/{slug}/train", post(train))
        .route("/api/v1/projects/{slug}/models", get(models))
        .route("/api/v1/projects/{slug}/jobs", get(jobs))
        .route("/api/v1/projects/{slug}/reward", post(reward))
        .route("/api/v1/projects/{slug}/leaderboard", get(leaderboard))
        .route(
            "/api/v1/projects/{slug}/model.safetensors",
            get(model_weights),
        )
        .route("/api/v1/assignments/{id}/judgment", post(submit_judgment))
        .route("/api/v1/assignments/{id}/report", post(report_content))
        .route("/api/v1/clips/{sha256}", get(get_clip))
}

/// An error as every route reports it.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: e.g. `unauthorized`, `forbidden`, `not_found`,
    /// `invalid`, `invalid_import`, `already_judged`, `lease_expired`.
    pub code: String,
    pub message: String,
    /// For `invalid_import`: every bad line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<crate::error::LineError>>,
}

impl ErrorBody {
    /// What the response to `e` says; an internal error is logged here, and
    /// told only as "internal error".
    pub(super) fn of(e: &Error) -> ErrorBody {
        if let Error::Internal(cause) = e {
            tracing::error!(error = ?cause, "internal error");
        }
        ErrorBody {
            code: e.code().to_owned(),
            message: e.to_string(),
            errors: match e {
                Error::Import(lines) => Some(lines.clone()),
                _ => None,
            },
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Backflip API", description = "Collect human preferences for RLHF."),
    paths(
        me, create_user, list_projects, create_project, get_project, update_project,
        list_members, add_member, create_invite, upload_clips, import_pairs, next_pair,
        submit_judgment, judge_and_next, stats, get_clip, progress, accept_warning, report_content, train, models, jobs, reward, model_weights, leaderboard,
        super::export::export_api, super::export::card_api, super::export::manifest_api, super::export::queue_api, super::export::job_file_api
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> impl IntoResponse {
    axum::Json(
        ApiDoc::openapi()
            .merge_from(super::quality_api::QualityDoc::openapi())
            .merge_from(super::selection_api::SelectionDoc::openapi()),
    )
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(ApiUser(user): ApiUser) -> axum::Json<Me> {
    axum::Json(Me {
        id: user.id,
        name: user.name,
        role: user.role,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    /// For web login; without one the user has only the API token.
    pub password: Option<String>,
}

/// Create a user (admins only); the response holds their API token, shown once.
#[utoipa::path(post, path = "/api/v1/users", request_body = NewUser,
    responses((status = 201, body = CreatedUser), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, axum::Json<CreatedUser>)> {
    if !user.is_admin() {
        return Err(Error::forbidden("only admins create users"));
    }
    let created = users::create(&state.pool, &new.name, new.role, new.password.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// The projects the caller belongs to (all of them, for admins).
#[utoipa::path(get, path = "/api/v1/projects", responses((status = 200, body = [ProjectSummary])))]
async fn list_projects(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
) -> Result<axum::Json<Vec<ProjectSummary>>> {
    Ok(axum::Json(projects::list_for(&state.pool, &user).await?))
}

/// Create a project (leads and admins); the caller becomes its lead.
#[utoipa::path(post, path = "/api/v1/projects", request_body = ProjectSettings,
    responses((status = 201, body = Project), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_project(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Json(settings): Json<ProjectSettings>,
) -> Result<(StatusCode, axum::Json<Project>)> {
    let project = projects::create(&state.pool, &user, settings).await?;
    Ok((StatusCode::CREATED, axum::Json(project)))
}

/// A project's settings (any member).
#[utoipa::path(get, path = "/api/v1/projects/{slug}", responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
async fn get_project(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<Project>> {
    Ok(axum::Json(
        projects::access(&state.pool, &user, &slug).await?.project,
    ))
}

/// Change a project's settings (its leads). Slug and media kind stay as they are.
#[utoipa::path(put, path = "/api/v1/projects/{slug}", request_body = ProjectSettings,
    responses((status = 200, body = Project), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_project(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(settings): Json<ProjectSettings>,
) -> Result<axum::Json<Project>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    Ok(axum::Json(
        projects::update(&state.pool, &access, settings).await?,
    ))
}

/// The project's members and how many judgments each gave (its leads).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/members", responses((status = 200, body = [Member])))]
async fn list_members(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<Vec<Member>>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    Ok(axum::Json(
        projects::members(&state.pool, access.project.id).await?,
    ))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The user's name.
    pub user: String,
    pub role: MemberRole,
}

/// Add a user to the project, or change their role in it (its leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/members", request_body = NewMember,
    responses((status = 201, body = NewMember), (status = 404, body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(member): Json<NewMember>,
) -> Result<(StatusCode, axum::Json<NewMember>)> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    projects::add_member(&state.pool, &access, &member.user, member.role).await?;
    Ok((StatusCode::CREATED, axum::Json(member)))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewInvite {
    /// Role the invitee gets; annotator by default.
    pub role: Option<MemberRole>,
}

#[derive(Serialize, ToSchema)]
pub struct Invite {
    /// The one-time link to hand to the invitee.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Make a one-time invite link (its leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/invites", request_body = NewInvite,
    responses((status = 201, body = Invite)))]
async fn create_invite(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    headers: HeaderMap,
    Json(new): Json<NewInvite>,
) -> Result<(StatusCode, axum::Json<Invite>)> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    let role = new.role.unwrap_or(MemberRole::Annotator);
    let code = projects::create_invite(&state.pool, &access, role).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Invite {
            url: format!("{}/invite/{code}", base_url(&state, &headers)),
            expires_at: OffsetDateTime::now_utc() + projects::INVITE_TTL,
        }),
    ))
}

/// The base URL links should use: the configured public URL, else the request's host.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.inner.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// Upload GIF clips (multipart; each file part's file name is the clip's name,
/// which import lines refer to). Each clip is checked and stored content-addressed.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/clips",
    request_body(content_type = "multipart/form-data", description = "one or more GIF files"),
    responses((status = 201, body = [ClipInfo]), (status = 422, body = ErrorBody)))]
async fn upload_clips(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    mut multipart: Multipart,
) -> Result<(StatusCode, axum::Json<Vec<ClipInfo>>)> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    let mut stored = Vec::new();
    let bad = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(e.body_text()),
        _ => Error::BadRequest {
            code: "bad_multipart",
            message: e.body_text(),
        },
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let Some(name) = field.file_name().map(str::to_owned) else {
            continue;
        };
        let bytes = field.bytes().await.map_err(bad)?;
        let info = import::ingest_clip(
            &state.pool,
            &state.clips,
            &access,
            &name,
            bytes,
            &state.inner.clip_limits,
        )
        .await?;
        stored.push(info);
    }
    if stored.is_empty() {
        return Err(Error::invalid("no file parts in the upload"));
    }
    Ok((StatusCode::CREATED, axum::Json(stored)))
}

/// Import pairs: a JSONL body, one pair a line. A body with any bad line imports
/// nothing and answers 422 listing every bad line.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/import",
    request_body(content_type = "application/x-ndjson", description = "JSONL: {\"id\", \"prompt\", \"a\": {\"text\"|\"clip\", \"policy\", \"meta\"}, \"b\": {…}, \"meta\"}"),
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody)))]
async fn import_pairs(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<axum::Json<ImportReport>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    let body = body.map_err(|e| Error::TooLarge(e.body_text()))?;
    Ok(axum::Json(
        import::import(&state.pool, &access, &body).await?,
    ))
}

/// The next pair for the caller to judge: 200 with the pair, or 204 when nothing is left.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/next",
    responses((status = 200, body = NextPair), (status = 204, description = "nothing left for this rater")))]
async fn next_pair(
    State(state): State<AppState>,
    credential: Credential,
    Path(slug): Path<String>,
) -> Result<Response> {
    Ok(
        match labeling::next_by_credential(&state.pool, &state.leases, &credential, &slug).await? {
            Some(pair) => axum::Json(pair).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// Judge an assignment. With an `Idempotency-Key` header, a retry returns the
/// stored judgment (200) instead of creating another.
#[utoipa::path(post, path = "/api/v1/assignments/{id}/judgment", request_body = JudgmentInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = Judgment), (status = 200, body = Judgment, description = "replay"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn submit_judgment(
    State(state): State<AppState>,
    credential: Credential,
    path: Result<Path<Uuid>, Error>,
    headers: HeaderMap,
    body: Result<Json<JudgmentInput>, Error>,
) -> Result<(StatusCode, axum::Json<Judgment>)> {
    let id = path.map(|Path(id)| id);
    let input = body.map(|Json(input)| input);
    let (status, judgment) = judge(&state, &credential, &headers, None, id, input).await?;
    Ok((status, axum::Json(judgment)))
}

/// Store the judgment `input` of assignment `id` (of project `project`, when
/// given), or replay the one its `Idempotency-Key` stored: 201 or 200 with it.
/// A bad `id`, key or `input` is told in that order.
async fn judge(
    state: &AppState,
    credential: &Credential,
    headers: &HeaderMap,
    project: Option<&str>,
    id: Result<Uuid>,
    input: Result<JudgmentInput>,
) -> Result<(StatusCode, Judgment)> {
    // A bearer token is looked up by the judging statement itself; a session
    // (and its CSRF header) here.
    let user;
    let judge = match credential {
        Credential::Token(token) => labeling::Judge::Token(token),
        session => {
            user = session.user(&state.pool).await?;
            labeling::Judge::User(&user)
        }
    };
    let key = headers.get("idempotency-key").map(|v| {
        v.to_str().map_err(|_| Error::BadRequest {
            code: "bad_idempotency_key",
            message: "Idempotency-Key must be visible ASCII".into(),
        })
    });
    // What is wrong with the request is told once the caller is known: an
    // unknown caller hears 401 first, as from every other route.
    let (id, input, key) = match (id, input, key.transpose()) {
        (Ok(id), Ok(input), Ok(key)) => (id, input, key),
        (id, input, key) => {
            judge.user(&state.pool).await?;
            return Err(id
                .err()
                .or(key.err())
                .or(input.err())
                .expect("one of them failed"));
        }
    };
    let (judgment, created) =
        labeling::submit(&state.judgments, judge, id, project, &input, key).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, judgment))
}

/// The judgment of a pair the caller holds, sent with the ask for the next one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeAndNextInput {
    /// The assignment judged: a live lease of the caller's.
    pub assignment_id: Uuid,
    pub judgment: JudgmentInput,
}

/// The stored judgment and the caller's next pair.
#[derive(Serialize, ToSchema)]
pub struct JudgedAndNext {
    pub judgment: Judgment,
    /// The next pair of the project in the path, leased to the caller; null
    /// when nothing is left for them (`GET /next` answers 204) or when
    /// `next_error` says why none was leased. A replay is handed the first
    /// live lease the caller took in the project since the judgment (what the
    /// first call leased, unless they leased another meanwhile), if any.
    pub next: Option<NextPair>,
    /// Why no pair was leased, as `GET /next` would have answered (e.g.
    /// `paused`, `break_time`, `content_warning`, `not_found`). The judgment is
    /// stored all the same.
    pub next_error: Option<ErrorBody>,
}

/// How long [`judge_and_next`] waits for the next pair once the judgment is
/// stored; then it answers with the judgment and `next_error` `unavailable`.
const NEXT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Judge a pair and take the next one, in one call: the judgment is stored
/// exactly as `POST /assignments/{id}/judgment` stores it (same checks, same
/// errors, and then nothing is leased; an assignment of another project than
/// the path's is refused with 422 `wrong_project`), and once it is durable the caller is
/// leased the next pair of this project, as by `GET /next`. With an
/// `Idempotency-Key` header a retry replays the stored judgment (200) and is
/// handed the first live lease the caller took in this project since the
/// judgment (the pair the first call leased, unless they leased another
/// meanwhile); when there is none, or they are paused or no longer an
/// annotator there, it answers as `GET /next` would.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/next", request_body = JudgeAndNextInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    responses((status = 201, body = JudgedAndNext), (status = 200, body = JudgedAndNext, description = "replay"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn judge_and_next(
    State(state): State<AppState>,
    credential: Credential,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Result<Json<JudgeAndNextInput>, Error>,
) -> Result<(StatusCode, axum::Json<JudgedAndNext>)> {
    // A bad body is told first, as a bad path is by the judgment route (the
    // second error is never told).
    let (id, input) = match body {
        Ok(Json(b)) => (Ok(b.assignment_id), Ok(b.judgment)),
        Err(e) => (Err(e), Err(Error::invalid("no judgment"))),
    };
    let (status, judgment) = judge(&state, &credential, &headers, Some(&slug), id, input).await?;
    // The judgment is stored: whatever happens to the lease is told beside it,
    // and in time (not as the request's timeout, which would hide the judgment).
    // A replay answers the pair the first call leased while its lease lives.
    let lease = async {
        if status == StatusCode::OK
            && let Some(pair) = labeling::leased_since(&state.pool, &judgment).await?
        {
            return Ok(Some(pair));
        }
        labeling::next_by_credential(&state.pool, &state.leases, &credential, &slug).await
    };
    let (next, next_error) = match tokio::time::timeout(NEXT_WITHIN, lease).await {
        Ok(Ok(pair)) => (pair, None),
        Ok(Err(e)) => (None, Some(ErrorBody::of(&e))),
        Err(_) => (None, Some(ErrorBody::of(&Error::Unavailable))),
    };
    Ok((
        status,
        axum::Json(JudgedAndNext {
            judgment,
            next,
            next_error,
        }),
    ))
}

/// Counts: pairs, judgments, complete pairs, judgments per rater (leads and researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/stats", responses((status = 200, body = Stats)))]
async fn stats(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<Stats>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    Ok(axum::Json(
        projects::stats(&state.pool, access.project.id).await?,
    ))
}

/// A clip's GIF bytes, for members of a project that uses it.
#[utoipa::path(get, path = "/api/v1/clips/{sha256}", responses((status = 200, content_type = "image/gif"), (status = 404, body = ErrorBody)))]
async fn get_clip(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(sha256): Path<String>,
) -> Result<Response> {
    let visible: bool = sqlx::query_scalar(
        "select exists (select 1 from project_clips c
            left join project_members m on m.project_id = c.project_id and m.user_id = $2
            where c.sha256 = $1 and ($3 or m.user_id is not null))",
    )
    .bind(&sha256)
    .bind(user.id)
    .bind(user.is_admin())
    .fetch_one(&state.pool)
    .await?;
    if !visible {
        return Err(Error::NotFound("clip"));
    }
    let bytes = state.clips.get(&sha256).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            // Content-addressed: the bytes behind a URL never change.
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The caller's progress in a project: today, in total, streak, session, remaining.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/progress", responses((status = 200, body = Progress)))]
async fn progress(ProjectConn { access, mut conn }: ProjectConn) -> Result<axum::Json<Progress>> {
    let access = access.require_label()?;
    Ok(axum::Json(rater::progress(&mut conn, &access).await?))
}

/// Accept the project's content warning (needed before the first pair when it has one).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/warning", responses((status = 204)))]
async fn accept_warning(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<StatusCode> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_label()?;
    rater::accept_warning(&state.pool, &access).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct Reported {
    pub id: Uuid,
}

/// Report a pair's content and skip it: it leaves the caller's queue, and the
/// report is kept for the project's leads.
#[utoipa::path(post, path = "/api/v1/assignments/{id}/report", request_body = ReportInput,
    responses((status = 201, body = Reported), (status = 409, body = ErrorBody)))]
async fn report_content(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(id): Path<Uuid>,
    Json(input): Json<ReportInput>,
) -> Result<(StatusCode, axum::Json<Reported>)> {
    let id = rater::report(&state.pool, &user, id, &input.reason).await?;
    Ok((StatusCode::CREATED, axum::Json(Reported { id })))
}

#[derive(Serialize, ToSchema)]
pub struct TrainQueued {
    /// The queued training job (an already queued one is reused: at most one waits).
    pub job_id: i64,
}

/// Queue a training run of the project's reward model now (its leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/train", responses((status = 202, body = TrainQueued)))]
async fn train(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<(StatusCode, axum::Json<TrainQueued>)> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    let job_id = crate::reward::request_training(&state.pool, &access).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TrainQueued { job_id })))
}

/// The project's reward-model versions with their metrics, newest first (leads, researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/models", responses((status = 200, body = [crate::reward::store::ModelVersion])))]
async fn models(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<Vec<crate::reward::store::ModelVersion>>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    Ok(axum::Json(
        crate::reward::store::versions(&state.pool, access.project.id).await?,
    ))
}

/// The project's recent jobs (training runs), newest first (leads, researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/jobs", responses((status = 200, body = [crate::jobs::storage::JobRow])))]
async fn jobs(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<Vec<crate::jobs::storage::JobRow>>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    Ok(axum::Json(
        crate::jobs::storage::history(&state.pool, access.project.id, 50).await?,
    ))
}

/// Rewards from the current model: per rollout, the ensemble's mean, standard
/// deviation and members' values (leads, researchers).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/reward", request_body = crate::reward::score::ScoreRequest,
    responses((status = 200, body = crate::reward::score::ScoreResponse), (status = 409, body = ErrorBody)))]
async fn reward(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(req): Json<crate::reward::score::ScoreRequest>,
) -> Result<axum::Json<crate::reward::score::ScoreResponse>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    let res = crate::reward::score::score(
        &state.pool,
        &state.clips,
        &state.models,
        &access.project,
        req,
    )
    .await?;
    Ok(axum::Json(res))
}

/// Which version of the reward model to export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelQuery {
    version: Option<i32>,
}

/// The reward model's weights, every ensemble member in one SafeTensors file, with the
/// configuration in the header's `backflip.config` metadata (leads, researchers). The
/// current version, or `?version=N`. How to compute rewards from it:
/// `docs/reward-model-export.md`.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/model.safetensors",
    params(("version" = Option<i32>, Query, description = "a version number; default: the current one")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn model_weights(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    query: std::result::Result<
        axum::extract::Query<ModelQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    let version = query.map_err(|e| Error::invalid(e.body_text()))?.0.version;
    let export =
        crate::reward::export::export(&state.pool, &state.clips, &access.project, version).await?;
    let filename = format!(
        "attachment; filename=\"{}-reward-v{}.safetensors\"",
        access.project.slug, export.version
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        export.safetensors,
    )
        .into_response())
}

/// Policies ranked by Bradley–Terry strength from the judgments, with 95% bootstrap
/// intervals and the head-to-head win matrix (leads, researchers). Rollouts carry their
/// policy from the import (`"policy"` of each side).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/leaderboard",
    responses((status = 200, body = crate::leaderboard::Leaderboard), (status = 404, body = ErrorBody)))]
async fn leaderboard(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<crate::leaderboard::Leaderboard>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    Ok(axum::Json(
        crate::leaderboard::for_project(&state.pool, access.project.id).await?,
    ))
}
