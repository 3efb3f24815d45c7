//! Simulated raters labelling over real HTTP against an in-process server.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use sqlx::PgPool;

use super::{Rater, TextTask};
use crate::clips::{ClipLimits, ClipStore};
use crate::http::{self, AppState, Settings};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What the raters answer by: the text task's word weights, or each clip's reward by sha256.
#[derive(Debug)]
pub enum Truth {
    /// Rewards computed from the shown text.
    Text(TextTask),
    /// Rewards of the generated clips, keyed by content address (the clip URL's last part).
    Gif(HashMap<String, f64>),
}

impl Truth {
    /// The true reward of one side of a `next` answer.
    fn reward(&self, shown: &Value) -> Option<f64> {
        match self {
            Truth::Text(task) => Some(task.reward(shown["text"].as_str()?)),
            Truth::Gif(rewards) => {
                let sha = shown["clip_url"].as_str()?.rsplit('/').next()?;
                rewards.get(sha).copied()
            }
        }
    }
}

/// Serves the API on 127.0.0.1:0 and has every rater `(name, profile, token, rater)` label
/// project `slug` concurrently until nothing is left; returns each rater's judgment count.
pub async fn label_all(
    pool: &PgPool,
    store: &ClipStore,
    slug: &str,
    truth: Arc<Truth>,
    raters: &[(String, &'static str, String, Rater)],
) -> anyhow::Result<Vec<usize>> {
    let state = AppState {
        pool: pool.clone(),
        clips: store.clone(),
        inner: Arc::new(Settings {
            clip_limits: ClipLimits::default(),
            public_url: None,
            max_import_bytes: 1 << 20,
        }),
        models: Default::default(),
        judgments: crate::labeling::Writer::spawn(pool.clone()),
        leases: crate::labeling::Leaser::spawn(pool.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/api/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let tasks: Vec<_> = raters
        .iter()
        .map(|(name, _, token, rater)| {
            let (client, truth, rater) = (client.clone(), truth.clone(), rater.clone());
            let (next, auth) = (
                format!("{base}/projects/{slug}/next"),
                format!("Bearer {token}"),
            );
            let (base, name) = (base.clone(), name.clone());
            tokio::spawn(async move {
                label(&client, &base, &next, &auth, &truth, rater)
                    .await
                    .with_context(|| format!("rater {name}"))
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await?);
    }
    let _ = stop.send(());
    server.await??;
    counts.into_iter().collect()
}

/// One rater's loop: GET next → POST judgment (with an Idempotency-Key) until a 204.
async fn label(
    client: &HttpClient,
    base: &str,
    next: &str,
    auth: &str,
    truth: &Truth,
    mut rater: Rater,
) -> anyhow::Result<usize> {
    let mut n = 0;
    loop {
        let req = Request::get(next)
            .header("authorization", auth)
            .body(Full::new(Bytes::new()))?;
        let (status, body) = send(client, req).await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(n);
        }
        anyhow::ensure!(
            status == StatusCode::OK,
            "next: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let pair: Value = serde_json::from_slice(&body)?;
        let (left, right) = (
            truth
                .reward(&pair["left"])
                .context("unknown left rollout")?,
            truth
                .reward(&pair["right"])
                .context("unknown right rollout")?,
        );
        let choice = rater.choose(left, right);
        let id = pair["assignment_id"].as_str().context("no assignment id")?;
        let judgment = serde_json::json!({"choice": choice.as_str(), "duration_ms": 2000});
        let req = Request::post(format!("{base}/assignments/{id}/judgment"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("sim-{id}"))
            .body(Full::new(Bytes::from(judgment.to_string())))?;
        let (status, body) = send(client, req).await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "judgment: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        n += 1;
    }
}

async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let res = client.request(req).await?;
    let status = res.status();
    Ok((status, res.into_body().collect().await?.to_bytes()))
}
