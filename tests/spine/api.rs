//! The JSON API end to end: import → next → judgment → stats, and its errors.

use axum::http::{Method, Request, StatusCode, header};
use backflip::auth::Role;
use serde_json::{Value, json};

use crate::common::{app, text_pairs};

#[tokio::test]
async fn import_next_judgment_stats() {
    let app = app().await;
    let lead = app.project("flow", json!({"overlap": 2})).await;
    app.import_text_pairs("flow", &lead, 3).await;
    let r1 = app.annotator("flow", &lead, "r1").await;

    let res = app.get("/api/v1/projects/flow/next", &r1).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let pair = res.json();
    assert_eq!(pair["prompt"], "question 0");
    let (left, right) = (
        pair["left"]["text"].as_str().unwrap(),
        pair["right"]["text"].as_str().unwrap(),
    );
    assert_eq!(
        [left, right]
            .iter()
            .filter(|t| t.starts_with("answer A0") || t.starts_with("answer B0"))
            .count(),
        2
    );
    assert!(
        pair["left"].get("policy").is_none(),
        "policy must not reach raters"
    );
    let id = pair["assignment_id"].as_str().unwrap().to_owned();

    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r1,
            json!({"choice": "left", "duration_ms": 1234}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let j = res.json();
    // The canonical choice follows the side the rater saw.
    let expected = if left == "answer A0" { "a" } else { "b" };
    assert_eq!(j["choice"], expected);
    assert_eq!(j["displayed_choice"], "left");
    assert_eq!(j["left_is_a"], left == "answer A0");
    let stored: (String, bool, Option<i32>) =
        sqlx::query_as("select choice, left_is_a, duration_ms from judgments")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (expected.to_owned(), left == "answer A0", Some(1234))
    );

    let stats = app.get("/api/v1/projects/flow/stats", &lead).await.json();
    assert_eq!(stats["pairs"], 3);
    assert_eq!(stats["judgments"], 1);
    assert_eq!(stats["complete_pairs"], 0);
    assert_eq!(
        stats["judgments_per_rater"],
        json!([{"rater": "r1", "judgments": 1}])
    );

    // A second rater completes pair 0 (overlap 2).
    let r2 = app.annotator("flow", &lead, "r2").await;
    let pair = app.get("/api/v1/projects/flow/next", &r2).await.json();
    assert_eq!(pair["prompt"], "question 0");
    let id = pair["assignment_id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r2,
            json!({"choice": "tie"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let stats = app.get("/api/v1/projects/flow/stats", &lead).await.json();
    assert_eq!(stats["complete_pairs"], 1);
    assert_eq!(stats["judgments"], 2);
}

/// Judge everything the rater is offered; returns how many they judged.
async fn judge_all(app: &crate::common::TestApp, slug: &str, token: &str) -> usize {
    let mut n = 0;
    loop {
        let res = app
            .get(&format!("/api/v1/projects/{slug}/next"), token)
            .await;
        if res.status == StatusCode::NO_CONTENT {
            return n;
        }
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let id = res.json()["assignment_id"].as_str().unwrap().to_owned();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                token,
                json!({"choice": "right"}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        n += 1;
    }
}

#[tokio::test]
async fn nothing_left_is_204_and_a_rater_never_sees_a_pair_twice() {
    let app = app().await;
    let lead = app.project("done", json!({"overlap": 3})).await;
    app.import_text_pairs("done", &lead, 4).await;
    let r1 = app.annotator("done", &lead, "r1").await;
    assert_eq!(judge_all(&app, "done", &r1).await, 4);
    let res = app.get("/api/v1/projects/done/next", &r1).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(res.body.is_empty());
    let dup = app
        .count("select count(*) from (select 1 from judgments group by comparison_id, rater_id having count(*) > 1) d")
        .await;
    assert_eq!(dup, 0);
}

#[tokio::test]
async fn idempotent_replay_returns_the_same_judgment() {
    let app = app().await;
    let lead = app.project("idem", json!({})).await;
    app.import_text_pairs("idem", &lead, 2).await;
    let r1 = app.annotator("idem", &lead, "r1").await;
    let id = app.lease("idem", &r1).await;
    let uri = format!("/api/v1/assignments/{id}/judgment");
    let submit = |key: &'static str| {
        let req = Request::post(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {r1}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(json!({"choice": "left"}).to_string().into())
            .unwrap();
        app.send(req)
    };
    let first = submit("k-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = submit("k-1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    // Another key on a judged assignment is a conflict, not a second row.
    let other = submit("k-2").await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "already_judged");
    // The same key on another assignment is refused.
    let id2 = app.lease("idem", &r1).await;
    let req = Request::post(format!("/api/v1/assignments/{id2}/judgment"))
        .header(header::AUTHORIZATION, format!("Bearer {r1}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", "k-1")
        .body(json!({"choice": "left"}).to_string().into())
        .unwrap();
    let res = app.send(req).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.code(), "idempotency_key_reused");
    assert_eq!(app.count("select count(*) from judgments").await, 1);
}

#[tokio::test]
async fn expired_leases_return_to_the_queue_and_cannot_be_judged() {
    let app = app().await;
    let lead = app.project("lease", json!({"overlap": 1})).await;
    app.import_text_pairs("lease", &lead, 1).await;
    let r1 = app.annotator("lease", &lead, "r1").await;
    let r2 = app.annotator("lease", &lead, "r2").await;
    let id = app.lease("lease", &r1).await;
    // The only pair is leased: nothing for r2.
    assert_eq!(
        app.get("/api/v1/projects/lease/next", &r2).await.status,
        StatusCode::NO_CONTENT
    );
    // Time passes (the lease ends).
    sqlx::query("update assignments set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r1,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::GONE);
    assert_eq!(res.code(), "lease_expired");
    let res = app.get("/api/v1/projects/lease/next", &r2).await;
    assert_eq!(res.status, StatusCode::OK);
    let (judged, leased): (i32, i32) =
        sqlx::query_as("select judged_count, leased_count from pair_counts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((judged, leased), (0, 1));
    assert_eq!(
        app.count("select count(*) from assignments where state = 'expired'")
            .await,
        1
    );
    assert_eq!(app.count("select count(*) from judgments").await, 0);
}

#[tokio::test]
async fn someone_elses_assignment_is_refused() {
    let app = app().await;
    let lead = app.project("mine", json!({})).await;
    app.import_text_pairs("mine", &lead, 1).await;
    let r1 = app.annotator("mine", &lead, "r1").await;
    let r2 = app.annotator("mine", &lead, "r2").await;
    let id = app.lease("mine", &r1).await;
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r2,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.code(), "forbidden");
    let res = app
        .post(
            &format!("/api/v1/assignments/{}/judgment", uuid::Uuid::new_v4()),
            &r1,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = app
        .post(
            "/api/v1/assignments/not-a-uuid/judgment",
            &r1,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.code(), "bad_path");
    assert_eq!(app.count("select count(*) from judgments").await, 0);
}

#[tokio::test]
async fn judgments_are_checked_against_the_project_settings() {
    let app = app().await;
    let lead = app
        .project(
            "strict",
            json!({"options": ["left", "right"], "strength_scale": 3, "rationale": "required"}),
        )
        .await;
    app.import_text_pairs("strict", &lead, 1).await;
    let r1 = app.annotator("strict", &lead, "r1").await;
    let id = app.lease("strict", &r1).await;
    let uri = format!("/api/v1/assignments/{id}/judgment");
    for (body, needle) in [
        (
            json!({"choice": "tie", "rationale": "x"}),
            "choice must be one of left, right",
        ),
        (
            json!({"choice": "left", "strength": 4, "rationale": "x"}),
            "strength must be between 1 and 3",
        ),
        (json!({"choice": "left", "rationale": "  "}), "rationale"),
        (
            json!({"choice": "left", "rationale": "x", "duration_ms": -5}),
            "negative",
        ),
    ] {
        let res = app.post(&uri, &r1, body.clone()).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            res.json()["message"].as_str().unwrap().contains(needle),
            "{}",
            res.text()
        );
    }
    // Bad JSON gets our error shape too.
    let res = app.post(&uri, &r1, json!({"choise": "left"})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.code(), "invalid_json");
    let res = app
        .send(
            Request::post(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {r1}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body("{not json".into())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.code(), "bad_json");
    assert_eq!(app.count("select count(*) from judgments").await, 0);
    let res = app
        .post(&uri, &r1, json!({"choice": "right", "strength": 2, "rationale": "clearer", "content_flag": true, "flag_reason": "gore"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let j = res.json();
    assert_eq!(
        (
            j["strength"].clone(),
            j["rationale"].clone(),
            j["content_flag"].clone()
        ),
        (json!(2), json!("clearer"), json!(true))
    );
}

#[tokio::test]
async fn a_bad_import_changes_nothing_and_lists_every_bad_line() {
    let app = app().await;
    let lead = app.project("imp", json!({})).await;
    let mut body = text_pairs("x", 3);
    body.push_str("{\"prompt\": \"p\", \"a\": {\"text\": \"t\"}}\n");
    body.push_str(&text_pairs("y", 1));
    body.push_str("{\"prompt\": \"p\", \"a\": {\"clip\": \"c.gif\"}, \"b\": {\"text\": \"t\"}}\n");
    let res = app
        .post_raw("/api/v1/projects/imp/import", &lead, body)
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let err = res.json();
    assert_eq!(err["code"], "invalid_import");
    let lines: Vec<u64> = err["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6]);
    assert_eq!(app.count("select count(*) from comparisons").await, 0);
    assert_eq!(app.count("select count(*) from rollouts").await, 0);
    // Non-UTF-8 is a line error, not a crash.
    let res = app
        .post_raw("/api/v1/projects/imp/import", &lead, b"\xff\xfe\n".to_vec())
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json()["errors"][0]["line"], 1);
    // Re-importing the same ids does not duplicate.
    let good = text_pairs("x", 3);
    let res = app
        .post_raw("/api/v1/projects/imp/import", &lead, good.clone())
        .await;
    assert_eq!(
        res.json(),
        json!({"lines": 3, "imported": 3, "duplicates": 0})
    );
    let res = app
        .post_raw(
            "/api/v1/projects/imp/import",
            &lead,
            good + &text_pairs("z", 1),
        )
        .await;
    assert_eq!(
        res.json(),
        json!({"lines": 4, "imported": 1, "duplicates": 3})
    );
    assert_eq!(app.count("select count(*) from comparisons").await, 4);
    assert_eq!(app.count("select count(*) from rollouts").await, 8);
    // The project's overlap is copied to its pairs.
    assert_eq!(
        app.count("select count(*) from comparisons where overlap = 3")
            .await,
        4
    );
}

#[tokio::test]
async fn projects_are_validated_and_slugs_unique() {
    let app = app().await;
    let lead = app.user("lead", Role::Lead).await;
    let res = app
        .post(
            "/api/v1/projects",
            &lead,
            json!({"slug": "Bad Slug", "name": "x"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.json()["message"].as_str().unwrap().contains("slug"));
    let res = app
        .post(
            "/api/v1/projects",
            &lead,
            json!({"slug": "ok", "name": "x", "media_kind": "gif", "overlap": 5}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let p = res.json();
    assert_eq!(
        (p["overlap"].clone(), p["media_kind"].clone()),
        (json!(5), json!("gif"))
    );
    assert_eq!(p["options"], json!(["left", "right", "tie", "cant_tell"]));
    let res = app
        .post(
            "/api/v1/projects",
            &lead,
            json!({"slug": "ok", "name": "again"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.code(), "slug_taken");
    let res = app
        .call(
            Method::PUT,
            "/api/v1/projects/ok",
            Some(&lead),
            Some(json!({"slug": "ok", "name": "Renamed", "overlap": 2})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["name"], "Renamed");
    assert_eq!(
        res.json()["media_kind"],
        "gif",
        "media kind is fixed after creation"
    );
}

#[tokio::test]
async fn a_rater_holds_at_most_two_leases() {
    let app = app().await;
    let lead = app.project("cap", json!({})).await;
    app.import_text_pairs("cap", &lead, 5).await;
    let r1 = app.annotator("cap", &lead, "r1").await;
    let a = app.get("/api/v1/projects/cap/next", &r1).await.json();
    let b = app.get("/api/v1/projects/cap/next", &r1).await.json();
    assert_ne!(
        a["assignment_id"], b["assignment_id"],
        "one pair ahead is allowed"
    );
    let c = app.get("/api/v1/projects/cap/next", &r1).await.json();
    assert_eq!(
        c["assignment_id"], a["assignment_id"],
        "at the cap the oldest comes back"
    );
    assert_eq!(app.count("select count(*) from assignments").await, 2);
}

#[tokio::test]
async fn judgments_are_append_only() {
    let app = app().await;
    let lead = app.project("ao", json!({})).await;
    app.import_text_pairs("ao", &lead, 1).await;
    let r1 = app.annotator("ao", &lead, "r1").await;
    let id = app.lease("ao", &r1).await;
    app.post(
        &format!("/api/v1/assignments/{id}/judgment"),
        &r1,
        json!({"choice": "left"}),
    )
    .await;
    assert!(
        sqlx::query("update judgments set choice = 'b'")
            .execute(&app.pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("delete from judgments")
            .execute(&app.pool)
            .await
            .is_err()
    );
    assert_eq!(app.count("select count(*) from judgments").await, 1);
}

/// The keys that replaced the per-column references to projects (migration 15) refuse
/// what those let through: an assignment whose pair is of another project, and a
/// judgment whose pair, project or rater is not its assignment's.
#[tokio::test]
async fn keys_tie_a_judgment_to_its_assignment_and_an_assignment_to_its_project() {
    let app = app().await;
    let lead = app.project("k1", json!({})).await;
    app.project("k2", json!({})).await;
    app.import_text_pairs("k1", &lead, 2).await;
    let r1 = app.annotator("k1", &lead, "r1").await;
    app.annotator("k1", &lead, "r2").await;
    let id: uuid::Uuid = app.lease("k1", &r1).await.parse().unwrap();
    let k2 = "(select id from projects where slug = 'k2')";
    let other_rater = "(select id from users where name = 'r2')";
    let mut refused = vec![format!(
        "insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at)
         select comparison_id, {k2}, {other_rater}, true, now() from assignments where id = $1"
    )];
    // A judgment of the assignment with one of its keys changed; none changed last.
    let judgment = |comparison: &str, project: &str, rater: &str| {
        format!(
            "insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice,
                                    displayed_choice, left_is_a)
             select a.id, {comparison}, {project}, {rater}, 'a', 'left', a.left_is_a
             from assignments a where a.id = $1"
        )
    };
    let other_pair = "(select id from comparisons where id <> a.comparison_id limit 1)";
    refused.push(judgment(other_pair, "a.project_id", "a.rater_id"));
    refused.push(judgment("a.comparison_id", k2, "a.rater_id"));
    refused.push(judgment("a.comparison_id", "a.project_id", other_rater));
    for sql in refused {
        let e = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .execute(&app.pool)
            .await
            .expect_err(&sql);
        let code = e.as_database_error().and_then(|d| d.code());
        assert_eq!(
            code.as_deref(),
            Some("23503"),
            "a foreign key refuses {sql}: {e}"
        );
    }
    // The assignment's own keys are accepted, so the refusals were the keys' doing.
    sqlx::query(sqlx::AssertSqlSafe(judgment(
        "a.comparison_id",
        "a.project_id",
        "a.rater_id",
    )))
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    assert_eq!(app.count("select count(*) from assignments").await, 1);
}

#[tokio::test]
async fn health_openapi_and_error_shape() {
    let app = app().await;
    let res = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let doc: Value = res.json();
    for path in [
        "/api/v1/projects",
        "/api/v1/projects/{slug}/import",
        "/api/v1/projects/{slug}/next",
        "/api/v1/assignments/{id}/judgment",
        "/api/v1/projects/{slug}/stats",
        "/api/v1/projects/{slug}/members",
        "/api/v1/projects/{slug}/clips",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let res = app.call(Method::GET, "/api/v1/projects", None, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json(),
        json!({"code": "unauthorized", "message": "authentication required"})
    );
    let res = app
        .call(Method::GET, "/api/v1/projects", Some("wrong-token"), None)
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers["x-content-type-options"], "nosniff");
    assert!(
        res.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[tokio::test]
async fn readyz_reports_an_unreachable_database() {
    let app = app().await;
    app.pool.close().await;
    let res = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn admins_create_users_and_tokens_are_stored_hashed() {
    let app = app().await;
    let admin = app.user("root", Role::Admin).await;
    let res = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "newbie", "role": "annotator"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let token = res.json()["token"].as_str().unwrap().to_owned();
    let me = app.get("/api/v1/me", &token).await.json();
    assert_eq!(
        (me["name"].clone(), me["role"].clone()),
        (json!("newbie"), json!("annotator"))
    );
    let clear: i64 =
        sqlx::query_scalar("select count(*) from api_tokens where encode(token_hash, 'hex') = $1")
            .bind(&token)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(clear, 0, "the token itself is never stored");
    let res = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "newbie", "role": "annotator"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    let res = app
        .post(
            "/api/v1/users",
            &token,
            json!({"name": "other", "role": "admin"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

/// The unique rules the narrowed indexes of migration 16 still keep: a
/// project's pairs never share an external id (pairs without one never clash),
/// `seq` is unique within a project, and an assignment has at most one live
/// repeat.
#[tokio::test]
async fn the_narrowed_unique_indexes_keep_their_rules() {
    let app = app().await;
    let lead = app.project("uniq", json!({"overlap": 1})).await;
    app.import_text_pairs("uniq", &lead, 3).await;
    let pool = &app.pool;
    async fn refused_by(pool: &sqlx::PgPool, sql: &str) -> String {
        let e = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .expect_err(sql);
        let d = e.as_database_error().expect("a database error");
        assert_eq!(d.code().as_deref(), Some("23505"), "{sql}: {d}");
        d.constraint().unwrap_or_default().to_owned()
    }
    let clash = "update comparisons set external_id = 'p0' where external_id = 'p1'";
    assert_eq!(refused_by(pool, clash).await, "comparisons_external_idx");
    sqlx::query("update comparisons set external_id = null where external_id in ('p1', 'p2')")
        .execute(pool)
        .await
        .expect("pairs without an external id never clash");
    let same_seq = "update comparisons set seq = (select min(seq) from comparisons)
                    where seq = (select max(seq) from comparisons)";
    assert_eq!(
        refused_by(pool, same_seq).await,
        "comparisons_project_seq_idx"
    );

    let token = app.annotator("uniq", &lead, "rater").await;
    for _ in 0..3 {
        let res = app
            .judge_next("uniq", &token, json!({"choice": "left"}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select id from assignments order by created_at")
        .fetch_all(pool)
        .await
        .unwrap();
    let repeat_of = |of: uuid::Uuid, id: uuid::Uuid| {
        sqlx::query("update assignments set repeat_of = $1 where id = $2")
            .bind(of)
            .bind(id)
    };
    repeat_of(ids[0], ids[1]).execute(pool).await.unwrap();
    let second = format!(
        "update assignments set repeat_of = '{}' where id = '{}'",
        ids[0], ids[2]
    );
    assert_eq!(refused_by(pool, &second).await, "assignments_repeat_of_idx");
    // An expired repeat no longer counts.
    sqlx::query("update assignments set state = 'expired' where id = $1")
        .bind(ids[1])
        .execute(pool)
        .await
        .unwrap();
    repeat_of(ids[0], ids[2]).execute(pool).await.unwrap();
}

/// A judgment keeps the slot its lease took: it writes its assignment and its
/// own row, never the pair (migration `taken_slots`), and the pair then reads
/// as judged once, leased none, still open for the second rater of two.
#[tokio::test]
async fn a_judgment_does_not_write_its_pair() {
    let app = app().await;
    let lead = app.project("keep", json!({"overlap": 2})).await;
    app.import_text_pairs("keep", &lead, 1).await;
    let r1 = app.annotator("keep", &lead, "r1").await;
    let r2 = app.annotator("keep", &lead, "r2").await;
    let id = app.lease("keep", &r1).await;
    let version = || async {
        sqlx::query_scalar::<_, String>("select xmin::text from comparisons")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let leased = version().await;
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r1,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        version().await,
        leased,
        "the judgment left the pair's row as it was"
    );
    let counts: (i32, i32, i32, bool) = sqlx::query_as(
        "select n.taken_count, n.judged_count, n.leased_count, c.is_open
         from pair_counts n join comparisons c on c.id = n.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1, 0, true));
    assert_eq!(app.miscounted_pairs().await, 0);
    // The second slot goes to r2, and then the pair is closed.
    let res = app
        .judge_next("keep", &r2, json!({"choice": "right"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        app.count("select count(*) from pair_counts where judged_count = 2 and leased_count = 0")
            .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from comparisons where is_open")
            .await,
        0
    );
}

/// The rows the hot path writes get version-7 ids (migration
/// `time_ordered_ids`): they start with the time they were made, so new rows go
/// to the right edge of the indexes that lead with the id. Pairs and rollouts
/// made by the import (ids from Rust) and by a plain insert (the column's
/// default) alike.
#[tokio::test]
async fn new_rows_get_time_ordered_ids() {
    let app = app().await;
    let millis = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    };
    let start = millis(std::time::SystemTime::now());
    let lead = app.project("ids", json!({})).await;
    app.import_text_pairs("ids", &lead, 2).await;
    let r1 = app.annotator("ids", &lead, "r1").await;
    let res = app.judge_next("ids", &r1, json!({"choice": "left"})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    app.lease("ids", &r1).await;
    sqlx::query("insert into rollouts (project_id, body) select id, 'by default' from projects")
        .execute(&app.pool)
        .await
        .unwrap();
    // The column default rounds the time to the millisecond (a cast of
    // `extract(epoch …) * 1000` to bigint), where `millis` truncates: an id
    // made in the last half millisecond reads one later.
    let end = millis(std::time::SystemTime::now()) + 1;
    let ids: Vec<(String, uuid::Uuid)> = sqlx::query_as(
        "select 'rollout', id from rollouts union all select 'pair', id from comparisons
         union all select 'assignment', id from assignments
         union all select 'judgment', id from judgments",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // 5 rollouts, 2 pairs, 2 assignments, 1 judgment
    assert_eq!(ids.len(), 10, "{ids:?}");
    for (table, id) in &ids {
        assert_eq!(id.get_version_num(), 7, "{table} {id}");
        let (secs, nanos) = id.get_timestamp().expect("a v7 id has a time").to_unix();
        let made = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            (start..=end).contains(&made),
            "{table} {id}: made at {made}, not in {start}..={end}"
        );
    }
}

#[tokio::test]
async fn one_call_judges_a_pair_and_leases_the_next() {
    let app = app().await;
    let lead = app.project("one", json!({})).await;
    app.import_text_pairs("one", &lead, 2).await;
    let r1 = app.annotator("one", &lead, "r1").await;
    let r2 = app.annotator("one", &lead, "r2").await;
    let call_in = async |slug: &str, token: &str, key: &str, body: Value| {
        app.post_keyed(&format!("/api/v1/projects/{slug}/next"), token, key, body)
            .await
    };
    let call = async |token: &str, key: &str, body: Value| call_in("one", token, key, body).await;
    let judged = |id: &str| json!({"assignment_id": id, "judgment": {"choice": "left"}});
    let id1 = app.lease("one", &r1).await;

    // Stored, and the rater's next pair leased to them.
    let res = call(&r1, "k-1", judged(&id1)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert_eq!(body["judgment"]["assignment_id"], id1.as_str());
    assert_eq!(body["judgment"]["displayed_choice"], "left");
    assert!(body["next_error"].is_null(), "{body}");
    let id2 = body["next"]["assignment_id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id1);
    let (rater, state): (String, String) = sqlx::query_as(
        "select u.name, a.state from assignments a join users u on u.id = a.rater_id
         where a.id = $1::uuid",
    )
    .bind(&id2)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((rater.as_str(), state.as_str()), ("r1", "leased"));
    assert_eq!(app.count("select count(*) from judgments").await, 1);

    // A retry replays the judgment; nothing new is stored, and it is handed
    // the pair the first call leased.
    let again = call(&r1, "k-1", judged(&id1)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["judgment"]["id"], body["judgment"]["id"]);
    assert_eq!(again.json()["next"]["assignment_id"], id2.as_str());
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    assert_eq!(app.count("select count(*) from assignments").await, 2);

    // A judgment refused leases nothing: someone else's lease, an unknown
    // one, a lease of another project than the path's, an answer the project
    // does not take, a body without its assignment.
    let unknown = uuid::Uuid::new_v4().to_string();
    let other_lead = app.project("other", json!({})).await;
    app.import_text_pairs("other", &other_lead, 1).await;
    app.add_member("other", &other_lead, "r1", "annotator")
        .await;
    let elsewhere = app.lease("other", &r1).await;
    for (token, body, status, code) in [
        (&r2, judged(&id2), StatusCode::FORBIDDEN, "forbidden"),
        (
            &r1,
            judged(&elsewhere),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_project",
        ),
        (&r1, judged(&unknown), StatusCode::NOT_FOUND, "not_found"),
        (
            &r1,
            json!({"assignment_id": id2, "judgment": {"choice": "sideways"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            &r1,
            json!({"judgment": {"choice": "left"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
        ),
    ] {
        let res = call(token, "k-x", body.clone()).await;
        assert_eq!((res.status, res.code().as_str()), (status, code), "{body}");
    }
    assert_eq!(app.count("select count(*) from assignments").await, 3);
    assert_eq!(app.count("select count(*) from judgments").await, 1);
    // Judged in its own project, then that call replayed under this one: still
    // the wrong project, and nothing leased here.
    let res = call_in("other", &r1, "k-e", judged(&elsewhere)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let res = call(&r1, "k-e", judged(&elsewhere)).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "wrong_project")
    );
    assert_eq!(app.count("select count(*) from assignments").await, 3);
    assert_eq!(app.count("select count(*) from judgments").await, 2);

    // The last pair judged: nothing left, and no error.
    let res = call(&r1, "k-2", judged(&id2)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert!(
        body["next"].is_null() && body["next_error"].is_null(),
        "{body}"
    );
    assert_eq!(app.count("select count(*) from judgments").await, 3);

    // A paused rater's judgment is stored; why no pair came is told beside it.
    let id3 = app.lease("one", &r2).await;
    app.pause("one", &lead, "r2", true).await;
    let res = call(&r2, "k-3", judged(&id3)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let body = res.json();
    assert!(body["next"].is_null(), "{body}");
    assert_eq!(body["next_error"]["code"], "paused", "{body}");
    assert_eq!(app.count("select count(*) from judgments").await, 4);

    // An expired lease: 410, as from the judgment route, and nothing leased.
    let id4 = app.lease("one", &lead).await;
    app.expire(&id4).await;
    let assignments = app.count("select count(*) from assignments").await;
    let res = call(&lead, "k-4", judged(&id4)).await;
    assert_eq!(res.status, StatusCode::GONE, "{}", res.text());
    assert_eq!(res.code(), "lease_expired");
    assert_eq!(
        app.count("select count(*) from assignments").await,
        assignments
    );
    assert_eq!(app.count("select count(*) from judgments").await, 4);
    assert_eq!(app.miscounted_pairs().await, 0);
}

#[tokio::test]
async fn a_retried_one_call_is_handed_the_pair_its_lost_answer_leased() {
    let app = app().await;
    let lead = app.project("again", json!({})).await;
    app.import_text_pairs("again", &lead, 6).await;
    let r1 = app.annotator("again", &lead, "r1").await;
    let call = async |key: &str, id: &str| {
        let body = json!({"assignment_id": id, "judgment": {"choice": "left"}});
        let res = app
            .post_keyed("/api/v1/projects/again/next", &r1, key, body)
            .await;
        assert!(res.status.is_success(), "{}", res.text());
        res.json()
    };
    let next = |body: &Value| body["next"]["assignment_id"].as_str().unwrap().to_owned();
    // The rater holds a pair and a prefetched one; the first call's answer
    // (with the pair it leased) is lost, and the call is retried.
    let id1 = app.lease("again", &r1).await;
    let prefetched = app.lease("again", &r1).await;
    let leased = next(&call("k-1", &id1).await);
    assert_ne!(leased, prefetched);
    for _ in 0..2 {
        assert_eq!(next(&call("k-1", &id1).await), leased);
    }
    assert_eq!(app.count("select count(*) from assignments").await, 3);
    assert_eq!(app.count("select count(*) from judgments").await, 1);

    // A rater paused since is told so, as by `GET /next`, not handed the pair.
    app.pause("again", &lead, "r1", true).await;
    let body = call("k-1", &id1).await;
    assert!(body["next"].is_null(), "{body}");
    assert_eq!(body["next_error"]["code"], "paused", "{body}");
    app.pause("again", &lead, "r1", false).await;

    // Once that lease has run out, a retry leases afresh.
    app.expire(&leased).await;
    let fresh = next(&call("k-1", &id1).await);
    assert!(![&id1, &prefetched, &leased].contains(&&fresh), "{fresh}");
    assert_eq!(app.count("select count(*) from judgments").await, 1);
}

/// Every connection of ours runs without PostgreSQL's JIT compilation
/// (`db::session`), unless the URL sets `jit` itself.
#[tokio::test]
async fn connections_run_without_jit_unless_the_url_sets_it() {
    let app = app().await;
    let jit: String = sqlx::query_scalar("show jit")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jit, "off");
    let sep = if app.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20jit%3Don", app.url);
    let pool = backflip::db::pool(&url, 1).await.unwrap();
    let jit: String = sqlx::query_scalar("show jit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jit, "on", "the URL's own setting wins");
    pool.close().await;
}
