//! Exports over HTTP: the streaming API, export jobs and their downloads, and
//! the lead page with the form. Exports are for the project's leads, admins and
//! researchers (reading, pseudonymous); raters' login names only for leads and admins.

use askama::Template;
use askama_web::WebTemplate;
use axum::{
    Router,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    AppState,
    extract::{ApiUser, Json, PageSession, Path},
    pages::PageError,
};
use crate::{
    error::{Error, Result},
    export::{self, ExportArgs, Format},
    jobs::storage::JobRow,
    projects::{self, Access},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects/{slug}/export", get(export_api))
        .route("/api/v1/projects/{slug}/export/card", get(card_api))
        .route("/api/v1/projects/{slug}/export/manifest", get(manifest_api))
        .route(
            "/api/v1/projects/{slug}/exports",
            axum::routing::post(queue_api),
        )
        .route(
            "/api/v1/projects/{slug}/exports/{job}/{file}",
            get(job_file_api),
        )
        .route("/projects/{slug}/export", get(page).post(queue_page))
        .route(
            "/projects/{slug}/export/download",
            axum::routing::post(download_page),
        )
        .route("/projects/{slug}/exports/{job}/{file}", get(job_file_page))
}

fn bad_query(r: QueryRejection) -> Error {
    Error::BadRequest {
        code: "bad_filter",
        message: r.body_text(),
    }
}

/// The streamed export's trailer fields (sent when the client asks with `TE: trailers`).
const TRAILER_ROWS: &str = "x-backflip-export-rows";
const TRAILER_SHA256: &str = "x-backflip-export-sha256";

/// JSON in a header value: non-ASCII characters as `\uXXXX` escapes (still JSON).
fn ascii_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out += &format!("\\u{unit:04x}");
            }
        }
    }
    out
}

/// What the manifest knows before the first row: version, time, format, filters.
fn provenance(plan: &export::Plan) -> [(&'static str, String); 4] {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    [
        ("x-backflip-version", env!("CARGO_PKG_VERSION").to_owned()),
        ("x-backflip-export-created-at", now),
        (
            "x-backflip-export-format",
            plan.args.format.as_str().to_owned(),
        ),
        (
            "x-backflip-export-filters",
            ascii_json(&plan.filters_json()),
        ),
    ]
}

/// The chunks as a body that ends with the row count and the sha256 of the bytes
/// sent as trailer fields; an export that fails sends no trailers (the body errors).
fn with_trailers(
    chunks: export::stream::Chunks,
    summary: tokio::sync::oneshot::Receiver<anyhow::Result<export::stream::Summary>>,
) -> Body {
    use futures::StreamExt;
    use http_body::Frame;
    use sha2::{Digest, Sha256};
    let state = Some((chunks, Sha256::new(), summary));
    let frames = futures::stream::unfold(state, |state| async move {
        let (mut chunks, mut hash, summary) = state?;
        match chunks.next().await {
            Some(Ok(bytes)) => {
                hash.update(&bytes);
                Some((Ok(Frame::data(bytes)), Some((chunks, hash, summary))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => {
                let rows = summary.await.ok()?.ok()?.rows;
                let mut trailers = HeaderMap::new();
                trailers.insert(TRAILER_ROWS, HeaderValue::from(rows));
                let sha = hex::encode(hash.finalize());
                trailers.insert(TRAILER_SHA256, HeaderValue::from_str(&sha).ok()?);
                Some((Ok(Frame::trailers(trailers)), None))
            }
        }
    });
    Body::new(http_body_util::StreamBody::new(frames))
}

/// Check the filters, then answer with the data file streamed as it is read.
async fn stream_response(state: &AppState, access: Access, args: ExportArgs) -> Result<Response> {
    let plan = export::plan(
        &state.pool,
        access.project.clone(),
        args,
        access.can_manage(),
    )
    .await?;
    refuse_bundle(&plan)?;
    let mut conn = state.pool.acquire().await?;
    projects::audit(
        &mut conn,
        &access.user,
        access.project.id,
        "export.download",
        serde_json::json!({"format": plan.args.format.as_str(), "filters": plan.filters_json()}),
    )
    .await?;
    drop(conn);
    let format = plan.args.format;
    let provenance = provenance(&plan);
    let (chunks, summary) = export::stream::start(state.pool.clone(), std::sync::Arc::new(plan));
    let disposition = format!(
        "attachment; filename=\"{}-{}\"",
        access.project.slug,
        format.file_name()
    );
    let mut response = with_trailers(chunks, summary).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(anyhow::Error::from)?,
    );
    headers.insert(
        header::TRAILER,
        HeaderValue::from_static("x-backflip-export-rows, x-backflip-export-sha256"),
    );
    for (name, value) in provenance {
        headers.insert(
            name,
            HeaderValue::from_str(&value).map_err(anyhow::Error::from)?,
        );
    }
    Ok(response)
}

fn refuse_bundle(plan: &export::Plan) -> Result<()> {
    if plan.args.format == Format::Bundle {
        return Err(Error::BadRequest {
            code: "bad_filter",
            message: "bundles are built by an export job: POST /api/v1/projects/{slug}/exports"
                .into(),
        });
    }
    Ok(())
}

/// Export a project's judgments or preferences, streamed (leads, admins, researchers).
/// Filters are checked before anything is sent: a bad one is a 400 `bad_filter`.
/// Formats and columns: see the README, "Export formats". Bundles need a job (POST …/exports).
/// Provenance: the headers `X-Backflip-Version`, `X-Backflip-Export-Created-At`,
/// `X-Backflip-Export-Format` and `X-Backflip-Export-Filters` (JSON) come first; a client
/// that sends `TE: trailers` gets `X-Backflip-Export-Rows` and `X-Backflip-Export-Sha256`
/// (of the bytes sent) as trailer fields. The same query on `…/export/manifest` and
/// `…/export/card` gives the manifest and the dataset card.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/export", params(ExportArgs),
    responses(
        (status = 200, description = "the data file, streamed: JSONL (application/x-ndjson), CSV (text/csv) or Parquet (application/vnd.apache.parquet)",
            headers(
                ("x-backflip-version" = String, description = "Backflip's version"),
                ("x-backflip-export-created-at" = String, description = "RFC 3339 time the export started"),
                ("x-backflip-export-format" = String, description = "the format"),
                ("x-backflip-export-filters" = String, description = "the filters as applied, JSON (as the manifest's `filters`)"),
                ("trailer" = String, description = "x-backflip-export-rows, x-backflip-export-sha256: trailer fields sent after the data to clients that send `TE: trailers`"))),
        (status = 400, body = super::api::ErrorBody), (status = 403, body = super::api::ErrorBody), (status = 404, body = super::api::ErrorBody)))]
