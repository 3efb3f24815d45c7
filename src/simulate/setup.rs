//! Setting up a simulated project: its users, and generated pairs with their hidden truth.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use sqlx::PgPool;

use super::client::Truth;
use super::{GifTask, SimOpts, TaskKind, TextTask, derive_seed};
use crate::auth::{self, Role, User};
use crate::clips::{ClipLimits, ClipStore, sha256_hex};
use crate::error::Error;
use crate::{import, projects, users};

/// The user `name` (created if missing) and a fresh API token for them.
pub async fn ensure_user(pool: &PgPool, name: &str, role: Role) -> anyhow::Result<(User, String)> {
    match users::create(pool, name, role, None).await {
        Ok(c) => Ok((
            User {
                id: c.id,
                name: c.name,
                role,
            },
            c.token,
        )),
        Err(Error::Conflict { .. }) => {
            let user = users::by_name(pool, name).await?;
            let mut conn = pool.acquire().await?;
            let token = auth::create_token(&mut conn, user.id, "backflip simulate").await?;
            Ok((user, token))
        }
        Err(e) => Err(e.into()),
    }
}

/// The import file for `opts.pairs` pairs (ingesting GIF clips first), and the hidden truth
/// the raters answer by. Deterministic for the seed, so a re-run re-creates the same pairs.
pub async fn pairs(
    pool: &PgPool,
    store: &ClipStore,
    access: &projects::Access,
    opts: &SimOpts,
) -> anyhow::Result<(String, Truth)> {
    let mut body = String::new();
    let mut line = |i: usize, prompt: &str, a: serde_json::Value, b: serde_json::Value| {
        let l = json!({"id": format!("sim-{i}"), "prompt": prompt, "a": a, "b": b});
        body.push_str(&format!("{l}\n"));
    };
    let truth = match opts.task {
        TaskKind::Text => {
            let task = TextTask::new(derive_seed(opts.seed, 1));
            let mut rng = StdRng::seed_from_u64(derive_seed(opts.seed, 2));
            for i in 0..opts.pairs {
                let (a, b) = (task.sentence(&mut rng), task.sentence(&mut rng));
                line(
                    i,
                    "Which sentence is better?",
                    json!({"text": a}),
                    json!({"text": b}),
                );
            }
            Truth::Text(task)
        }
        TaskKind::Gif => {
            let (limits, mut rewards) = (ClipLimits::default(), HashMap::new());
            for i in 0..opts.pairs {
                let mut names = Vec::new();
                for side in ["a", "b"] {
                    let seed = derive_seed(derive_seed(opts.seed, 3), (2 * i + names.len()) as u64);
                    let clip = GifTask.rollout(seed);
                    let name = format!("sim-{i}-{side}.gif");
                    rewards.insert(sha256_hex(&clip.gif), clip.reward);
                    import::ingest_clip(pool, store, access, &name, clip.gif.into(), &limits)
                        .await?;
                    names.push(name);
                }
                let prompt = "Which agent makes more progress towards the goal?";
                line(
                    i,
                    prompt,
                    json!({"clip": names[0]}),
                    json!({"clip": names[1]}),
                );
            }
            Truth::Gif(rewards)
        }
    };
    Ok((body, truth))
}
