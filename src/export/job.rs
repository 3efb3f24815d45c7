//! Large exports as a worker job (kind `export`): the files are written to a
//! scratch folder, then copied into the object store under
//! `exports/<job id>/<file>` in parts (flat memory), where any web node can
//! serve them for download. Progress is the bytes written so far.
//!
//! The queue keeps at most one *queued* job per project and kind, so a second
//! export request while one is still waiting is refused (409); once the first
//! is running, the next may be queued.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use object_store::{WriteMultipart, path::Path as ObjPath};
use serde_json::json;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;

use super::{ExportArgs, files};
use crate::{
    clips::ClipStore,
    error::{Error, Result},
    jobs::{Handler, JobContext, storage},
    projects::Access,
};

pub const KIND: &str = "export";

/// Every job kind this module runs.
pub fn handlers(store: ClipStore) -> crate::jobs::Handlers {
    let mut h = crate::jobs::Handlers::new();
    let handler: Handler = Arc::new(move |ctx: &JobContext| run(ctx, &store));
    h.insert(KIND, handler);
    h
}

/// Queue an export; the filters are checked first (a bad one is a 400 and queues nothing).
pub async fn request(pool: &PgPool, access: &Access, args: ExportArgs) -> Result<i64> {
    let plan = super::plan(pool, access.project.clone(), args, access.can_manage()).await?;
    let mut tx = pool.begin().await?;
    let payload =
        json!({"args": plan.args, "by": access.user.name, "may_identify": access.can_manage()});
    let id = storage::enqueue(&mut tx, KIND, Some(access.project.id), payload)
        .await?
        .ok_or(Error::Conflict {
            code: "export_queued",
            message: "an export of this project is already waiting for a worker; try again once it has started".into(),
        })?;
    crate::projects::audit(
        &mut tx,
        &access.user,
        access.project.id,
        "export.request",
        json!({"job": id, "format": plan.args.format.as_str()}),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

fn run(ctx: &JobContext, store: &ClipStore) -> anyhow::Result<serde_json::Value> {
    let project_id = ctx
        .job
        .project_id
        .context("an export job needs a project")?;
    let args: ExportArgs = serde_json::from_value(ctx.job.payload["args"].clone())?;
    let may_identify = ctx.job.payload["may_identify"].as_bool().unwrap_or(false);
    let work = std::env::temp_dir().join(format!(
        "backflip-export-{}-{}",
        ctx.job.id,
        std::process::id()
    ));
    let result = ctx.rt.block_on(async {
        let slug: String = sqlx::query_scalar("select slug from projects where id = $1")
            .bind(project_id)
            .fetch_one(&ctx.pool)
            .await?;
        let project = crate::projects::by_slug(&ctx.pool, &slug).await?;
        let plan = super::plan(&ctx.pool, project, args, may_identify)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let format = plan.args.format;
        std::fs::create_dir_all(&work)?;
        let layout = files::Layout::for_out(&work, format);
        let mut progress = |bytes: u64| ctx.progress(json!({"bytes": bytes, "stage": "writing"}));
        let manifest = files::write(
            &ctx.pool,
            Some(store),
            Arc::new(plan),
            &layout,
            &mut progress,
        )
        .await?;
        ctx.progress(json!({"stage": "storing"}));
        for path in [&layout.data, &layout.readme, &layout.manifest] {
            let name = path
                .file_name()
                .context("file name")?
                .to_string_lossy()
                .into_owned();
            upload(store, &key(ctx.job.id, &name), path).await?;
        }
        anyhow::Ok(json!({
            "file": format.file_name(),
            "rows": manifest.rows,
            "files": manifest.files,
            "content_type": format.content_type(),
        }))
    });
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn key(job: i64, name: &str) -> ObjPath {
    ObjPath::from(format!("exports/{job}/{name}"))
}

/// Copy a file into the object store in parts of a few MiB.
async fn upload(store: &ClipStore, key: &ObjPath, path: &std::path::Path) -> anyhow::Result<()> {
    let upload = store.objects().put_multipart(key).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await?;
        writer.write(&buf[..n]);
    }
    writer.finish().await?;
    Ok(())
}

/// A finished export job's file, streamed from the object store. `name` is one
/// of the files the job recorded (anything else is not found).
pub async fn download(
    pool: &PgPool,
    store: &ClipStore,
    access: &Access,
    job: i64,
    name: &str,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + use<>> {
    let result: Option<serde_json::Value> = sqlx::query_scalar(
        "select result from jobs where id = $1 and project_id = $2 and kind = 'export' and status = 'done'",
    )
    .bind(job)
    .bind(access.project.id)
    .fetch_optional(pool)
    .await?
    .flatten();
    let known = result.as_ref().is_some_and(|r| {
        r["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == name))
            || name == "manifest.json"
    });
    if !known {
        return Err(Error::NotFound("export file"));
    }
    let got = store
        .objects()
        .get(&key(job, name))
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    Ok(got.into_stream().map_err(std::io::Error::other))
}
