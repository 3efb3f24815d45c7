//! Pair selection settings: the project's strategy, its random share and how
//! many generated pairs are kept open. Reading needs a lead or researcher;
//! changing needs a lead (or an admin).

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{
    AppState,
    api::ErrorBody,
    extract::{ApiUser, Json, Path},
};
use crate::{
    error::Result,
    projects,
    selection::{self, SelectionSettings},
};

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/projects/{slug}/selection",
        get(get_settings).put(put_settings),
    )
}

#[derive(OpenApi)]
#[openapi(paths(get_settings, put_settings), components(schemas(ErrorBody)))]
pub struct SelectionDoc;

/// The project's pair-selection settings (leads and researchers).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/selection",
    responses((status = 200, body = SelectionSettings), (status = 403, body = ErrorBody)))]
async fn get_settings(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
) -> Result<axum::Json<SelectionSettings>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_read()?;
    Ok(axum::Json(
        selection::settings(&state.pool, access.project.id).await?,
    ))
}

/// The settings as stored, and the pairs generated to meet the new target.
#[derive(Serialize, ToSchema)]
pub struct SelectionUpdated {
    #[serde(flatten)]
    pub settings: SelectionSettings,
    pub generated: usize,
}

/// Set the strategy, random share and open-pairs target (leads); a bad value
/// answers 422 and changes nothing. Tops the queue up to the new target.
#[utoipa::path(put, path = "/api/v1/projects/{slug}/selection", request_body = SelectionSettings,
    responses((status = 200, body = SelectionUpdated), (status = 422, body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    ApiUser(user): ApiUser,
    Path(slug): Path<String>,
    Json(s): Json<SelectionSettings>,
) -> Result<axum::Json<SelectionUpdated>> {
    let access = projects::access(&state.pool, &user, &slug)
        .await?
        .require_manage()?;
    let scorer = selection::score::Scorer {
        store: &state.clips,
        cache: &state.models,
    };
    let generated = selection::update_settings(&state.pool, &access, s.clone(), scorer).await?;
    Ok(axum::Json(SelectionUpdated {
        settings: s,
        generated,
    }))
}
