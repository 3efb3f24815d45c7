//! Import of pairs from JSONL (one pair a line), shared by the API and the CLI,
//! and ingest of the GIF clips those pairs name.
//!
//! All or nothing: every line is checked first and a file with any bad line
//! imports nothing; the error lists every bad line with its number. Lines whose
//! external `id` the project already has are skipped, so re-importing a file
//! never duplicates.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    clips::{self, ClipLimits, ClipStore},
    error::{Error, LineError, Result},
    projects::{self, Access},
};

/// Longest import line we accept.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairLine {
    #[serde(default)]
    id: Option<String>,
    prompt: String,
    a: RolloutLine,
    b: RolloutLine,
    #[serde(default)]
    meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One rollout as an import line carries it (a pair's side, or a lone rollout).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolloutLine {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub clip: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct ImportReport {
    /// Non-blank lines read.
    pub lines: usize,
    /// New pairs stored.
    pub imported: usize,
    /// Lines skipped because the project already has a pair (or rollout) with their `id`.
    pub duplicates: usize,
    /// For a rollouts file: pairs generated right after the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<usize>,
}

/// Is this a safe clip name (no folders, no traversal, no odd characters)?
pub fn valid_clip_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[derive(Debug)]
struct Parsed {
    line: usize,
    pair: PairLine,
}

