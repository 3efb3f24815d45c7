//! The API contract: the OpenAPI document is well formed (every reference resolves, every
//! operation documents its answers), and real answers — good and bad requests alike — match
//! the schema the document gives for their status.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Res, TestApp, app};

/// Every `$ref` in `v` (recursively).
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Checks `res` against what the document says `method template` answers with its status:
/// the status must be documented, unless it is an error, whose body is then checked against
/// `ErrorBody` (every route answers errors in that shape).
fn conforms(doc: &Value, method: &str, template: &str, res: &Res) {
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{method} {template} is not documented");
    let documented = &op["responses"][res.status.as_str()];
    let schema = match documented["content"]["application/json"]["schema"].clone() {
        Value::Null if documented.is_object() => return, // documented without a JSON body
        Value::Null if res.status.is_client_error() || res.status.is_server_error() => {
            json!({"$ref": "#/components/schemas/ErrorBody"})
        }
        Value::Null => panic!(
            "{method} {template} answered {} which the document does not list: {}",
            res.status,
            res.text()
        ),
        s => s,
    };
    // The schema's references point into the document's components.
    let mut root = match schema {
        Value::Object(m) => m,
        other => panic!("schema of {method} {template} is not an object: {other}"),
    };
    root.insert("components".into(), doc["components"].clone());
    let root = Value::Object(root);
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("schema of {method} {template}: {e}"));
    let body = res.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {}: the body does not match its schema: {errors:?}\n{body}",
        res.status
    );
}

async fn call(app: &TestApp, method: Method, uri: &str, token: &str, body: Option<Value>) -> Res {
    app.call(method, uri, Some(token), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_openapi_document() {
    let app = app().await;
    let doc = app.get("/api/v1/openapi.json", "").await.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    // Every reference resolves; every operation lists its answers.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
        }
    }

    let lead = app
        .project("c", json!({"overlap": 1, "train_every": 0}))
        .await;
    app.import_text_pairs("c", &lead, 5).await;
    let rater = app.annotator("c", &lead, "rater").await;
    let p = "/api/v1/projects/{slug}";
    // Good requests.
    for (method, template, uri, token, body) in [
        ("get", "/api/v1/me", "/api/v1/me", &lead, None),
        ("get", "/api/v1/projects", "/api/v1/projects", &lead, None),
        ("get", p, "/api/v1/projects/c", &lead, None),
        (
            "get",
            "/api/v1/projects/{slug}/members",
            "/api/v1/projects/c/members",
            &lead,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/stats",
            "/api/v1/projects/c/stats",
            &lead,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/progress",
            "/api/v1/projects/c/progress",
            &rater,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/models",
            "/api/v1/projects/c/models",
            &lead,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/jobs",
            "/api/v1/projects/c/jobs",
            &lead,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/leaderboard",
            "/api/v1/projects/c/leaderboard",
            &lead,
            None,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/quality",
            "/api/v1/projects/c/quality",
            &lead,
            None,
        ),
    ] {
        let res = call(
            &app,
            method.to_uppercase().parse().unwrap(),
            uri,
            token,
            body,
        )
        .await;
        assert!(
            res.status.is_success(),
            "{uri}: {} {}",
            res.status,
            res.text()
        );
        conforms(&doc, method, template, &res);
    }
    // A pair, judged.
    let res = app.get("/api/v1/projects/c/next", &rater).await;
    conforms(&doc, "get", "/api/v1/projects/{slug}/next", &res);
    let id = res.json()["assignment_id"].as_str().unwrap().to_owned();
    let judge = "/api/v1/assignments/{id}/judgment";
    let uri = format!("/api/v1/assignments/{id}/judgment");
    let res = app.post(&uri, &rater, json!({"choice": "sideways"})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    conforms(&doc, "post", judge, &res);
    let res = app.post(&uri, &rater, json!({"choice": "left"})).await;
    assert_eq!(res.status, StatusCode::CREATED);
    conforms(&doc, "post", judge, &res);
    // A pair judged and the next one taken, in one call.
    let combined = "/api/v1/projects/{slug}/next";
    let id = app.lease("c", &rater).await;
    for (choice, status) in [
        ("sideways", StatusCode::UNPROCESSABLE_ENTITY),
        ("left", StatusCode::CREATED),
    ] {
        let body = json!({"assignment_id": id, "judgment": {"choice": choice}});
        let res = app.post("/api/v1/projects/c/next", &rater, body).await;
        assert_eq!(res.status, status, "{}", res.text());
        conforms(&doc, "post", combined, &res);
    }
    // Exports: the data file (no JSON body), its card (markdown) and its manifest (JSON).
    for (template, uri) in [
        (
            "/api/v1/projects/{slug}/export",
            "/api/v1/projects/c/export?format=raw-jsonl",
        ),
        (
            "/api/v1/projects/{slug}/export/card",
            "/api/v1/projects/c/export/card?format=preferences-jsonl",
        ),
        (
            "/api/v1/projects/{slug}/export/manifest",
            "/api/v1/projects/c/export/manifest?format=preferences-jsonl&aggregation=reliability",
        ),
    ] {
        let res = app.get(uri, &lead).await;
        assert_eq!(res.status, StatusCode::OK, "{uri}: {}", res.text());
        conforms(&doc, "get", template, &res);
    }
    // Bad requests answer in the documented error shape.
    for (method, template, uri, token, body, status) in [
        (
            "get",
            "/api/v1/projects/{slug}/export/manifest",
            "/api/v1/projects/c/export/manifest?format=csv&aggregation=reliability",
            &lead,
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            p,
            "/api/v1/projects/nope",
            &lead,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "get",
            p,
            "/api/v1/projects/c",
            &"not-a-token".to_owned(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "put",
            p,
            "/api/v1/projects/c",
            &lead,
            Some(json!({"slug": "c", "name": "", "overlap": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            "/api/v1/projects/{slug}/reward",
            "/api/v1/projects/c/reward",
            &lead,
            Some(json!({"rollouts": [{"text": "x"}]})),
            StatusCode::CONFLICT,
        ),
        (
            "get",
            "/api/v1/projects/{slug}/stats",
            "/api/v1/projects/c/stats",
            &rater,
            None,
            StatusCode::FORBIDDEN,
        ),
    ] {
        let res = call(
            &app,
            method.to_uppercase().parse().unwrap(),
            uri,
            token,
            body,
        )
        .await;
        assert_eq!(res.status, status, "{uri}: {}", res.text());
        conforms(&doc, method, template, &res);
    }
    // A refused import lists its bad lines in the documented shape.
    let res = app
        .post_raw(
            "/api/v1/projects/c/import",
            &lead,
            "{\"id\": 1}\nnot json\n",
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    conforms(&doc, "post", "/api/v1/projects/{slug}/import", &res);
}
