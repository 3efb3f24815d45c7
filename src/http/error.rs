//! How an [`Error`] looks to an API client: a status and `{"code", "message"}`
//! (plus `errors` for a refused import). 500s log their cause and say nothing of it.

use axum::{
    Json,
    extract::rejection::{FormRejection, JsonRejection, PathRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::api::ErrorBody;
use crate::error::Error;

pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::Unauthorized => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
        Error::Conflict { .. } => StatusCode::CONFLICT,
        Error::Gone { .. } => StatusCode::GONE,
        Error::Invalid { .. } | Error::Import(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (status(&self), Json(ErrorBody::of(&self))).into_response()
    }
}

fn bad_request(code: &'static str, message: String) -> Error {
    Error::BadRequest { code, message }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Error::Invalid {
                code: "invalid_json",
                message: e.body_text(),
            },
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(r.body_text()),
            r => bad_request("bad_json", r.body_text()),
        }
    }
}

impl From<FormRejection> for Error {
    fn from(r: FormRejection) -> Self {
        bad_request("bad_form", r.body_text())
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        bad_request("bad_path", r.body_text())
    }
}