pub(super) async fn export_api(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    args: std::result::Result<Query<ExportArgs>, QueryRejection>,
) -> Result<Response> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    let Query(args) = args.map_err(bad_query)?;
    stream_response(&state, access, args).await
}

/// The manifest and card of the export a query describes: the export runs on the
/// server into a sha256, so the data file's entry matches a download of the same
/// query while no judgment in its range is added (pin `until` for that).
async fn describe(
    state: &AppState,
    user: crate::auth::User,
    slug: &str,
    args: std::result::Result<Query<ExportArgs>, QueryRejection>,
) -> Result<(export::card::Manifest, String)> {
    let access = projects::access(&state.pool, &user, slug)
        .await?
        .require_read()?;
    let Query(args) = args.map_err(bad_query)?;
    let may_identify = access.can_manage();
    let plan = export::plan(&state.pool, access.project, args, may_identify).await?;
    refuse_bundle(&plan)?;
    Ok(export::files::describe(&state.pool, std::sync::Arc::new(plan)).await?)
}

/// The dataset card (`README.md`, markdown) of the export the same query streams from
/// `…/export`: instructions, answer options, counts, agreement, aggregation and rater weights.
/// It runs the export on the server to count its rows (leads, admins, researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/export/card", params(ExportArgs),
    responses(
        (status = 200, description = "the dataset card, text/markdown"),
        (status = 400, body = super::api::ErrorBody), (status = 403, body = super::api::ErrorBody), (status = 404, body = super::api::ErrorBody)))]
pub(super) async fn card_api(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    args: std::result::Result<Query<ExportArgs>, QueryRejection>,
) -> Result<Response> {
    let (_, readme) = describe(&state, user, &slug, args).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        readme,
    )
        .into_response())
}

/// The manifest (`manifest.json`) of the export the same query streams from `…/export`:
/// format, filters, rows, pairs left out, aggregation and weights, statistics, and the
/// sha256 of the data file and of the card, computed by running the export on the server
/// (leads, admins, researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/export/manifest", params(ExportArgs),
    responses(
        (status = 200, body = export::card::Manifest),
        (status = 400, body = super::api::ErrorBody), (status = 403, body = super::api::ErrorBody), (status = 404, body = super::api::ErrorBody)))]
pub(super) async fn manifest_api(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    args: std::result::Result<Query<ExportArgs>, QueryRejection>,
) -> Result<axum::Json<export::card::Manifest>> {
    let (manifest, _) = describe(&state, user, &slug, args).await?;
    Ok(axum::Json(manifest))
}

#[derive(Serialize, ToSchema)]
pub struct ExportQueued {
    /// Follow it with GET /api/v1/projects/{slug}/jobs; when done, its files are at
    /// /api/v1/projects/{slug}/exports/{job_id}/{file}.
    pub job_id: i64,
}

/// Queue an export job (large exports, bundles); body: the same fields as the
/// streaming export's query, as JSON (leads, admins, researchers).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/exports", request_body = Object,
    responses((status = 202, body = ExportQueued), (status = 400, body = super::api::ErrorBody), (status = 409, body = super::api::ErrorBody)))]
