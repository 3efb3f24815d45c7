//! The reward model in the service: training data from judgments, the training
//! job, versions published atomically, and scoring with the current version.
//! The networks themselves live in [`crate::ml`].

pub mod data;
pub mod export;
pub mod job;
pub mod score;
pub mod store;

pub use job::train_handler;
pub use score::ModelCache;

/// Every job kind the workers run, by name.
pub fn job_handlers(store: crate::clips::ClipStore) -> crate::jobs::Handlers {
    let mut handlers = crate::jobs::Handlers::new();
    handlers.insert("train", train_handler(store));
    handlers
}

/// What a model reads: hashed text features, the rollouts' own feature vectors, or clips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Text,
    /// Vectors of this length from each rollout's `meta.features`.
    Features(usize),
    Clip,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Text => "text",
            ModelKind::Features(_) => "features",
            ModelKind::Clip => "clip",
        }
    }
}

/// Most frames of a clip the clip model reads: evenly spaced over the clip
/// (BURN.md: 25 frames of 64×64 keep training at tens of pairs per second).
pub const MAX_TRAINING_FRAMES: usize = 25;

/// Queue a training run on request (reusing a queued one); returns its job id.
pub async fn request_training(
    pool: &sqlx::PgPool,
    access: &crate::projects::Access,
) -> crate::error::Result<i64> {
    let mut tx = pool.begin().await?;
    let payload = serde_json::json!({"reason": "requested", "by": access.user.name});
    let id = match crate::jobs::storage::enqueue(&mut tx, "train", Some(access.project.id), payload)
        .await?
    {
        Some(id) => id,
        None => sqlx::query_scalar(
            "select id from jobs where project_id = $1 and kind = 'train' and status = 'queued'",
        )
        .bind(access.project.id)
        .fetch_one(&mut *tx)
        .await?,
    };
    crate::projects::audit(
        &mut tx,
        &access.user,
        access.project.id,
        "train.request",
        serde_json::json!({"job": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}
