//! The lead pages, through real form posts with cookies and CSRF tokens.

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use backflip::auth::Role;
use serde_json::json;

use crate::common::{Res, TestApp, app};

/// A logged-in browser: its session cookie and the CSRF token its pages carry
/// (other modules' checks use it too).
#[derive(Clone)]
pub(crate) struct Browser {
    cookie: String,
    pub(crate) csrf: String,
}

fn set_cookie(res: &Res, name: &str) -> Option<String> {
    res.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 64].to_owned()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Browser {
    pub(crate) async fn login(app: &TestApp, name: &str, password: &str) -> Browser {
        let res = try_login(app, name, password).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
        let raw = res.headers[header::SET_COOKIE].to_str().unwrap();
        assert!(
            raw.contains("HttpOnly") && raw.contains("SameSite=Lax"),
            "{raw}"
        );
        let cookie = set_cookie(&res, "backflip_session").unwrap();
        let home = app
            .send(
                Request::get("/")
                    .header(header::COOKIE, &cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(home.status, StatusCode::OK);
        Browser {
            csrf: csrf_of(&home.text()),
            cookie,
        }
    }

    pub(crate) async fn get(&self, app: &TestApp, uri: &str) -> Res {
        app.send(
            Request::get(uri)
                .header(header::COOKIE, &self.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub(crate) async fn post(&self, app: &TestApp, uri: &str, fields: &[(&str, &str)]) -> Res {
        app.send(
            Request::post(uri)
                .header(header::COOKIE, &self.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(fields).into())
                .unwrap(),
        )
        .await
    }

    /// A multipart upload: (field, file name, bytes) parts plus the CSRF field.
    async fn upload(
        &self,
        app: &TestApp,
        uri: &str,
        csrf: &str,
        files: &[(&str, &str, &[u8])],
    ) -> Res {
        let boundary = "XbackflipX";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
            )
            .as_bytes(),
        );
        for (field, file, bytes) in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        app.send(
            Request::post(uri)
                .header(header::COOKIE, &self.cookie)
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body.into())
                .unwrap(),
        )
        .await
    }
}

fn settings<'a>(csrf: &'a str, slug: &'a str, name: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("slug", slug),
        ("name", name),
        ("media_kind", "text"),
        ("overlap", "2"),
        ("opt_tie", "on"),
        ("strength_scale", ""),
        ("rationale", "optional"),
        (
            "instructions",
            "# Rules\n\n<script>alert(1)</script>\n\nBe **fair**.",
        ),
        ("content_warning", ""),
        ("lease_seconds", "600"),
    ]
}