pub(super) async fn queue_api(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(args): Json<ExportArgs>,
) -> Result<(StatusCode, axum::Json<ExportQueued>)> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    let job_id = export::job::request(&state.pool, &access, args).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(ExportQueued { job_id })))
}

async fn job_file(state: &AppState, access: &Access, job: i64, file: &str) -> Result<Response> {
    let stream = export::job::download(&state.pool, &state.clips, access, job, file).await?;
    let content_type = match file.rsplit_once('.').map(|(_, e)| e) {
        Some("jsonl") => "application/x-ndjson",
        Some("csv") => "text/csv; charset=utf-8",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("tar") => "application/x-tar",
        Some("md") => "text/markdown; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}-{job}-{file}\"",
                    access.project.slug
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A finished export job's file: its data file, `README.md` or `manifest.json`.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/exports/{job}/{file}",
    responses((status = 200, description = "the file"), (status = 404, body = super::api::ErrorBody)))]
pub(super) async fn job_file_api(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path((slug, job, file)): Path<(String, i64, String)>,
) -> Result<Response> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    job_file(&state, &access, job, &file).await
}

// ---- the page ----

struct ExportJob {
    row: JobRow,
    file: Option<String>,
    rows: Option<u64>,
    bytes: Option<u64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "export.html")]
struct ExportPage {
    user: Option<String>,
    csrf: String,
    project: projects::Project,
    can_manage: bool,
    jobs: Vec<ExportJob>,
    running: bool,
    notice: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> Result<ExportPage, PageError> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    Ok(load_page(&state, &s, access, None).await?)
}

async fn load_page(
    state: &AppState,
    s: &PageSession,
    access: Access,
    notice: Option<String>,
) -> Result<ExportPage> {
    let history = crate::jobs::storage::history(&state.pool, access.project.id, 50).await?;
    let results: Vec<(i64, Option<serde_json::Value>)> = sqlx::query_as(
        "select id, result from jobs where project_id = $1 and kind = 'export'
         order by created_at desc, id desc limit 20",
    )
    .bind(access.project.id)
    .fetch_all(&state.pool)
    .await?;
    let jobs: Vec<ExportJob> = history
        .into_iter()
        .filter(|j| j.kind == export::job::KIND)
        .map(|row| {
            let result = results
                .iter()
                .find(|(id, _)| *id == row.id)
                .and_then(|(_, r)| r.clone());
            ExportJob {
                file: result
                    .as_ref()
                    .and_then(|r| r["file"].as_str().map(str::to_owned)),
                rows: result.as_ref().and_then(|r| r["rows"].as_u64()),
                bytes: row.progress.as_ref().and_then(|p| p["bytes"].as_u64()),
                row,
            }
        })
        .collect();
    Ok(ExportPage {
        user: Some(s.user().name.clone()),
        csrf: s.session.csrf.clone(),
        running: jobs
            .iter()
            .any(|j| matches!(j.row.status.as_str(), "queued" | "running")),
        can_manage: access.can_manage(),
        project: access.project,
        jobs,
        notice,
    })
}

/// The form posts the export's query fields plus `csrf` (hex); check the token
/// and parse the rest exactly like the API's query string.
fn form_args(s: &PageSession, body: &str) -> Result<ExportArgs> {
    let (csrf, fields): (Vec<&str>, Vec<&str>) = body
        .split('&')
        .filter(|kv| !kv.is_empty())
        .partition(|kv| kv.starts_with("csrf="));
    s.check_csrf(csrf.first().map_or("", |kv| &kv[5..]))?;
    let uri: axum::http::Uri = format!("/?{}", fields.join("&"))
        .parse()
        .map_err(|_| Error::invalid("malformed form"))?;
    let Query(args) = Query::<ExportArgs>::try_from_uri(&uri).map_err(bad_query)?;
    Ok(args)
}

/// The form's "Download now" button: the same stream as the API, with the session.
async fn download_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    body: String,
) -> Result<Response, PageError> {
    let (access, args) = form_request(&state, &s, &slug, &body).await?;
    Ok(stream_response(&state, access, args).await?)
}

/// The form's "Run as a job" button.
async fn queue_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    body: String,
) -> Result<Response, PageError> {
    let (access, args) = form_request(&state, &s, &slug, &body).await?;
    export::job::request(&state.pool, &access, args).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/export#export-jobs")).into_response())
}

async fn form_request(
    state: &AppState,
    s: &PageSession,
    slug: &str,
    body: &str,
) -> Result<(Access, ExportArgs)> {
    let args = form_args(s, body)?;
    let access = projects::access(&state.pool, s.user(), slug)
        .await?
        .require_read()?;
    Ok((access, args))
}

async fn job_file_page(
    State(state): State<AppState>,
    s: PageSession,
    Path((slug, job, file)): Path<(String, i64, String)>,
) -> Result<Response, PageError> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    Ok(job_file(&state, &access, job, &file).await?)
}
