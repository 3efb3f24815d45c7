//! The reward model in the loop: simulated raters label through the API, a
//! worker trains, a version is published with its metrics, the scoring
//! endpoint serves it, and a killed worker's training run is taken over.

use std::{process::Command, time::Duration};

use axum::http::StatusCode;
use backflip::jobs::{Runner, WorkerConfig, storage};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use crate::common::{TestApp, app};

/// A text task with a hidden true reward: words carry weights, a sentence's
/// reward is the sum of its words' weights.
struct TextTask {
    words: Vec<(String, f64)>,
}

impl TextTask {
    fn new(rng: &mut StdRng) -> Self {
        let words = (0..48)
            .map(|i| {
                let w = match i % 6 {
                    0 => 1.0,
                    1 => -1.0,
                    _ => 0.0,
                };
                (format!("w{i}x{}", rng.random_range(100..999)), w)
            })
            .collect();
        TextTask { words }
    }

    fn sentence(&self, rng: &mut StdRng) -> String {
        let n = rng.random_range(6..14);
        (0..n)
            .map(|_| self.words[rng.random_range(0..self.words.len())].0.clone())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn reward(&self, text: &str) -> f64 {
        text.split(' ')
            .filter_map(|w| self.words.iter().find(|(x, _)| x == w))
            .map(|(_, r)| r)
            .sum()
    }
}

/// A simulated rater answering by the true reward with Bradley–Terry noise
/// (temperature 0.5), through the same API a person's page uses.
async fn label_all(
    app: &TestApp,
    slug: &str,
    token: &str,
    task: &TextTask,
    rng: &mut StdRng,
) -> usize {
    let mut n = 0;
    loop {
        let res = app
            .get(&format!("/api/v1/projects/{slug}/next"), token)
            .await;
        if res.status == StatusCode::NO_CONTENT {
            return n;
        }
        let pair = res.json();
        let (l, r) = (
            task.reward(pair["left"]["text"].as_str().unwrap()),
            task.reward(pair["right"]["text"].as_str().unwrap()),
        );
        let p_left = 1.0 / (1.0 + (-(l - r) / 0.5).exp());
        let choice = if rng.random_bool(p_left) {
            "left"
        } else {
            "right"
        };
        let id = pair["assignment_id"].as_str().unwrap();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                token,
                json!({"choice": choice}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        n += 1;
    }
}

fn runner(app: &TestApp, lease: f64) -> Runner {
    Runner::new(
        app.pool.clone(),
        // What `serve` runs: a new version queues the queue refresh (`select`) too.
        backflip::jobs::every_handler(app.state.clips.clone()),
        WorkerConfig::new(1, lease),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_labels_train_a_model_that_agrees_with_the_true_reward() {
    let app = app().await;
    let mut rng = StdRng::seed_from_u64(7);
    let task = TextTask::new(&mut rng);
    // Automatic retraining off: this test asks for one run after all the labels.
    let lead = app
        .project("sim", json!({"overlap": 1, "train_every": 0}))
        .await;
    let lines: String = (0..500)
        .map(|i| json!({"id": format!("s{i}"), "prompt": "Which is better?", "a": {"text": task.sentence(&mut rng)}, "b": {"text": task.sentence(&mut rng)}}).to_string() + "\n")
        .collect();
    assert_eq!(
        app.post_raw("/api/v1/projects/sim/import", &lead, lines)
            .await
            .status,
        StatusCode::OK
    );
    let rater = app.annotator("sim", &lead, "simulated").await;

    // No model yet: scoring says so.
    let res = app
        .post(
            "/api/v1/projects/sim/reward",
            &lead,
            json!({"rollouts": [{"text": "w1"}]}),
        )
        .await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::CONFLICT, "no_model".to_owned())
    );

    assert_eq!(label_all(&app, "sim", &rater, &task, &mut rng).await, 500);
    let res = app
        .post("/api/v1/projects/sim/train", &lead, json!(null))
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    // The training run, then the queue refresh its new version queues (new projects select
    // pairs with `mixed`).
    assert_eq!(runner(&app, 60.0).drain().await.unwrap(), 2);

    let versions = app.get("/api/v1/projects/sim/models", &lead).await.json();
    let v = &versions[0];
    assert_eq!(
        (
            v["version"].clone(),
            v["kind"].clone(),
            v["current"].clone()
        ),
        (json!(1), json!("text"), json!(true))
    );
    let held_out = v["held_out_pairs"].as_i64().unwrap();
    assert!(
        (120..=250).contains(&held_out),
        "about 1/e of 500 held out, got {held_out}"
    );
    let acc = v["metrics"]["held_out"]["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.7,
        "held-out agreement with the raters' noisy labels: {acc}"
    );
    assert_eq!(v["metrics"]["member_accuracy"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["metrics"]["held_out"]["calibration"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Fresh pairs the model never saw, scored through the API, against the true reward.
    let (mut agree, mut total) = (0, 0);
    for _ in 0..10 {
        let pairs: Vec<(String, String)> = (0..30)
            .map(|_| (task.sentence(&mut rng), task.sentence(&mut rng)))
            .collect();
        let rollouts: Vec<Value> = pairs
            .iter()
            .flat_map(|(a, b)| [json!({"text": a}), json!({"text": b})])
            .collect();
        let res = app
            .post(
                "/api/v1/projects/sim/reward",
                &lead,
                json!({"rollouts": rollouts}),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let scored = res.json();
        assert_eq!(scored["model"]["version"], 1);
        for (k, (a, b)) in pairs.iter().enumerate() {
            let (ta, tb) = (task.reward(a), task.reward(b));
            if ta == tb {
                continue;
            }
            let (ma, mb) = (
                scored["rewards"][2 * k]["mean"].as_f64().unwrap(),
                scored["rewards"][2 * k + 1]["mean"].as_f64().unwrap(),
            );
            total += 1;
            agree += usize::from((ma > mb) == (ta > tb));
        }
    }
    let accuracy = agree as f64 / total as f64;
    eprintln!("agreement with the true reward on {total} fresh pairs: {accuracy:.3}");
    assert!(
        accuracy >= 0.8,
        "agreement with the true reward on fresh pairs: {accuracy:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_with_their_own_features_and_scoring_errors() {
    let app = app().await;
    let lead = app
        .project("vec", json!({"overlap": 1, "train_every": 0}))
        .await;
    let mut rng = StdRng::seed_from_u64(3);
    let lines: String = (0..60)
        .map(|i| {
            let (fa, fb): (Vec<f32>, Vec<f32>) = ((0..4).map(|_| rng.random()).collect(), (0..4).map(|_| rng.random()).collect());
            json!({"id": format!("v{i}"), "prompt": "p", "a": {"text": "a", "meta": {"features": fa}}, "b": {"text": "b", "meta": {"features": fb}}}).to_string() + "\n"
        })
        .collect();
    assert_eq!(
        app.post_raw("/api/v1/projects/vec/import", &lead, lines)
            .await
            .status,
        StatusCode::OK
    );
    let rater = app.annotator("vec", &lead, "r").await;
    for _ in 0..60 {
        app.judge_next("vec", &rater, json!({"choice": "left"}))
            .await;
    }
    app.post("/api/v1/projects/vec/train", &lead, json!(null))
        .await;
    runner(&app, 60.0).drain().await.unwrap();
    let v = app.get("/api/v1/projects/vec/models", &lead).await.json();
    assert_eq!(v[0]["kind"], "features");
    let res = app
        .post(
            "/api/v1/projects/vec/reward",
            &lead,
            json!({"rollouts": [{"features": [0.1, 0.2, 0.3, 0.4]}]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let r = &res.json()["rewards"][0];
    assert_eq!(r["members"].as_array().unwrap().len(), 3);
    assert!(r["std"].as_f64().unwrap() >= 0.0);
    for (body, needle) in [
        (
            json!({"rollouts": [{"features": [0.1]}]}),
            "4 finite numbers",
        ),
        (
            json!({"rollouts": [{"text": "words"}]}),
            "features or rollout_id",
        ),
        (json!({"rollouts": []}), "1 to 1000"),
        (
            json!({"rollouts": [{"rollout_id": uuid::Uuid::new_v4()}]}),
            "no such rollout",
        ),
    ] {
        let res = app.post("/api/v1/projects/vec/reward", &lead, body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            res.json()["message"].as_str().unwrap().contains(needle),
            "{}",
            res.text()
        );
    }
    // Annotators do not read the model.
    assert_eq!(
        app.post(
            "/api/v1/projects/vec/reward",
            &rater,
            json!({"rollouts": [{"features": [0.0, 0.0, 0.0, 0.0]}]})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

/// `kill -9` a `backflip worker` mid-training: the job is taken over after its
/// lease and finishes elsewhere; a cancelled run leaves the current version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_training_run_is_taken_over() {
    let app = app().await;
    let lead = app
        .project("kill", json!({"overlap": 1, "train_every": 0}))
        .await;
    app.import_text_pairs("kill", &lead, 40).await;
    let rater = app.annotator("kill", &lead, "r").await;
    for i in 0..40 {
        let choice = if i % 3 == 0 { "right" } else { "left" };
        app.judge_next("kill", &rater, json!({"choice": choice}))
            .await;
    }
    let project: uuid::Uuid = sqlx::query_scalar("select id from projects where slug = 'kill'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    // Long enough that the kill lands mid-run.
    let job = storage::enqueue(&mut conn, "train", Some(project), json!({"steps": 4000}))
        .await
        .unwrap()
        .unwrap();
    drop(conn);

    let data = tempfile::tempdir().unwrap();
    let url = app.url.clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backflip"))
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(data.path())
        .args(["worker", "--job-lease-seconds", "2"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = storage::get(&app.pool, job).await.unwrap().unwrap();
        if row.status == "running" && row.progress.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker process never started the job: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL: no chance to hand the job back
    child.wait().unwrap();
    let row = storage::get(&app.pool, job).await.unwrap().unwrap();
    assert_eq!(
        row.status, "running",
        "the dead worker still holds it, until its lease ends"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Another worker (this process) takes it over; shorten the run for the test.
    sqlx::query("update jobs set payload = '{\"steps\": 200}' where id = $1")
        .bind(job)
        .execute(&app.pool)
        .await
        .unwrap();
    // The training run, then the queue refresh its new version queues (new projects select
    // pairs with `mixed`).
    assert_eq!(runner(&app, 30.0).drain().await.unwrap(), 2);
    let row = storage::get(&app.pool, job).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.attempts), ("done", 2), "{row:?}");
    let v = app.get("/api/v1/projects/kill/models", &lead).await.json();
    assert_eq!(v.as_array().unwrap().len(), 1);

    // A run cancelled by its worker's shutdown publishes nothing: v1 stays current.
    app.post("/api/v1/projects/kill/train", &lead, json!(null))
        .await;
    sqlx::query("update jobs set payload = '{\"steps\": 100000}' where status = 'queued'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let r = runner(&app, 3.0);
    let task = tokio::spawn(async move { r.run(stopped).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app
        .count("select count(*) from jobs where status = 'running' and progress is not null")
        .await
        == 0
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    let v = app.get("/api/v1/projects/kill/models", &lead).await.json();
    assert_eq!(
        (v.as_array().unwrap().len(), v[0]["current"].clone()),
        (1, json!(true))
    );
    let queued: Vec<String> =
        sqlx::query_scalar("select kind from jobs where status = 'queued' order by id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(queued, ["train"], "handed back");

    // The lead's page shows the version, its charts and the job history.
    let lead_user = backflip::auth::user_by_token(&app.pool, &lead)
        .await
        .unwrap()
        .unwrap();
    let session = backflip::auth::create_session(&app.pool, lead_user.id)
        .await
        .unwrap();
    let page = app
        .send(
            axum::http::Request::get("/projects/kill")
                .header("cookie", format!("backflip_session={session}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    let html = page.text();
    assert!(html.contains("v1 <strong>(current)</strong>"), "{html}");
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "accuracy, calibration and loss charts"
    );
    assert!(html.contains("id=\"retrain\"") && html.contains("id=\"jobs\""));
}

/// Runs the binary against the test's database and object store with `args` then `path`.
fn backflip(app: &TestApp, args: &[&str], path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_backflip"))
        .env("DATABASE_URL", &app.url)
        .env("BACKFLIP_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn")
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

/// Weights as `f32`s and shape of one tensor of an exported SafeTensors file.
fn tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name} in the export: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

/// `y = x · W + b` with `W` of shape `[d_in, d_out]`, as `docs/reward-model-export.md` says.
fn linear(
    x: &[f32],
    (w, shape): &(Vec<f32>, Vec<usize>),
    (b, _): &(Vec<f32>, Vec<usize>),
) -> Vec<f32> {
    let (d_in, d_out) = (shape[0], shape[1]);
    assert_eq!(x.len(), d_in);
    (0..d_out)
        .map(|o| b[o] + (0..d_in).map(|i| x[i] * w[i * d_out + o]).sum::<f32>())
        .collect()
}

/// The exported weights, read with the `safetensors` crate and evaluated with plain loops
/// by the recipe in `docs/reward-model-export.md`, give the rewards the service gives; the
/// CLI writes the same model with its config and README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_weights_reproduce_the_services_rewards() {
    let app = app().await;
    let lead = app
        .project("exp", json!({"overlap": 1, "train_every": 0}))
        .await;
    // No model yet: a clear 409, not an empty file.
    let res = app
        .get("/api/v1/projects/exp/model.safetensors", &lead)
        .await;
    assert_eq!(
        (res.status, res.code()),
        (StatusCode::CONFLICT, "no_model".to_owned())
    );
    app.import_text_pairs("exp", &lead, 40).await;
    let rater = app.annotator("exp", &lead, "r").await;
    for i in 0..40 {
        let choice = if i % 4 == 0 { "right" } else { "left" };
        app.judge_next("exp", &rater, json!({"choice": choice}))
            .await;
    }
    app.post("/api/v1/projects/exp/train", &lead, json!(null))
        .await;
    // The training run, then the queue refresh its new version queues (new projects select
    // pairs with `mixed`).
    assert_eq!(runner(&app, 60.0).drain().await.unwrap(), 2);

    let res = app
        .get("/api/v1/projects/exp/model.safetensors", &lead)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let bytes = res.body.clone();
    // Annotators label; they do not take the model home.
    let res = app
        .get("/api/v1/projects/exp/model.safetensors", &rater)
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let config: Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["backflip.config"]).unwrap();
    assert_eq!(
        (
            config["kind"].clone(),
            config["architecture"].clone(),
            config["version"].clone()
        ),
        (json!("text"), json!("mlp"), json!(1))
    );
    let members = config["members"].as_u64().unwrap() as usize;
    assert_eq!(members, 3);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 4 * members, "{:?}", st.names());

    let texts = [
        "a clear and helpful answer",
        "nonsense words everywhere",
        "",
        "Ünïcode and numbers 42 too",
    ];
    let res = app
        .post(
            "/api/v1/projects/exp/reward",
            &lead,
            json!({"rollouts": texts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let served = res.json();
    for (k, text) in texts.iter().enumerate() {
        let x = backflip::ml::features::text_features(text);
        let per_member: Vec<f32> = (0..members)
            .map(|i| {
                let t = |n: &str| tensor(&st, &format!("{i}.{n}"));
                let h: Vec<f32> = linear(&x, &t("hidden.weight"), &t("hidden.bias"))
                    .into_iter()
                    .map(|v| v.max(0.0))
                    .collect();
                linear(&h, &t("output.weight"), &t("output.bias"))[0]
            })
            .collect();
        for (i, mine) in per_member.iter().enumerate() {
            let theirs = served["rewards"][k]["members"][i].as_f64().unwrap() as f32;
            assert!(
                (mine - theirs).abs() <= 1e-4 * (1.0 + theirs.abs()),
                "text {k} member {i}: recomputed {mine}, served {theirs}"
            );
        }
    }

    // The CLI: three files, the same tensors, a config that says how to read them.
    let out = app.data_dir().join("export");
    let cli = backflip(
        &app,
        &["model", "export", "--project", "exp", "--out"],
        &out,
    );
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let file = std::fs::read(out.join("model.safetensors")).unwrap();
    let from_cli = safetensors::SafeTensors::deserialize(&file).unwrap();
    for name in st.names() {
        assert_eq!(tensor(&from_cli, name), tensor(&st, name), "{name}");
    }
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["input"]["dim"], 4098);
    assert_eq!(written["model"]["d_input"], 4098);
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("FNV-1a") && readme.contains("hidden.weight"));
    // An unknown version is a clear 404.
    let res = app
        .get("/api/v1/projects/exp/model.safetensors?version=9", &lead)
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let res = app
        .get("/api/v1/projects/exp/model.safetensors?version=x", &lead)
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        res.text()
    );

    // `backflip score`: JSONL in, one reward per line out, the same numbers as the API.
    let input = out.join("rollouts.jsonl");
    std::fs::write(
        &input,
        texts
            .iter()
            .map(|t| json!({"text": t}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let cli = backflip(&app, &["score", "--project", "exp"], &input);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(cli.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), texts.len());
    for (k, line) in lines.iter().enumerate() {
        let (a, b) = (
            line["mean"].as_f64().unwrap(),
            served["rewards"][k]["mean"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "line {k}: {a} vs {b}");
    }
    // A bad line names itself and nothing is written.
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let cli = backflip(&app, &["score", "--project", "exp"], &input);
    assert!(!cli.status.success());
    assert!(cli.stdout.is_empty());
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(err.contains("line 2"), "{err}");
}