/// Check every line; return the pairs, or every problem found.
fn parse(body: &[u8], media_kind: &str) -> std::result::Result<Vec<Parsed>, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut pairs = Vec::new();
    let mut ids = HashSet::new();
    for (line, text) in split_lines(body, &mut errors) {
        let mut err = |message: String| errors.push(LineError { line, message });
        if text.contains("\"rollout\"") && !text.contains("\"a\"") {
            err("a rollout line in a file of pairs; import rollouts as a separate file".into());
            continue;
        }
        let pair: PairLine = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                err(format!("invalid pair: {e}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        if let Some(id) = &pair.id {
            if id.is_empty() || id.len() > 200 {
                problems.push("id must be 1-200 characters".to_string());
            } else if !ids.insert(id.clone()) {
                problems.push(format!("id {id:?} appears more than once in this file"));
            }
        }
        for (side, r) in [("a", &pair.a), ("b", &pair.b)] {
            if let Some(problem) = check_rollout(side, r, media_kind) {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            pairs.push(Parsed { line, pair });
        } else {
            err(problems.join("; "));
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        // split_lines reports unreadable lines first; the caller reads them in order.
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// [`parse`] for the fuzzing checks: each accepted pair's line and its two rollouts.
pub(crate) fn parse_pairs(
    body: &[u8],
    media_kind: &str,
) -> std::result::Result<Vec<(usize, [RolloutLine; 2])>, Vec<LineError>> {
    let pairs = parse(body, media_kind)?;
    Ok(pairs
        .into_iter()
        .map(|p| (p.line, [p.pair.a, p.pair.b]))
        .collect())
}

/// The non-blank lines of a JSONL body with their numbers (from 1), trimmed;
/// over-long and non-UTF-8 lines go to `errors` instead.
pub(crate) fn split_lines<'a>(
    body: &'a [u8],
    errors: &mut Vec<LineError>,
) -> Vec<(usize, &'a str)> {
    let mut lines = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.len() > MAX_LINE_BYTES {
            let message = format!("line is {} bytes; the limit is {MAX_LINE_BYTES}", raw.len());
            errors.push(LineError { line, message });
            continue;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            let message = "line is not valid UTF-8".into();
            errors.push(LineError { line, message });
            continue;
        };
        let text = text.trim();
        if !text.is_empty() {
            lines.push((line, text));
        }
    }
    lines
}

/// What is wrong with one rollout for a project of this media kind, if anything.
pub(crate) fn check_rollout(side: &str, r: &RolloutLine, media_kind: &str) -> Option<String> {
    match (&r.text, &r.clip) {
        (Some(_), Some(_)) | (None, None) => {
            Some(format!("{side}: give exactly one of \"text\" or \"clip\""))
        }
        (Some(_), None) if media_kind != "text" => Some(format!(
            "{side}: this is a GIF project; rollouts need \"clip\""
        )),
        (Some(t), None) if t.trim().is_empty() => Some(format!("{side}: text is empty")),
        (None, Some(_)) if media_kind != "gif" => Some(format!(
            "{side}: this is a text project; rollouts need \"text\""
        )),
        (None, Some(c)) if !valid_clip_name(c) => Some(format!(
            "{side}: clip name {c:?} must be a plain file name (letters, digits, _ . -)"
        )),
        _ => None,
    }
}

/// Each named clip's sha256, for the names this project has been sent.
/// Which imported ids [`lock_and_find_known`] looks up.
pub(crate) enum Known {
    /// `comparisons.external_id` (pair imports).
    Pairs,
    /// `rollouts.external_id` (rollout imports).
    Rollouts,
}

/// Locks the project's row for the rest of `tx` — one import (and one pair generator) per
/// project at a time, so the duplicate check holds — and returns which of `ids` it already has.
pub(crate) async fn lock_and_find_known(
    tx: &mut sqlx::PgConnection,
    project_id: Uuid,
    known: Known,
    ids: &[&str],
) -> sqlx::Result<HashSet<String>> {
    sqlx::query("select 1 from projects where id = $1 for update")
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
    let sql = match known {
        Known::Pairs => {
            "select external_id from comparisons where project_id = $1 and external_id = any($2)"
        }
        Known::Rollouts => {
            "select external_id from rollouts where project_id = $1 and external_id = any($2)"
        }
    };
    Ok(sqlx::query_scalar(sql)
        .bind(project_id)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect())
}

pub(crate) async fn known_clips(
    pool: &PgPool,
    project_id: Uuid,
    wanted: &[String],
) -> Result<HashMap<String, String>> {
    Ok(sqlx::query_as(
        "select name, sha256 from project_clips where project_id = $1 and name = any($2)",
    )
    .bind(project_id)
    .bind(wanted)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// The clip names a JSONL body refers to (for the CLI's `--clips DIR`). Lines
/// that do not parse are ignored here; `import` reports them.
pub fn clip_names(body: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = body
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .flat_map(|v| ["a", "b", "rollout"].map(|side| v[side]["clip"].as_str().map(str::to_owned)))
        .flatten()
        .filter(|n| valid_clip_name(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Import a JSONL body into a project the caller manages.
pub async fn import(pool: &PgPool, access: &Access, body: &[u8]) -> Result<ImportReport> {
    if crate::selection::import::is_rollouts_file(body) {
        return crate::selection::import::import(pool, access, body).await;
    }
    let project = &access.project;
    let pairs = parse(body, &project.media_kind).map_err(Error::Import)?;

    // Clips must have been uploaded to this project first.
    let wanted: Vec<String> = pairs
        .iter()
        .flat_map(|p| [&p.pair.a.clip, &p.pair.b.clip])
        .flatten()
        .cloned()
        .collect();
    let known = known_clips(pool, project.id, &wanted).await?;
    let missing: Vec<LineError> = pairs
        .iter()
        .filter_map(|p| {
            let absent: Vec<&str> = [&p.pair.a.clip, &p.pair.b.clip]
                .into_iter()
                .flatten()
                .filter(|c| !known.contains_key(*c))
                .map(String::as_str)
                .collect();
            (!absent.is_empty()).then(|| LineError {
                line: p.line,
                message: format!(
                    "clip(s) not uploaded to this project: {}",
                    absent.join(", ")
                ),
            })
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Import(missing));
    }

    let mut tx = pool.begin().await?;
    let ids: Vec<&str> = pairs.iter().filter_map(|p| p.pair.id.as_deref()).collect();
    let existing = lock_and_find_known(&mut tx, project.id, Known::Pairs, &ids).await?;

    let lines = pairs.len();
    let fresh: Vec<PairLine> = pairs
        .into_iter()
        .map(|p| p.pair)
        .filter(|p| p.id.as_ref().is_none_or(|id| !existing.contains(id)))
        .collect();

    // Columns for two bulk inserts (unnest), ids made here so rows link up.
    let mut r = RolloutColumns::default();
    let (mut c_id, mut c_ext, mut c_prompt, mut c_a, mut c_b, mut c_meta) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in &fresh {
        c_id.push(Uuid::now_v7());
        c_ext.push(p.id.clone());
        c_prompt.push(p.prompt.clone());
        c_a.push(r.push(&p.a, &known));
        c_b.push(r.push(&p.b, &known));
        c_meta.push(serde_json::Value::Object(
            p.meta.clone().unwrap_or_default(),
        ));
    }
    sqlx::query(
        "insert into rollouts (id, project_id, body, clip_sha256, clip_name, policy, meta)
         select id, $1, body, clip, name, policy, meta
         from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
              as t(id, body, clip, name, policy, meta)",
    )
    .bind(project.id)
    .bind(&r.id)
    .bind(&r.body)
    .bind(&r.clip)
    .bind(&r.name)
    .bind(&r.policy)
    .bind(&r.meta)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into comparisons (id, project_id, external_id, prompt, rollout_a, rollout_b, meta, overlap)
         select id, $1, ext, prompt, a, b, meta, $8
         from unnest($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], $7::jsonb[])
              with ordinality as t(id, ext, prompt, a, b, meta, n)
         order by n",
    )
    .bind(project.id)
    .bind(&c_id)
    .bind(&c_ext)
    .bind(&c_prompt)
    .bind(&c_a)
    .bind(&c_b)
    .bind(&c_meta)
    .bind(project.overlap)
    .execute(&mut *tx)
    .await?;
    let report = ImportReport {
        lines,
        imported: fresh.len(),
        duplicates: lines - fresh.len(),
        generated: None,
    };
    let detail = serde_json::json!({"lines": report.lines, "imported": report.imported});
    projects::audit(&mut tx, &access.user, project.id, "import", detail).await?;
    tx.commit().await?;
    Ok(report)
}

/// Rollouts as columns for one bulk `unnest` insert.
#[derive(Default)]
pub(crate) struct RolloutColumns {
    pub id: Vec<Uuid>,
    pub body: Vec<Option<String>>,
    pub clip: Vec<Option<String>>,
    pub name: Vec<Option<String>>,
    pub policy: Vec<Option<String>>,
    pub meta: Vec<serde_json::Value>,
}

impl RolloutColumns {
    pub fn push(&mut self, r: &RolloutLine, known: &HashMap<String, String>) -> Uuid {
        let id = Uuid::now_v7();
        self.id.push(id);
        self.body.push(r.text.clone());
        self.clip
            .push(r.clip.as_ref().and_then(|c| known.get(c).cloned()));
        self.name.push(r.clip.clone());
        self.policy.push(r.policy.clone());
        self.meta.push(serde_json::Value::Object(
            r.meta.clone().unwrap_or_default(),
        ));
        id
    }
}

/// A stored clip.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClipInfo {
    pub name: String,
    pub sha256: String,
    pub bytes: usize,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub duration_ms: u32,
}

/// Check a GIF, store it content-addressed with its decoded frames, and give it
/// a name in the project. Re-uploading the same name points it at the new bytes;
/// pairs already imported keep the clip they were imported with.
pub async fn ingest_clip(
    pool: &PgPool,
    store: &ClipStore,
    access: &Access,
    name: &str,
    bytes: bytes::Bytes,
    limits: &ClipLimits,
) -> Result<ClipInfo> {
    if access.project.media_kind != "gif" {
        return Err(Error::invalid("this is a text project; it takes no clips"));
    }
    if !valid_clip_name(name) {
        return Err(Error::invalid(format!(
            "clip name {name:?} must be a plain file name (letters, digits, _ . -)"
        )));
    }
    let (data, limits) = (bytes.clone(), limits.clone());
    let decoded = tokio::task::spawn_blocking(move || {
        let sha = clips::sha256_hex(&data);
        clips::decode_gif(&data, &limits).map(|d| (sha, d))
    })
    .await
    .map_err(anyhow::Error::from)?;
    let (sha, clip) = decoded.map_err(|e| Error::Invalid {
        code: "bad_clip",
        message: format!("{name}: {e}"),
    })?;
    // The object first: a row never points at bytes that are not stored.
    store.put(&sha, bytes.clone()).await?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into clip_blobs (sha256, byte_size, width, height, frame_count, duration_ms,
             frame_side, frames)
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (sha256) do nothing",
    )
    .bind(&sha)
    .bind(bytes.len() as i32)
    .bind(clip.width as i32)
    .bind(clip.height as i32)
    .bind(clip.frame_count as i32)
    .bind(clip.duration_ms as i32)
    .bind(clips::FRAME_SIDE as i32)
    .bind(&clip.frames)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into project_clips (project_id, name, sha256) values ($1, $2, $3)
         on conflict (project_id, name) do update set sha256 = excluded.sha256",
    )
    .bind(access.project.id)
    .bind(name)
    .bind(&sha)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ClipInfo {
        name: name.to_owned(),
        sha256: sha,
        bytes: bytes.len(),
        width: clip.width,
        height: clip.height,
        frames: clip.frame_count,
        duration_ms: clip.duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let body = concat!(
            r#"{"prompt": "p", "a": {"text": "x"}, "b": {"text": "y"}}"#,
            "\n",
            "\n",
            r#"{"prompt": "p", "a": {"text": "x"}}"#,
            "\n",
            "not json\n",
            r#"{"id": "1", "prompt": "p", "a": {"text": "x"}, "b": {"clip": "c.gif"}}"#,
            "\n",
            r#"{"id": "2", "prompt": "p", "a": {"text": "x", "clip": "c.gif"}, "b": {"text": "y"}}"#,
            "\n",
            r#"{"id": "2", "prompt": "p", "a": {"text": "x"}, "b": {"text": "y"}, "extra": 1}"#,
            "\n",
        );
        let mut bytes = body.as_bytes().to_vec();
        bytes.extend_from_slice(b"{\"prompt\": \"\xff\"}\n");
        let errors = parse(&bytes, "text").unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8], "{errors:?}");
        assert!(errors[0].message.contains("missing field `b`"));
        assert!(errors[2].message.contains("text project"));
        assert!(errors[3].message.contains("exactly one"));
        assert!(errors[4].message.contains("unknown field"));
        assert!(errors[5].message.contains("UTF-8"));
    }

    #[test]
    fn duplicate_ids_in_one_file_are_refused() {
        let line = r#"{"id": "x", "prompt": "p", "a": {"text": "x"}, "b": {"text": "y"}}"#;
        let errors = parse(format!("{line}\n{line}\n").as_bytes(), "text").unwrap_err();
        assert_eq!(
            errors,
            [LineError {
                line: 2,
                message: "id \"x\" appears more than once in this file".into()
            }]
        );
    }

    #[test]
    fn clip_names_cannot_escape() {
        assert!(valid_clip_name("run-1_a.gif"));
        for bad in [
            "../etc/passwd",
            "a/b.gif",
            ".hidden",
            "",
            "a b.gif",
            "c:\\x.gif",
        ] {
            assert!(!valid_clip_name(bad), "{bad}");
        }
    }
    #[test]
    fn mutated_imports_are_refused_line_by_line_or_accepted_valid() {
        // Random edits of a valid file through the import's parser: it never panics; a refusal
        // names lines that exist, each with a message; what it accepts passes the line checks.
        let body = concat!(
            r#"{"id": "p1", "prompt": "Explain TCP slow start.", "a": {"text": "It ramps up."}, "b": {"text": "It doubles the window each RTT."}}"#,
            "\n",
            r#"{"id": "p2", "prompt": "Walk to the flag.", "a": {"clip": "walk-1.gif", "policy": "ckpt-3"}, "b": {"clip": "walk-2.gif"}, "meta": {"k": [1, 2]}}"#,
            "\n",
            r#"{"prompt": "Ünïcödé ✓", "a": {"text": "\u00e9\n"}, "b": {"text": "y"}}"#,
            "\n",
        )
        .as_bytes();
        crate::mutate::exercise(&[body], 3000, 0x1A9E, crate::fuzzing::pairs_file);
    }
}