#[tokio::test]
async fn a_lead_runs_a_project_from_the_pages() {
    let app = app().await;
    app.user("boss", Role::Lead).await;
    let b = Browser::login(&app, "boss", "password123").await;

    // Create a project.
    let res = b
        .post(
            &app,
            "/projects/new",
            &settings(&b.csrf, "web", "Web project"),
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.headers[header::LOCATION], "/projects/web");
    let page = b.get(&app, "/projects/web").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("<h1>Rules</h1>") && html.contains("<strong>fair</strong>"));
    assert!(
        !html.contains("<script>alert"),
        "instructions must be sanitised"
    );
    let p: (i32, Vec<String>, String) =
        sqlx::query_as("select overlap, options, rationale from projects where slug = 'web'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        p,
        (
            2,
            vec!["left".into(), "right".into(), "tie".into()],
            "optional".into()
        )
    );

    // A bad import shows every bad line and stores nothing.
    let bad = format!("{}{{\"prompt\": 1}}\n", crate::common::text_pairs("w", 2));
    let res = b
        .upload(
            &app,
            "/projects/web/upload",
            &b.csrf,
            &[("pairs", "pairs.jsonl", bad.as_bytes())],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().contains("line 3:"), "{}", res.text());
    assert_eq!(app.count("select count(*) from comparisons").await, 0);
    // A good one reports its counts.
    let good = crate::common::text_pairs("w", 5);
    let res = b
        .upload(
            &app,
            "/projects/web/upload",
            &b.csrf,
            &[("pairs", "pairs.jsonl", good.as_bytes())],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.text().contains("Imported 5 new pair(s) from 5 line(s)"),
        "{}",
        res.text()
    );
    assert!(res.text().contains("id=\"count-pairs\">5<"));
    // Without the CSRF token, the upload is refused.
    let res = b
        .upload(
            &app,
            "/projects/web/upload",
            "forged",
            &[("pairs", "pairs.jsonl", good.as_bytes())],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    // Edit settings.
    let mut fields = settings(&b.csrf, "web", "Renamed");
    fields.retain(|(k, _)| *k != "opt_tie");
    let res = b.post(&app, "/projects/web/edit", &fields).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let (name, options): (String, Vec<String>) =
        sqlx::query_as("select name, options from projects where slug = 'web'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), options.len()), ("Renamed", 2));
    let res = b
        .post(
            &app,
            "/projects/web/edit",
            &[
                ("csrf", &b.csrf),
                ("name", "x"),
                ("overlap", "0"),
                ("rationale", "off"),
                ("lease_seconds", "600"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().contains("overlap"));

    // Members and invites.
    app.user("helper", Role::Annotator).await;
    let res = b
        .post(
            &app,
            "/projects/web/members",
            &[("csrf", &b.csrf), ("user", "helper"), ("role", "annotator")],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = b
        .post(
            &app,
            "/projects/web/members",
            &[("csrf", "nope"), ("user", "helper"), ("role", "lead")],
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::FORBIDDEN,
        "a forged form changes nothing"
    );
    let role: String = sqlx::query_scalar("select m.role from project_members m join users u on u.id = m.user_id where u.name = 'helper'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(role, "annotator");
    let res = b
        .post(
            &app,
            "/projects/web/invites",
            &[("csrf", &b.csrf), ("role", "annotator")],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let html = res.text();
    let at = html.find("id=\"invite-url\">").unwrap() + 16;
    let url = &html[at..at + html[at..].find('<').unwrap()];
    let path = &url[url.find("/invite/").unwrap()..];
    invite_flow(&app, path).await;
}

/// Opening an invite, choosing a name, labeling through the form; the link works once.
async fn invite_flow(app: &TestApp, path: &str) {
    let page = app
        .send(Request::get(path).body(Body::empty()).unwrap())
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let cookie = set_cookie(&page, "backflip_login_csrf").unwrap();
    let csrf = csrf_of(&page.text());
    let accept = |name: &'static str| {
        app.send(
            Request::post(path)
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(&[("csrf", &csrf), ("name", name), ("password", "longenough")]).into())
                .unwrap(),
        )
    };
    let res = accept("newrater").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    let session = set_cookie(&res, "backflip_session").unwrap();
    let res = accept("another").await;
    assert_eq!(res.status, StatusCode::GONE, "an invite works once");

    let b = Browser {
        cookie: session,
        csrf: String::new(),
    };
    let page = b.get(app, "/projects/web/label").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let csrf = csrf_of(&html);
    let at = html.find("name=\"assignment_id\" value=\"").unwrap() + 28;
    let assignment = &html[at..at + 36];
    let res = b
        .post(
            app,
            "/projects/web/label",
            &[
                ("csrf", &csrf),
                ("assignment_id", assignment),
                ("choice", "right"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    // Resubmitting the same form stores nothing new.
    let res = b
        .post(
            app,
            "/projects/web/label",
            &[
                ("csrf", &csrf),
                ("assignment_id", assignment),
                ("choice", "right"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let n: i64 = sqlx::query_scalar("select count(*) from judgments j join users u on u.id = j.rater_id where u.name = 'newrater'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Annotators do not manage.
    let res = b.get(app, "/projects/web/edit").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn login_logout_and_sessions() {
    let app = app().await;
    app.user("ann", Role::Annotator).await;
    // Pages need a session.
    let res = app
        .send(Request::get("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.headers[header::LOCATION], "/login");
    // Wrong password: a clear message, no session.
    let page = app
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    let login_cookie = set_cookie(&page, "backflip_login_csrf").unwrap();
    let csrf = csrf_of(&page.text());
    let res = app
        .send(
            Request::post("/login")
                .header(header::COOKIE, &login_cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(
                    form(&[
                        ("name", "ann"),
                        ("password", "wrong-password"),
                        ("csrf", &csrf),
                    ])
                    .into(),
                )
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.text().contains("wrong name or password"));
    assert!(set_cookie(&res, "backflip_session").is_none());
    // Login without the double-submit cookie is refused.
    let res = app
        .send(
            Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(
                    form(&[
                        ("name", "ann"),
                        ("password", "password123"),
                        ("csrf", &csrf),
                    ])
                    .into(),
                )
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    let b = Browser::login(&app, "ann", "password123").await;
    // The session authenticates API reads; API writes from a session need the CSRF header.
    let res = b.get(&app, "/api/v1/me").await;
    assert_eq!(res.json()["name"], "ann");
    let req = |csrf: Option<&str>| {
        let mut r = Request::post("/api/v1/projects")
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.body(Body::from(json!({"slug": "s", "name": "n"}).to_string()))
            .unwrap()
    };
    let res = app.send(req(None)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.json()["message"].as_str().unwrap().contains("CSRF"));
    let res = app.send(req(Some(&b.csrf))).await;
    assert_eq!(
        res.status,
        StatusCode::FORBIDDEN,
        "the header passes; annotators still cannot create projects"
    );
    assert!(res.json()["message"].as_str().unwrap().contains("leads"));

    // Logout needs the token, and ends the session for good.
    let res = b.post(&app, "/logout", &[("csrf", "wrong")]).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = b.post(&app, "/logout", &[("csrf", &b.csrf)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = b.get(&app, "/").await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
    assert_eq!(app.count("select count(*) from sessions").await, 0);
}

#[tokio::test]
async fn rollout_text_is_rendered_inert() {
    let app = app().await;
    let lead = app.project("xss", json!({})).await;
    let line = json!({"prompt": "<img src=x onerror=alert(1)>", "a": {"text": "<script>alert(1)</script>"}, "b": {"text": "<a href=\"javascript:alert(1)\">x</a>"}});
    let res = app
        .post_raw("/api/v1/projects/xss/import", &lead, format!("{line}\n"))
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let pw = "password123";
    let b = Browser::login(&app, "lead-xss", pw).await;
    let html = b.get(&app, "/projects/xss/label").await.text();
    let escaped = html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
        || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;");
    assert!(escaped, "{html}");
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("<a href=\"javascript"));
}

/// One login attempt through the form; the response.
async fn try_login(app: &TestApp, name: &str, password: &str) -> Res {
    let page = app
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    let cookie = set_cookie(&page, "backflip_login_csrf").unwrap();
    let csrf = csrf_of(&page.text());
    app.send(
        Request::post("/login")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("name", name), ("password", password), ("csrf", &csrf)]).into())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn failed_logins_are_limited_per_name() {
    let app = app().await;
    app.user("target", Role::Annotator).await;
    app.user("bystander", Role::Annotator).await;
    let limit = backflip::auth::LOGIN_FAILURES_ALLOWED;
    for _ in 0..limit {
        let res = try_login(&app, "target", "guess-guess").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password is refused, with a clear message and Retry-After.
    let res = try_login(&app, "target", "password123").await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text());
    assert!(res.text().contains("too many failed logins"));
    let retry: u64 = res.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    assert!(set_cookie(&res, "backflip_session").is_none());
    // Other names are not affected; unknown names count like wrong passwords.
    Browser::login(&app, "bystander", "password123").await;
    for _ in 0..limit {
        try_login(&app, "nobody-by-this-name", "x-x-x-x-x").await;
    }
    assert_eq!(
        try_login(&app, "nobody-by-this-name", "x-x-x-x-x")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Once the window has passed (moved back here), the right password works again and
    // clears the count.
    sqlx::query("update login_failures set at = at - interval '16 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    Browser::login(&app, "target", "password123").await;
    assert_eq!(
        app.count("select count(*) from login_failures where name = 'target'")
            .await,
        0
    );
}

#[tokio::test]
async fn changing_the_password_ends_every_session() {
    let app = app().await;
    app.user("mover", Role::Annotator).await;
    let laptop = Browser::login(&app, "mover", "password123").await;
    let phone = Browser::login(&app, "mover", "password123").await;
    let page = laptop.get(&app, "/account/password").await;
    assert_eq!(page.status, StatusCode::OK);
    // Wrong current password, mismatched or short new ones: refused, nothing changes.
    for (current, new, confirm, status, needle) in [
        (
            "wrong-password",
            "new-password-1",
            "new-password-1",
            StatusCode::FORBIDDEN,
            "current password is wrong",
        ),
        (
            "password123",
            "new-password-1",
            "new-password-2",
            StatusCode::UNPROCESSABLE_ENTITY,
            "differ",
        ),
        (
            "password123",
            "short",
            "short",
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least 8",
        ),
    ] {
        let res = laptop
            .post(
                &app,
                "/account/password",
                &[
                    ("csrf", &laptop.csrf),
                    ("current", current),
                    ("new", new),
                    ("confirm", confirm),
                ],
            )
            .await;
        assert_eq!(res.status, status, "{}", res.text());
        assert!(res.text().contains(needle), "{}", res.text());
    }
    assert_eq!(phone.get(&app, "/").await.status, StatusCode::OK);
    // Without the CSRF token: refused.
    let res = laptop
        .post(
            &app,
            "/account/password",
            &[
                ("csrf", "forged"),
                ("current", "password123"),
                ("new", "new-password-1"),
                ("confirm", "new-password-1"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    let res = laptop
        .post(
            &app,
            "/account/password",
            &[
                ("csrf", &laptop.csrf),
                ("current", "password123"),
                ("new", "new-password-1"),
                ("confirm", "new-password-1"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    for b in [&laptop, &phone] {
        assert_eq!(
            b.get(&app, "/").await.status,
            StatusCode::SEE_OTHER,
            "logged out everywhere"
        );
    }
    assert_eq!(
        try_login(&app, "mover", "password123").await.status,
        StatusCode::UNAUTHORIZED
    );
    Browser::login(&app, "mover", "new-password-1").await;
}

/// `next` looks its caller and the project up in one statement, and a judgment
/// through the API leaves the bearer token to the judging statement: every
/// answer must still be what separate look-ups gave, in the same order (an
/// unknown caller hears 401 before anything about the request), and an
/// unknown token must store nothing.
#[tokio::test]
async fn callers_looked_up_with_the_work_are_answered_as_before() {
    let app = app().await;
    let lead = app.project("p", json!({})).await;
    app.import_text_pairs("p", &lead, 5).await;
    let ann = app.annotator("p", &lead, "ann").await;
    let outsider = app.user("out", Role::Annotator).await;
    let unknown = "f".repeat(64);

    // `next`: unknown token 401, unknown project 404, outsider 404, member 200,
    // and the same for a browser session.
    assert_eq!(
        app.get("/api/v1/projects/p/next", &unknown).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/projects/nope/next", &unknown).await.status,
        StatusCode::UNAUTHORIZED,
        "an unknown caller learns nothing about projects"
    );
    assert_eq!(
        app.get("/api/v1/projects/nope/next", &ann).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/projects/p/next", &outsider).await.status,
        StatusCode::NOT_FOUND
    );
    let b = Browser::login(&app, "ann", "password123").await;
    let res = b.get(&app, "/api/v1/projects/p/progress").await;
    assert_eq!(res.status, StatusCode::OK, "a session reads progress");
    let res = b.get(&app, "/api/v1/projects/p/next").await;
    assert_eq!(res.status, StatusCode::OK, "a session asks for pairs");
    let by_session = res.json()["assignment_id"].as_str().unwrap().to_owned();
    let pair = app.get("/api/v1/projects/p/next", &ann).await.json();
    let id = pair["assignment_id"].as_str().unwrap().to_owned();
    assert_ne!(id, by_session);
    let uri = format!("/api/v1/assignments/{id}/judgment");

    // A judgment under an unknown token: 401 whatever else is wrong, nothing stored.
    let raw = |token: &str, uri: &str, key: Option<&str>, body: &str| {
        let mut r = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    let good = json!({"choice": "left"}).to_string();
    for (what, req) in [
        ("a good answer", raw(&unknown, &uri, Some("k1"), &good)),
        ("broken JSON", raw(&unknown, &uri, None, "{")),
        ("an empty key", raw(&unknown, &uri, Some(""), &good)),
        (
            "a bad path",
            raw(&unknown, "/api/v1/assignments/x/judgment", None, &good),
        ),
        (
            "an invalid answer",
            raw(
                &unknown,
                &uri,
                None,
                &json!({"choice": "left", "duration_ms": -1}).to_string(),
            ),
        ),
        (
            "an unknown assignment",
            raw(
                &unknown,
                &format!("/api/v1/assignments/{}/judgment", uuid::Uuid::new_v4()),
                None,
                &good,
            ),
        ),
    ] {
        let res = app.send(req).await;
        assert_eq!(
            res.status,
            StatusCode::UNAUTHORIZED,
            "unknown token with {what}"
        );
    }
    assert_eq!(app.count("select count(*) from judgments").await, 0);
    // The assignee's token stores it; a replay of its key returns it; another
    // member's token is refused (403) and the session's judgment needs its CSRF header.
    let res = app.send(raw(&ann, &uri, Some("k1"), &good)).await;
    assert_eq!(res.status, StatusCode::CREATED);
    let res = app.send(raw(&ann, &uri, Some("k1"), &good)).await;
    assert_eq!(res.status, StatusCode::OK, "a replay");
    let res = app.send(raw(&lead, &uri, None, &good)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let session_uri = format!("/api/v1/assignments/{by_session}/judgment");
    let by_cookie = |uri: &str, body: &str, csrf: Option<&str>| {
        let mut r = Request::post(uri)
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.body(Body::from(body.to_owned())).unwrap()
    };
    assert_eq!(
        app.send(by_cookie(&session_uri, &good, None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(by_cookie(&session_uri, &good, Some(&b.csrf)))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(app.count("select count(*) from judgments").await, 2);

    // Judging and taking the next pair in one call: the same rules.
    let res = b.get(&app, "/api/v1/projects/p/next").await;
    let held = res.json()["assignment_id"].as_str().unwrap().to_owned();
    let one_call = json!({"assignment_id": held, "judgment": {"choice": "left"}}).to_string();
    let res = app
        .send(raw(&unknown, "/api/v1/projects/p/next", None, "{"))
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "broken JSON, unknown token"
    );
    let uri = "/api/v1/projects/p/next";
    assert_eq!(
        app.send(by_cookie(uri, &one_call, None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.count("select count(*) from judgments").await, 2);
    let res = app.send(by_cookie(uri, &one_call, Some(&b.csrf))).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let next = res.json()["next"]["assignment_id"].clone();
    assert!(next.is_string() && next != held.as_str(), "{}", res.text());
    assert_eq!(app.count("select count(*) from judgments").await, 3);
}
