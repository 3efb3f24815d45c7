//! The roles matrix: every API route against every kind of caller.

use axum::http::{Method, StatusCode};
use backflip::auth::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, app};

/// The callers, by how they relate to project `p`.
const CALLERS: [&str; 8] = [
    "anonymous",
    "admin",
    "lead",
    "researcher",
    "annotator",
    "outside-lead",
    "outside-annotator",
    "outside-researcher",
];

struct Route {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    /// Callers allowed; all others must get `denied` (by caller).
    allowed: &'static [&'static str],
}

fn denied_status(caller: &str) -> StatusCode {
    match caller {
        "anonymous" => StatusCode::UNAUTHORIZED,
        // Non-members do not learn that the project exists.
        c if c.starts_with("outside") => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    }
}

#[tokio::test]
async fn every_route_checks_every_role() {
    let app = app().await;
    let mut tokens = std::collections::HashMap::new();
    tokens.insert("admin", app.user("admin", Role::Admin).await);
    app.user("spare", Role::Annotator).await;
    tokens.insert("lead", app.project("p", json!({})).await);
    app.import_text_pairs("p", &tokens["lead"], 30).await;
    for (name, role, member) in [
        ("researcher", Role::Researcher, Some("researcher")),
        ("annotator", Role::Annotator, Some("annotator")),
        ("outside-lead", Role::Lead, None),
        ("outside-annotator", Role::Annotator, None),
        ("outside-researcher", Role::Researcher, None),
    ] {
        tokens.insert(name, app.user(name, role).await);
        if let Some(m) = member {
            let res = app
                .post(
                    "/api/v1/projects/p/members",
                    &tokens["lead"],
                    json!({"user": name, "role": m}),
                )
                .await;
            assert_eq!(res.status, StatusCode::CREATED);
        }
    }
    let managers: &[&str] = &["admin", "lead"];
    let readers: &[&str] = &["admin", "lead", "researcher"];
    let labelers: &[&str] = &["admin", "lead", "annotator"];
    let members: &[&str] = &["admin", "lead", "researcher", "annotator"];
    let routes = [
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p",
            body: None,
            allowed: members,
        },
        Route {
            method: Method::PUT,
            path: "/api/v1/projects/p",
            body: Some(json!({"slug": "p", "name": "P"})),
            allowed: managers,
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/members",
            body: None,
            allowed: managers,
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/members",
            body: Some(json!({"user": "spare", "role": "researcher"})),
            allowed: managers,
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/invites",
            body: Some(json!({})),
            allowed: managers,
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/import",
            body: Some(json!(null)),
            allowed: managers,
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/next",
            body: None,
            allowed: labelers,
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/stats",
            body: None,
            allowed: readers,
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export?format=preferences-jsonl",
            body: None,
            allowed: readers,
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export?format=raw-jsonl&real_identities=true",
            body: None,
            allowed: managers,
        },
    ];
    for route in &routes {
        for caller in CALLERS {
            let token = tokens.get(caller).map(String::as_str);
            let res = match (&route.body, route.path.ends_with("/import")) {
                (_, true) => match token {
                    Some(t) => {
                        app.post_raw(route.path, t, crate::common::text_pairs(caller, 1))
                            .await
                    }
                    None => app.call(route.method.clone(), route.path, None, None).await,
                },
                (body, false) => {
                    app.call(route.method.clone(), route.path, token, body.clone())
                        .await
                }
            };
            if route.allowed.contains(&caller) {
                assert!(
                    res.status.is_success(),
                    "{} {} as {caller}: {} {}",
                    route.method,
                    route.path,
                    res.status,
                    res.text()
                );
            } else {
                assert_eq!(
                    res.status,
                    denied_status(caller),
                    "{} {} as {caller}: {}",
                    route.method,
                    route.path,
                    res.text()
                );
            }
        }
    }
    // Creating projects and users: by global role.
    for caller in CALLERS {
        let token = tokens.get(caller).map(String::as_str);
        let slug = format!("new-{caller}");
        let res = app
            .call(
                Method::POST,
                "/api/v1/projects",
                token,
                Some(json!({"slug": slug, "name": "x"})),
            )
            .await;
        let may = ["admin", "lead", "outside-lead"].contains(&caller);
        assert_eq!(
            res.status.is_success(),
            may,
            "create project as {caller}: {}",
            res.status
        );
        let res = app
            .call(
                Method::POST,
                "/api/v1/users",
                token,
                Some(json!({"name": format!("u-{caller}"), "role": "annotator"})),
            )
            .await;
        assert_eq!(
            res.status.is_success(),
            caller == "admin",
            "create user as {caller}: {}",
            res.status
        );
    }
    // Project lists: members see theirs, admins see all, outsiders see none.
    let list = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["slug"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        list(
            app.get("/api/v1/projects", &tokens["annotator"])
                .await
                .json()
        )
        .contains(&"p".to_owned())
    );
    assert!(
        !list(
            app.get("/api/v1/projects", &tokens["outside-annotator"])
                .await
                .json()
        )
        .contains(&"p".to_owned())
    );
    assert!(
        list(app.get("/api/v1/projects", &tokens["admin"]).await.json())
            .contains(&"new-lead".to_owned())
    );
    judging_is_only_for_the_assignee(&app, &tokens).await;
}

async fn judging_is_only_for_the_assignee(
    app: &TestApp,
    tokens: &std::collections::HashMap<&str, String>,
) {
    let pair = app
        .get("/api/v1/projects/p/next", &tokens["annotator"])
        .await
        .json();
    let uri = format!(
        "/api/v1/assignments/{}/judgment",
        pair["assignment_id"].as_str().unwrap()
    );
    for caller in CALLERS {
        if caller == "annotator" {
            continue;
        }
        let token = tokens.get(caller).map(String::as_str);
        let res = app
            .call(Method::POST, &uri, token, Some(json!({"choice": "left"})))
            .await;
        let expected = if caller == "anonymous" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(
            res.status, expected,
            "judging someone else's pair as {caller}"
        );
    }
    let res = app
        .post(&uri, &tokens["annotator"], json!({"choice": "left"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
}
