//! Logging in and out, and accepting an invite.

use super::*;

// ---- login and logout ----

const LOGIN_CSRF_COOKIE: &str = "backflip_login_csrf";

/// The CSRF check of the forms shown before there is a session (login, invite):
/// the token in the form must match the double-submit cookie set with it.
fn check_form_cookie(parts: &Parts, sent: &str) -> Result<(), Error> {
    let expected = cookie(parts, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_eq(expected, sent) {
        return Err(Error::forbidden(
            "the form expired; reload it and try again",
        ));
    }
    Ok(())
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    user: Option<String>,
    csrf: String,
    error: Option<String>,
}

/// The login form. Its CSRF token is a double-submit cookie, as there is no session yet.
pub(super) async fn login_form() -> Response {
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
pub(super) struct LoginForm {
    name: String,
    password: String,
    csrf: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> PageResult {
    check_form_cookie(&parts, &form.csrf)?;
    let refuse = |status: StatusCode, error: String| {
        let page = LoginPage {
            user: None,
            csrf: form.csrf.clone(),
            error: Some(error),
        };
        (status, page).into_response()
    };
    match auth::login(&state.pool, &form.name, &form.password).await? {
        auth::Login::Ok(user) => start_session(&state, user.id, "/").await,
        auth::Login::Wrong => Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "wrong name or password".into(),
        )),
        auth::Login::Locked { retry_after } => {
            let mut res = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed logins for this name; try again in {} minute(s)",
                    retry_after.div_ceil(60)
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Ok(res)
        }
    }
}

pub(super) async fn start_session(state: &AppState, user_id: uuid::Uuid, to: &str) -> PageResult {
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

pub(super) async fn logout(
    State(state): State<AppState>,
    s: PageSession,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&form.csrf)?;
    auth::delete_session(&state.pool, &s.id).await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response())
}

// ---- accepting an invite ----

#[derive(Template, WebTemplate)]
#[template(path = "invite.html")]
pub(super) struct InvitePage {
    user: Option<String>,
    csrf: String,
    project: String,
    code: String,
    error: Option<String>,
}

pub(super) async fn invite_form(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> PageResult {
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
pub(super) struct AcceptForm {
    csrf: String,
    name: String,
    password: String,
}

pub(super) async fn accept_invite(
    State(state): State<AppState>,
    Path(code): Path<String>,
    parts: Parts,
    Form(f): Form<AcceptForm>,
) -> PageResult {
    check_form_cookie(&parts, &f.csrf)?;
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

// ---- changing one's password ----

#[derive(Template, WebTemplate)]
#[template(path = "password.html")]
pub(super) struct PasswordPage {
    user: Option<String>,
    csrf: String,
    error: Option<String>,
}

pub(super) async fn password_form(s: PageSession) -> PasswordPage {
    let c = chrome(&s);
    PasswordPage {
        user: c.user,
        csrf: c.csrf,
        error: None,
    }
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    csrf: String,
    current: String,
    new: String,
    confirm: String,
}

/// Sets the new password and ends every session of the user, this one included: the next
/// page is the login form.
pub(super) async fn change_password(
    State(state): State<AppState>,
    s: PageSession,
    Form(f): Form<PasswordForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let result = if f.new != f.confirm {
        Err(Error::invalid("the two new passwords differ"))
    } else {
        crate::users::change_password(&state.pool, s.user(), &f.current, &f.new).await
    };
    match result {
        Ok(()) => Ok(Redirect::to("/login").into_response()),
        Err(e @ (Error::Invalid { .. } | Error::Forbidden(_))) => {
            let c = chrome(&s);
            let status = crate::http::error::status(&e);
            let page = PasswordPage {
                user: c.user,
                csrf: c.csrf,
                error: Some(e.to_string()),
            };
            Ok((status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
