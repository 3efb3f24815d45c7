//! The policy leaderboard from judgments made through the API: ranking, intervals, the win
//! matrix, who may read it, and the page.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::app;
use crate::pages::Browser;

#[tokio::test]
async fn policies_are_ranked_by_what_raters_preferred() {
    let app = app().await;
    let lead = app
        .project("arena", json!({"overlap": 1, "train_every": 0}))
        .await;
    // Three checkpoints; every pair has two of them. Raters see only the text (the policy is
    // withheld), which names the checkpoint's quality.
    let quality = |p: &str| match p {
        "ckpt-3" => 3,
        "ckpt-2" => 2,
        _ => 1,
    };
    let policies = ["ckpt-1", "ckpt-2", "ckpt-3"];
    let lines: String = (0..60)
        .map(|i| {
            let (a, b) = (policies[i % 3], policies[(i + 1 + i / 3 % 2) % 3]);
            json!({"id": format!("m{i}"), "prompt": "Which is better?",
                "a": {"text": format!("answer of quality {}", quality(a)), "policy": a},
                "b": {"text": format!("answer of quality {}", quality(b)), "policy": b}})
            .to_string()
                + "\n"
        })
        .collect();
    let res = app
        .post_raw("/api/v1/projects/arena/import", &lead, lines)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let rater = app.annotator("arena", &lead, "fan").await;
    // Empty board before any judgment.
    let board = app
        .get("/api/v1/projects/arena/leaderboard", &lead)
        .await
        .json();
    assert_eq!(board["standings"], json!([]));
    let mut judged = 0;
    loop {
        let res = app.get("/api/v1/projects/arena/next", &rater).await;
        if res.status == StatusCode::NO_CONTENT {
            break;
        }
        let pair = res.json();
        let q = |side: &str| pair[side]["text"].as_str().unwrap().to_owned();
        // The better answer wins, except that ckpt-1 beats ckpt-2 one time in four, and a
        // few equal calls are ties.
        let choice = match (q("left"), q("right")) {
            _ if judged % 10 == 9 => "tie",
            (l, r) if judged % 4 == 0 && l.ends_with('1') && r.ends_with('2') => "left",
            (l, r) if judged % 4 == 0 && l.ends_with('2') && r.ends_with('1') => "right",
            (l, r) if l > r => "left",
            _ => "right",
        };
        let id = pair["assignment_id"].as_str().unwrap();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                &rater,
                json!({"choice": choice}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        judged += 1;
    }
    assert_eq!(judged, 60);

    let board = app
        .get("/api/v1/projects/arena/leaderboard", &lead)
        .await
        .json();
    let order: Vec<&str> = board["standings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["policy"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["ckpt-3", "ckpt-2", "ckpt-1"], "{board}");
    assert_eq!(board["judgments"], 60);
    let mut total_games = 0;
    for s in board["standings"].as_array().unwrap() {
        let (low, mid, high) = (
            s["low"].as_f64().unwrap(),
            s["strength"].as_f64().unwrap(),
            s["high"].as_f64().unwrap(),
        );
        assert!(low < high && low <= mid && mid <= high, "{s}");
        total_games += s["games"].as_u64().unwrap();
    }
    assert_eq!(total_games, 120, "each judgment counts for both policies");
    // The matrix is consistent both ways and adds up to the judgments.
    let matrix = board["matrix"].as_array().unwrap();
    let mut sum = 0;
    for h in matrix {
        let back = matrix
            .iter()
            .find(|x| x["policy"] == h["opponent"] && x["opponent"] == h["policy"])
            .unwrap();
        assert_eq!(h["wins"], back["losses"]);
        assert_eq!(h["ties"], back["ties"]);
        sum += h["wins"].as_u64().unwrap()
            + h["ties"].as_u64().unwrap()
            + h["losses"].as_u64().unwrap();
    }
    assert_eq!(sum, 120);

    // Annotators do not see it; researchers and leads do, on the page as well.
    assert_eq!(
        app.get("/api/v1/projects/arena/leaderboard", &rater)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let b = Browser::login(&app, "lead-arena", "password123").await;
    let page = b.get(&app, "/projects/arena/leaderboard").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(html.contains("ckpt-3") && html.contains("<svg"), "{html}");
    let table = &html[html.find("id=\"standings\"").unwrap()..];
    assert!(table.find("ckpt-3").unwrap() < table.find("ckpt-1").unwrap());
}
