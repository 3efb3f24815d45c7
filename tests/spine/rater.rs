//! The rater's side through the API: content warnings, report-and-skip,
//! session caps with a break, progress, and clip-viewing fields on judgments.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::app;
use crate::pages::Browser;

#[tokio::test]
async fn a_content_warning_must_be_accepted_first() {
    let app = app().await;
    let lead = app
        .project(
            "cw",
            json!({"content_warning": "Violence in some answers."}),
        )
        .await;
    app.import_text_pairs("cw", &lead, 2).await;
    let r1 = app.annotator("cw", &lead, "r1").await;
    let res = app.get("/api/v1/projects/cw/next", &r1).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.code(), "content_warning");
    assert_eq!(app.count("select count(*) from assignments").await, 0);
    let res = app
        .post("/api/v1/projects/cw/warning", &r1, json!(null))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/projects/cw/next", &r1).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn reporting_skips_the_pair_and_frees_its_slot() {
    let app = app().await;
    let lead = app.project("rep", json!({"overlap": 1})).await;
    app.import_text_pairs("rep", &lead, 1).await;
    let r1 = app.annotator("rep", &lead, "r1").await;
    let r2 = app.annotator("rep", &lead, "r2").await;
    let id = app.lease("rep", &r1).await;
    let uri = format!("/api/v1/assignments/{id}/report");
    assert_eq!(
        app.post(&uri, &r2, json!({"reason": "x"})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&uri, &r1, json!({"reason": "  "})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let res = app
        .post(&uri, &r1, json!({"reason": "graphic violence"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        app.post(&uri, &r1, json!({"reason": "again"})).await.code(),
        "already_reported"
    );
    // Gone from r1's queue, back in r2's.
    assert_eq!(
        app.get("/api/v1/projects/rep/next", &r1).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/api/v1/projects/rep/next", &r2).await.status,
        StatusCode::OK
    );
    let reason: String = sqlx::query_scalar("select reason from content_reports")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reason, "graphic violence");
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r1,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "a reported pair cannot be judged"
    );
    assert_eq!(res.code(), "already_reported");
    assert_eq!(app.count("select count(*) from judgments").await, 0);
}

#[tokio::test]
async fn a_session_cap_asks_for_a_break() {
    let app = app().await;
    let lead = app.project("cap", json!({"session_cap_pairs": 2})).await;
    app.import_text_pairs("cap", &lead, 5).await;
    let r1 = app.annotator("cap", &lead, "r1").await;
    for _ in 0..2 {
        let res = app.judge_next("cap", &r1, json!({"choice": "left"})).await;
        assert_eq!(res.status, StatusCode::CREATED);
    }
    let res = app.get("/api/v1/projects/cap/next", &r1).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.code(), "break_time");
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap()
            .contains("2 pair(s)")
    );
    // After a break (the judgments move into the past), labeling resumes.
    sqlx::query("alter table judgments disable trigger judgments_append_only")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update judgments set created_at = created_at - interval '11 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get("/api/v1/projects/cap/next", &r1).await.status,
        StatusCode::OK
    );
}

/// Progress counts the pairs left to a rater up to a thousand and says when
/// there are more, in the API and on the labeling page, so that reading it
/// does not walk a project's every open pair.
#[tokio::test]
async fn progress_counts_the_pairs_left_up_to_a_thousand() {
    let app = app().await;
    let lead = app.project("many", json!({})).await;
    app.import_text_pairs("many", &lead, 1002).await;
    let r1 = app.annotator("many", &lead, "r1").await;
    let left = |p: serde_json::Value| (p["remaining"].clone(), p["remaining_capped"].clone());
    // Open to r1 before each lease: 1,002, 1,001, then exactly 1,000.
    for (leases, capped) in [(0, true), (1, true), (2, false)] {
        if leases > 0 {
            app.lease("many", &r1).await;
        }
        let p = app.get("/api/v1/projects/many/progress", &r1).await.json();
        assert_eq!(
            left(p),
            (json!(1000), json!(capped)),
            "{} open",
            1002 - leases
        );
    }

    // The page renders the same count (r1 holds two leases, as many as one
    // may: the page shows the older again), and "+" when there are more.
    let b = Browser::login(&app, "r1", "password123").await;
    let html = b.get(&app, "/projects/many/label").await.text();
    assert!(html.contains(r#"<b id="p-remaining">1000</b>"#), "{html}");
    app.annotator("many", &lead, "r2").await;
    let b = Browser::login(&app, "r2", "password123").await;
    let html = b.get(&app, "/projects/many/label").await.text();
    assert!(html.contains(r#"<b id="p-remaining">1000+</b>"#), "{html}");
}

#[tokio::test]
async fn progress_and_clip_viewing_fields() {
    let app = app().await;
    let lead = app.project("prog", json!({"overlap": 2})).await;
    app.import_text_pairs("prog", &lead, 4).await;
    let r1 = app.annotator("prog", &lead, "r1").await;
    let p = app.get("/api/v1/projects/prog/progress", &r1).await.json();
    assert_eq!(
        p,
        json!({"today": 0, "total": 0, "streak_days": 0, "session": 0, "remaining": 4,
               "remaining_capped": false})
    );
    let id = app.lease("prog", &r1).await;
    let body = json!({"choice": "right", "replays": 2, "answered_before_clip_end": true, "duration_ms": 900});
    let res = app
        .post(&format!("/api/v1/assignments/{id}/judgment"), &r1, body)
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    let j = res.json();
    assert_eq!(
        (j["replays"].clone(), j["answered_before_clip_end"].clone()),
        (json!(2), json!(true))
    );
    let p = app.get("/api/v1/projects/prog/progress", &r1).await.json();
    assert_eq!(
        p,
        json!({"today": 1, "total": 1, "streak_days": 1, "session": 1, "remaining": 3,
               "remaining_capped": false})
    );
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &r1,
            json!({"choice": "left", "replays": -1}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::CONFLICT,
        "already judged comes first"
    );
}
