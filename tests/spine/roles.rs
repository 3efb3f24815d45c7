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

/// Every caller but the anonymous one.
const CALLERS_WITH_ACCOUNTS: [&str; 7] = [
    "admin",
    "lead",
    "researcher",
    "annotator",
    "outside-lead",
    "outside-annotator",
    "outside-researcher",
];

/// Documented routes this matrix does not call, and where their access is tested instead.
const TESTED_ELSEWHERE: [(&str, &str, &str); 9] = [
    (
        "GET",
        "/api/v1/openapi.json",
        "public: api::health_openapi_and_error_shape",
    ),
    (
        "GET",
        "/api/v1/projects",
        "by global role, below in this test",
    ),
    (
        "POST",
        "/api/v1/projects",
        "by global role, below in this test",
    ),
    (
        "POST",
        "/api/v1/users",
        "by global role, below in this test",
    ),
    (
        "POST",
        "/api/v1/projects/{slug}/clips",
        "multipart: clips::clips_are_checked_stored_and_served_to_members_only",
    ),
    (
        "GET",
        "/api/v1/clips/{sha256}",
        "by project membership: clips::clips_are_checked_stored_and_served_to_members_only",
    ),
    (
        "POST",
        "/api/v1/assignments/{id}/judgment",
        "the assignee only: judging_is_only_for_the_assignee in this test",
    ),
    (
        "POST",
        "/api/v1/projects/{slug}/next",
        "the assignee only: judging_is_only_for_the_assignee in this test",
    ),
    (
        "POST",
        "/api/v1/assignments/{id}/report",
        "the assignee only: judging_is_only_for_the_assignee in this test",
    ),
];

struct Route {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    /// Callers allowed; all others must get `denied` (by caller).
    allowed: &'static [&'static str],
    /// Answers besides 2xx that still mean "allowed" (e.g. 409: no model yet).
    also: &'static [StatusCode],
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
            app.add_member("p", &tokens["lead"], name, m).await;
        }
    }
    let managers: &[&str] = &["admin", "lead"];
    let readers: &[&str] = &["admin", "lead", "researcher"];
    let labelers: &[&str] = &["admin", "lead", "annotator"];
    let members: &[&str] = &["admin", "lead", "researcher", "annotator"];
    let pair: uuid::Uuid = sqlx::query_scalar("select id from comparisons limit 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let gold_path: &'static str =
        Box::leak(format!("/api/v1/projects/p/pairs/{pair}/gold").into_boxed_str());
    let routes = [
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p",
            body: None,
            allowed: members,
            also: &[],
        },
        Route {
            method: Method::PUT,
            path: "/api/v1/projects/p",
            body: Some(json!({"slug": "p", "name": "P"})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/members",
            body: None,
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/members",
            body: Some(json!({"user": "spare", "role": "researcher"})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/invites",
            body: Some(json!({})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/import",
            body: Some(json!(null)),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/next",
            body: None,
            allowed: labelers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/stats",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/train",
            body: None,
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/progress",
            body: None,
            allowed: labelers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/warning",
            body: None,
            allowed: labelers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/reward",
            body: Some(json!({"rollouts": [{"text": "a"}]})),
            allowed: readers,
            also: &[StatusCode::CONFLICT],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/leaderboard",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/model.safetensors",
            body: None,
            allowed: readers,
            also: &[StatusCode::CONFLICT],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/me",
            body: None,
            allowed: &CALLERS_WITH_ACCOUNTS,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/models",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/jobs",
            body: None,
            allowed: readers,
            also: &[],
        },
        // Rater quality: leads and researchers read, leads act.
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/quality/raters/annotator",
            body: None,
            allowed: readers,
            // The annotator has not judged yet here: "rater not found" once past the check.
            also: &[StatusCode::NOT_FOUND],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/quality",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/quality/settings",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/selection",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::PUT,
            path: "/api/v1/projects/p/selection",
            body: Some(json!({"strategy": "random", "random_share": 0.3, "open_target": 200})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::PUT,
            path: "/api/v1/projects/p/quality/settings",
            body: Some(
                json!({"gold_rate": 0.0, "repeat_rate": 0.0, "reliability_weighting": false}),
            ),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::PUT,
            path: gold_path,
            body: Some(json!({"answer": null})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/gold/promote",
            body: Some(json!({"min_answers": 3})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/raters/annotator/pause",
            body: Some(json!({"paused": false})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/raters/annotator/exclusion",
            body: None,
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/raters/annotator/exclusion",
            body: Some(json!({"excluded": false})),
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export?format=preferences-jsonl",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export?format=raw-jsonl&real_identities=true",
            body: None,
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export/card?format=preferences-jsonl",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export/manifest?format=raw-jsonl",
            body: None,
            allowed: readers,
            also: &[],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/export/manifest?format=raw-jsonl&real_identities=true",
            body: None,
            allowed: managers,
            also: &[],
        },
        Route {
            method: Method::POST,
            path: "/api/v1/projects/p/exports",
            body: Some(json!({"format": "csv"})),
            allowed: readers,
            // One queued export per project: callers after the first meet the queued one.
            also: &[StatusCode::CONFLICT],
        },
        Route {
            method: Method::GET,
            path: "/api/v1/projects/p/exports/987654321/manifest.json",
            body: None,
            allowed: readers,
            // No such job: "not found" once past the access check.
            also: &[StatusCode::NOT_FOUND],
        },
    ];
    // Every documented route is in the matrix or says where its access is tested, so a new
    // route cannot be forgotten: the OpenAPI document is generated from the handlers.
    let doc = app.get("/api/v1/openapi.json", "").await.json();
    let mut documented = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            documented += 1;
            if TESTED_ELSEWHERE
                .iter()
                .any(|(m, t, _)| *m == method && t == template)
            {
                continue;
            }
            // `{slug}` is project p; other parameters match any one segment.
            let template = template.replace("{slug}", "p");
            let fits = |path: &str| {
                let path = path.split('?').next().unwrap_or(path);
                let (t, p): (Vec<&str>, Vec<&str>) =
                    (template.split('/').collect(), path.split('/').collect());
                t.len() == p.len()
                    && t.iter()
                        .zip(&p)
                        .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
            };
            assert!(
                routes
                    .iter()
                    .any(|r| r.method.as_str() == method && fits(r.path)),
                "{method} {template} is documented but not in the roles matrix: add it there \
                 (or to TESTED_ELSEWHERE, saying where its access is tested)"
            );
        }
    }
    assert!(documented >= routes.len(), "{documented} documented routes");
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
                    res.status.is_success() || route.also.contains(&res.status),
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
        let expected = if caller == "anonymous" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        let res = app
            .call(Method::POST, &uri, token, Some(json!({"choice": "left"})))
            .await;
        assert_eq!(
            res.status, expected,
            "judging someone else's pair as {caller}"
        );
        let res = app
            .call(
                Method::POST,
                "/api/v1/projects/p/next",
                token,
                Some(
                    json!({"assignment_id": pair["assignment_id"], "judgment": {"choice": "left"}}),
                ),
            )
            .await;
        assert_eq!(
            res.status, expected,
            "judging someone else's pair and asking for the next as {caller}"
        );
        let report = uri.replace("/judgment", "/report");
        let res = app
            .call(Method::POST, &report, token, Some(json!({"reason": "x"})))
            .await;
        assert_eq!(
            res.status, expected,
            "reporting someone else's pair as {caller}"
        );
    }
    let res = app
        .post(&uri, &tokens["annotator"], json!({"choice": "left"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
}
