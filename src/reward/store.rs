//! Reward-model versions: weights as one content-addressed blob in the object
//! store, the version row in PostgreSQL, published atomically.

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{clips::ClipStore, ml::SavedEnsemble};

const MAGIC: &[u8; 8] = b"BFRM\x00\x00\x00\x01";

/// One blob for an ensemble: magic, manifest length (u32 LE) and JSON, member
/// count (u32 LE), then each member's burnpack record as length (u64 LE) and bytes.
pub fn encode(saved: &SavedEnsemble) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(saved.manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(saved.manifest.as_bytes());
    out.extend_from_slice(&(saved.members.len() as u32).to_le_bytes());
    for m in &saved.members {
        out.extend_from_slice(&(m.len() as u64).to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Read back what [`encode`] wrote; any inconsistency is an error, never a panic.
pub fn decode(bytes: &[u8]) -> anyhow::Result<SavedEnsemble> {
    let mut at = 0usize;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .context("model blob is truncated")?;
        let s = &bytes[at..end];
        at = end;
        Ok(s)
    };
    anyhow::ensure!(take(8)? == MAGIC, "not a Backflip model blob");
    let len = u32::from_le_bytes(take(4)?.try_into()?) as usize;
    let manifest = String::from_utf8(take(len)?.to_vec()).context("manifest is not UTF-8")?;
    let count = u32::from_le_bytes(take(4)?.try_into()?) as usize;
    let mut members = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = u64::from_le_bytes(take(8)?.try_into()?) as usize;
        members.push(take(len)?.to_vec());
    }
    Ok(SavedEnsemble { manifest, members })
}

/// A new version to publish.
pub struct NewVersion {
    pub project_id: Uuid,
    pub kind: super::ModelKind,
    pub config: serde_json::Value,
    pub metrics: serde_json::Value,
    pub train_pairs: i32,
    pub held_out_pairs: i32,
    pub job_id: Option<i64>,
}

/// Store the weights, then in one transaction write the version row and make
/// it current. Returns (id, version).
pub async fn publish(
    pool: &PgPool,
    store: &ClipStore,
    v: NewVersion,
    blob: Vec<u8>,
) -> anyhow::Result<(Uuid, i32)> {
    let sha = crate::clips::sha256_hex(&blob);
    let size = blob.len() as i32;
    store.put_model(&sha, blob.into()).await?;
    let mut tx = pool.begin().await?;
    // Versions of a project are numbered under its row lock.
    sqlx::query("select 1 from projects where id = $1 for update")
        .bind(v.project_id)
        .execute(&mut *tx)
        .await?;
    let (id, version): (Uuid, i32) = sqlx::query_as(
        "insert into reward_models (project_id, version, kind, config, metrics, train_pairs,
             held_out_pairs, weights_sha256, weights_bytes, job_id)
         select $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9
         from reward_models where project_id = $1
         returning id, version",
    )
    .bind(v.project_id)
    .bind(v.kind.as_str())
    .bind(&v.config)
    .bind(&v.metrics)
    .bind(v.train_pairs)
    .bind(v.held_out_pairs)
    .bind(&sha)
    .bind(size)
    .bind(v.job_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update projects set current_model = $2 where id = $1")
        .bind(v.project_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((id, version))
}

/// A version as the API and pages show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ModelVersion {
    pub id: Uuid,
    pub version: i32,
    pub kind: String,
    pub config: serde_json::Value,
    pub metrics: serde_json::Value,
    pub train_pairs: i32,
    pub held_out_pairs: i32,
    pub weights_sha256: String,
    pub weights_bytes: i32,
    pub current: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A project's versions, newest first.
pub async fn versions(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Vec<ModelVersion>> {
    sqlx::query_as(
        "select m.id, m.version, m.kind, m.config, m.metrics, m.train_pairs, m.held_out_pairs,
                m.weights_sha256, m.weights_bytes, p.current_model is not distinct from m.id as current,
                m.created_at
         from reward_models m join projects p on p.id = m.project_id
         where m.project_id = $1 order by m.version desc",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_refuse_garbage() {
        let saved = SavedEnsemble {
            manifest: "{\"k\": 1}".into(),
            members: vec![vec![1, 2, 3], vec![], vec![9; 100]],
        };
        let blob = encode(&saved);
        assert_eq!(decode(&blob).unwrap(), saved);
        assert!(decode(&blob[..blob.len() - 1]).is_err());
        assert!(decode(b"not a model at all").is_err());
        let mut huge = blob.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }
}
