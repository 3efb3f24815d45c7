//! GIF clips: upload, checks, content-addressed storage, import, serving.

use axum::http::{Request, StatusCode, header};
use backflip::{auth::Role, clips};
use serde_json::json;

use crate::common::{Res, TestApp, app};

pub(crate) async fn upload(app: &TestApp, token: &str, slug: &str, files: &[(&str, &[u8])]) -> Res {
    let boundary = "clipboundary";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/gif\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    app.send(
        Request::post(format!("/api/v1/projects/{slug}/clips"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body.into())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn clips_are_checked_stored_and_served_to_members_only() {
    let app = app().await;
    let lead = app
        .project("gifs", json!({"media_kind": "gif", "overlap": 1}))
        .await;
    let (a, b) = (clips::demo_clip(1, 1.0), clips::demo_clip(2, 0.0));
    let res = upload(&app, &lead, "gifs", &[("a.gif", &a), ("b.gif", &b)]).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let stored = res.json();
    assert_eq!(stored[0]["sha256"], clips::sha256_hex(&a));
    assert_eq!(stored[0]["frames"], 20);
    // Frames are kept ready for training.
    let (frames, count, side): (Vec<u8>, i32, i32) =
        sqlx::query_as("select frames, frame_count, frame_side from clip_blobs where sha256 = $1")
            .bind(clips::sha256_hex(&a))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(frames.len(), (count * side * side) as usize);

    // Bad clips: refused, nothing stored.
    let before = app.count("select count(*) from clip_blobs").await;
    for (name, bytes, needle) in [
        ("fake.gif", b"\x89PNG\r\n\x1a\n not a gif".to_vec(), "GIF"),
        ("half.gif", a[..a.len() / 2].to_vec(), ""),
        ("../escape.gif", a.clone(), "plain file name"),
    ] {
        let res = upload(&app, &lead, "gifs", &[(name, &bytes)]).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            res.text()
        );
        assert!(
            res.json()["message"].as_str().unwrap().contains(needle),
            "{}",
            res.text()
        );
    }
    assert_eq!(app.count("select count(*) from clip_blobs").await, before);

    // Import pairs naming the clips; unknown clip names are line errors.
    let lines = format!(
        "{}\n{}\n",
        json!({"id": "1", "prompt": "reach the flag", "a": {"clip": "a.gif"}, "b": {"clip": "b.gif"}}),
        json!({"id": "2", "prompt": "reach the flag", "a": {"clip": "a.gif"}, "b": {"clip": "missing.gif"}}),
    );
    let res = app
        .post_raw("/api/v1/projects/gifs/import", &lead, lines)
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.json()["errors"],
        json!([{"line": 2, "message": "clip(s) not uploaded to this project: missing.gif"}])
    );
    let line = json!({"id": "1", "prompt": "reach the flag", "a": {"clip": "a.gif"}, "b": {"clip": "b.gif"}});
    let res = app
        .post_raw("/api/v1/projects/gifs/import", &lead, format!("{line}\n"))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());

    let rater = app.annotator("gifs", &lead, "watcher").await;
    let pair = app.get("/api/v1/projects/gifs/next", &rater).await.json();
    let url = pair["left"]["clip_url"].as_str().unwrap().to_owned();
    let res = app.get(&url, &rater).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers[header::CONTENT_TYPE], "image/gif");
    assert!(res.body == a || res.body == b);
    let outsider = app.user("outsider", Role::Annotator).await;
    assert_eq!(app.get(&url, &outsider).await.status, StatusCode::NOT_FOUND);

    // A text project takes no clips.
    let text_lead = app.project("words", json!({})).await;
    let res = upload(&app, &text_lead, "words", &[("a.gif", &a)]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn oversized_clips_are_refused() {
    let app = app().await;
    let lead = app.project("big", json!({"media_kind": "gif"})).await;
    let mut state = (*app.state.inner).clone();
    state.clip_limits.max_frames = 5;
    let small = backflip::http::AppState {
        inner: std::sync::Arc::new(state),
        ..app.state.clone()
    };
    let router = backflip::http::router(small);
    let clip = clips::demo_clip(3, 0.5);
    let boundary = "b";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.gif\"\r\n\r\n").into_bytes();
    body.extend_from_slice(&clip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = Request::post("/api/v1/projects/big/clips")
        .header(header::AUTHORIZATION, format!("Bearer {lead}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(axum::body::Body::from(body))
        .unwrap();
    let res = tower::ServiceExt::oneshot(router, req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.count("select count(*) from clip_blobs").await, 0);
}
