//! The benchmarks' harness: the service in this process on a random port, and
//! simulated raters that loop `next` → `judgment` over real HTTP (two calls, or
//! one that does both).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sqlx::PgPool;

use crate::{
    clips::{ClipLimits, ClipStore},
    http,
};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[derive(Default)]
pub(crate) struct LevelResult {
    pub judgments: usize,
    pub errors: usize,
    /// `GET /next` answers of 204: nothing left (also counted in `errors`).
    pub nothing_left: usize,
    pub elapsed: f64,
    pub next: Vec<f64>,
    pub submit: Vec<f64>,
    pub both: Vec<f64>,
}

impl LevelResult {
    /// Judgments per second.
    pub fn rate(&self) -> f64 {
        self.judgments as f64 / self.elapsed
    }

    /// p50/p95/p99 of `next`, the same of the judgment, and p50/p99 of both, in ms.
    pub fn latencies(&self) -> [String; 3] {
        let mut both = self.both.clone();
        [
            super::triple(&mut self.next.clone()),
            super::triple(&mut self.submit.clone()),
            format!(
                "{:.1}/{:.1}",
                super::pct(&mut both, 0.5),
                super::pct(&mut both, 0.99)
            ),
        ]
    }
}

/// The service in this process on a random port (project `bench`), and a
/// keep-alive HTTP client for simulated raters.
pub(crate) struct Harness {
    base: String,
    client: HttpClient,
    pub dir: std::path::PathBuf,
    /// The server's judgment writer, for its counts.
    pub judgments: crate::labeling::Writer,
    /// The server's leaser, for its counts.
    pub leases: crate::labeling::Leaser,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Harness {
    pub async fn start(pool: &PgPool, max_clients: usize) -> anyhow::Result<Harness> {
        let dir = std::env::temp_dir().join(format!("backflip-bench-{}", std::process::id()));
        let state = http::AppState {
            pool: pool.clone(),
            clips: ClipStore::local(&dir)?,
            inner: Arc::new(http::Settings {
                clip_limits: ClipLimits::default(),
                public_url: None,
                max_import_bytes: 1 << 20,
            }),
            models: Default::default(),
            judgments: crate::labeling::Writer::spawn(pool.clone()),
            leases: crate::labeling::Leaser::spawn(pool.clone()),
        };
        let judgments = state.judgments.clone();
        let leases = state.leases.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_clients)
            .build_http();
        Ok(Harness {
            base: format!("http://{addr}/api/v1"),
            client,
            dir,
            judgments,
            leases,
            stop,
            server,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        let _ = std::fs::remove_dir_all(self.dir);
        Ok(())
    }

    /// `concurrency` simulated raters loop `next` → `judgment` for `seconds`;
    /// rater `i` takes turns with the tokens `i`, `i + concurrency`, … so no
    /// rater is used by two loops at once and every token gets a history. Each
    /// loop pauses `think` after every judgment (zero: a closed loop, as fast as
    /// the server answers); the loops' first calls are spread over one `think`.
    /// `combined`: each judgment and the next pair in one call (`POST /next`),
    /// each token holding its pair until its next turn.
    pub async fn level(
        &self,
        tokens: &[String],
        concurrency: usize,
        seconds: f64,
        think: Duration,
        combined: bool,
    ) -> LevelResult {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..concurrency.min(tokens.len()))
            .map(|i| {
                let (client, base) = (self.client.clone(), self.base.clone());
                let mine: Vec<String> = tokens
                    .iter()
                    .skip(i)
                    .step_by(concurrency)
                    .cloned()
                    .collect();
                let offset = think.mul_f64(i as f64 / concurrency as f64);
                tokio::spawn(async move {
                    tokio::time::sleep(offset).await;
                    rater(&client, &base, &mine, deadline, think, combined).await
                })
            })
            .collect();
        let mut total = LevelResult::default();
        for t in tasks {
            let r = t.await.expect("rater task");
            total.judgments += r.judgments;
            total.errors += r.errors;
            total.nothing_left += r.nothing_left;
            total.next.extend(r.next);
            total.submit.extend(r.submit);
            total.both.extend(r.both);
        }
        total.elapsed = start.elapsed().as_secs_f64();
        total
    }
}

/// Every simulated judgment.
const JUDGMENT: &[u8] = b"{\"choice\": \"left\", \"duration_ms\": 3000}";

/// One simulated rater loop, with its tokens in turn: `GET /next`, then `POST
/// /assignments/{id}/judgment`; or, `combined`, one call per judgment: `POST
/// /next` judges the pair a token holds and leases it the next, which it judges
/// on its next turn (a token holding nothing, on its first turn or after an
/// error, asks `GET /next` first).
async fn rater(
    client: &HttpClient,
    base: &str,
    tokens: &[String],
    deadline: Instant,
    think: Duration,
    combined: bool,
) -> LevelResult {
    let mut r = LevelResult::default();
    let auths: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    let mut held: Vec<Option<String>> = vec![None; auths.len()];
    for k in (0..auths.len()).cycle() {
        let (auth, held) = (&auths[k], &mut held[k]);
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let (id, asked) = match held.take() {
            Some(id) => (id, false),
            None => match next(client, base, auth).await {
                Ok(id) => (id, true),
                Err(status) => {
                    r.errors += 1;
                    r.nothing_left += usize::from(status == StatusCode::NO_CONTENT);
                    continue;
                }
            },
        };
        let t1 = Instant::now();
        let (uri, body) = match combined {
            true => {
                let mut body = br#"{"assignment_id": ""#.to_vec();
                body.extend_from_slice(id.as_bytes());
                body.extend_from_slice(br#"", "judgment": "#);
                body.extend_from_slice(JUDGMENT);
                body.push(b'}');
                (format!("{base}/projects/bench/next"), Bytes::from(body))
            }
            false => (
                format!("{base}/assignments/{id}/judgment"),
                Bytes::from_static(JUDGMENT),
            ),
        };
        let req = Request::post(uri)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("bench-{id}"))
            .body(Full::new(body))
            .unwrap();
        let (status, body) = send(client, req).await;
        let t2 = Instant::now();
        if status != StatusCode::CREATED {
            r.errors += 1;
            continue;
        }
        if combined {
            *held = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["next"]["assignment_id"].as_str().map(str::to_owned));
        }
        r.judgments += 1;
        if asked {
            r.next.push((t1 - t0).as_secs_f64() * 1e3);
        }
        r.submit.push((t2 - t1).as_secs_f64() * 1e3);
        r.both.push((t2 - t0).as_secs_f64() * 1e3);
        if !think.is_zero() {
            tokio::time::sleep(think.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
    r
}

/// `GET /next` for the token in `auth`: the id of the assignment leased, or
/// the status when the answer was not a pair.
async fn next(client: &HttpClient, base: &str, auth: &str) -> Result<String, StatusCode> {
    let req = Request::get(format!("{base}/projects/bench/next"))
        .header("authorization", auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = send(client, req).await;
    if status != StatusCode::OK {
        return Err(status);
    }
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["assignment_id"].as_str().map(str::to_owned))
        .ok_or(status)
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    match client.request(req).await {
        Ok(res) => {
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, body)
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
    }
}
