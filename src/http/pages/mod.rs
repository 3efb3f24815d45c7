//! Server-rendered pages: login and invites (`account`), the project pages for
//! leads (`project`), and the labeling page for raters (`label`), plus what they
//! share: the error page, the layout's header and the project list.
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

mod account;
mod label;
mod leaderboard;
mod project;
mod quality;
mod quality_actions;

use account::*;
use label::*;
use leaderboard::*;
use project::*;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/account/password",
            get(password_form).post(change_password),
        )
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
        .route("/projects/{slug}/leaderboard", get(leaderboard_page))
        .route("/projects/{slug}/label", get(label_page).post(label))
        .route("/projects/{slug}/warning", post(accept_warning))
        .route("/projects/{slug}/report", post(report))
        .route("/invite/{code}", get(invite_form).post(accept_invite))
        .route("/projects/{slug}/quality", get(quality::quality_page))
        .route("/projects/{slug}/quality/errors", get(quality::errors_page))
        .route(
            "/projects/{slug}/quality/judgments",
            get(quality::judgments_page),
        )
        .route(
            "/projects/{slug}/quality/settings",
            post(quality_actions::settings),
        )
        .route(
            "/projects/{slug}/quality/promote",
            post(quality_actions::promote),
        )
        .route(
            "/projects/{slug}/quality/raters/{name}",
            get(quality::rater_page),
        )
        .route(
            "/projects/{slug}/quality/raters/{name}/{action}",
            post(quality_actions::rater_action),
        )
        .route("/projects/{slug}/pairs/{id}", get(quality::pair_page))
        .route(
            "/projects/{slug}/pairs/{id}/gold",
            post(quality_actions::gold),
        )
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

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}
