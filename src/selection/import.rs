//! Import of single rollouts in groups (no fixed pairs), one a line:
//! `{"id"?, "group", "prompt", "rollout": {"text"|"clip", "policy"?, "meta"?}}`.
//!
//! The same guarantees as the pair import (`crate::import`): all or nothing,
//! every bad line reported with its number, and lines whose `id` the project
//! already has are skipped. After the commit the generator tops the project's
//! queue up with pairs drawn within the groups.

use std::collections::HashSet;

use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::{Error, LineError, Result},
    import::{self, ImportReport, RolloutColumns, RolloutLine},
    projects::{self, Access},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupLine {
    #[serde(default)]
    id: Option<String>,
    group: String,
    prompt: String,
    rollout: RolloutLine,
}

/// Is this body a file of single rollouts? Its first non-blank line decides:
/// an object with a `rollout` key. A file mixing the two shapes is then
/// refused line by line by whichever parser reads it.
pub fn is_rollouts_file(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .is_some_and(|v| v.get("rollout").is_some())
}

/// [`parse`] for the fuzzing checks: each accepted rollout's line, group and rollout.
pub(crate) fn parse_rollouts(
    body: &[u8],
    media_kind: &str,
) -> std::result::Result<Vec<(usize, String, RolloutLine)>, Vec<LineError>> {
    let rollouts = parse(body, media_kind)?;
    Ok(rollouts
        .into_iter()
        .map(|(line, r)| (line, r.group, r.rollout))
        .collect())
}

/// Check every line; return the rollouts with their line numbers, or every problem.
fn parse(
    body: &[u8],
    media_kind: &str,
) -> std::result::Result<Vec<(usize, GroupLine)>, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut rollouts = Vec::new();
    let mut ids = HashSet::new();
    for (line, text) in import::split_lines(body, &mut errors) {
        let mut err = |message: String| errors.push(LineError { line, message });
        let r: GroupLine = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) if text.contains("\"a\"") && !text.contains("\"rollout\"") => {
                err(format!(
                    "a pair line in a file of rollouts; import pairs as a separate file ({e})"
                ));
                continue;
            }
            Err(e) => {
                err(format!("invalid rollout: {e}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        if let Some(id) = &r.id {
            if id.is_empty() || id.len() > 200 {
                problems.push("id must be 1-200 characters".to_string());
            } else if !ids.insert(id.clone()) {
                problems.push(format!("id {id:?} appears more than once in this file"));
            }
        }
        if r.group.trim().is_empty() || r.group.len() > 200 {
            problems.push("group must be 1-200 characters".to_string());
        }
        if let Some(problem) = import::check_rollout("rollout", &r.rollout, media_kind) {
            problems.push(problem);
        }
        if problems.is_empty() {
            rollouts.push((line, r));
        } else {
            err(problems.join("; "));
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    // One prompt per group: a group is "the same prompt or task".
    let mut prompts = std::collections::HashMap::new();
    for (line, r) in &rollouts {
        let first = prompts.entry(r.group.as_str()).or_insert(r.prompt.as_str());
        if *first != r.prompt {
            errors.push(LineError {
                line: *line,
                message: format!("group {:?} has another prompt on an earlier line", r.group),
            });
        }
    }
    if errors.is_empty() {
        Ok(rollouts)
    } else {
        Err(errors)
    }
}

/// Import a JSONL body of rollouts into a project the caller manages, then
/// generate pairs within its groups.
pub async fn import(pool: &PgPool, access: &Access, body: &[u8]) -> Result<ImportReport> {
    let project = &access.project;
    let lines = parse(body, &project.media_kind).map_err(Error::Import)?;

    let wanted: Vec<String> = lines
        .iter()
        .filter_map(|(_, r)| r.rollout.clip.clone())
        .collect();
    let known = import::known_clips(pool, project.id, &wanted).await?;
    let missing: Vec<LineError> = lines
        .iter()
        .filter_map(|(line, r)| {
            let c = r
                .rollout
                .clip
                .as_ref()
                .filter(|c| !known.contains_key(*c))?;
            Some(LineError {
                line: *line,
                message: format!("clip(s) not uploaded to this project: {c}"),
            })
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Import(missing));
    }

    let mut tx = pool.begin().await?;
    let ids: Vec<&str> = lines.iter().filter_map(|(_, r)| r.id.as_deref()).collect();
    let existing =
        import::lock_and_find_known(&mut tx, project.id, import::Known::Rollouts, &ids).await?;
    let total = lines.len();
    let fresh: Vec<GroupLine> = lines
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.id.as_ref().is_none_or(|id| !existing.contains(id)))
        .collect();

    let mut cols = RolloutColumns::default();
    let (mut ext, mut group, mut prompt) = (vec![], vec![], vec![]);
    for r in &fresh {
        let _: Uuid = cols.push(&r.rollout, &known);
        ext.push(r.id.clone());
        group.push(r.group.clone());
        prompt.push(r.prompt.clone());
    }
    sqlx::query(
        "insert into rollouts (id, project_id, body, clip_sha256, clip_name, policy, meta,
                               external_id, group_key, prompt)
         select id, $1, body, clip, name, policy, meta, ext, grp, prompt
         from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
                     $8::text[], $9::text[], $10::text[])
              as t(id, body, clip, name, policy, meta, ext, grp, prompt)",
    )
    .bind(project.id)
    .bind(&cols.id)
    .bind(&cols.body)
    .bind(&cols.clip)
    .bind(&cols.name)
    .bind(&cols.policy)
    .bind(&cols.meta)
    .bind(&ext)
    .bind(&group)
    .bind(&prompt)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"lines": total, "imported": fresh.len(), "rollouts": true});
    projects::audit(&mut tx, &access.user, project.id, "import", detail).await?;
    tx.commit().await?;

    let generated = super::generate::top_up(pool, project.id, None).await?;
    Ok(ImportReport {
        lines: total,
        imported: fresh.len(),
        duplicates: total - fresh.len(),
        generated: Some(generated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutated_rollout_files_are_refused_line_by_line_or_accepted_valid() {
        let body = concat!(
            r#"{"id": "r1", "group": "prompt-17", "prompt": "Explain TCP.", "rollout": {"text": "It ramps up.", "policy": "ckpt-3"}}"#,
            "\n",
            r#"{"group": "walk", "prompt": "Walk to the flag.", "rollout": {"clip": "walk-1.gif", "meta": {"k": [1, 2]}}}"#,
            "\n",
            r#"{"group": "ü", "prompt": "Ünïcödé ✓", "rollout": {"text": "\u00e9\n"}}"#,
            "\n",
        )
        .as_bytes();
        crate::mutate::exercise(&[body], 3000, 0x5E1E, crate::fuzzing::rollouts_file);
    }

    #[test]
    fn every_bad_rollout_line_is_reported() {
        let body = [
            r#"{"group": "g", "prompt": "p", "rollout": {"text": "x", "policy": "c1"}}"#,
            r#"{"group": "", "prompt": "p", "rollout": {"text": "x"}}"#,
            r#"{"group": "g", "prompt": "p", "rollout": {"clip": "a.gif"}}"#,
            r#"{"prompt": "p", "a": {"text": "x"}, "b": {"text": "y"}}"#,
            r#"{"id": "1", "group": "g", "prompt": "p", "rollout": {"text": "y"}}"#,
            r#"{"id": "1", "group": "g", "prompt": "p", "rollout": {"text": "z"}}"#,
            r#"{"group": "g", "prompt": "p", "rollout": {"text": "z"}, "x": 1}"#,
        ]
        .join("\n");
        assert!(is_rollouts_file(body.as_bytes()));
        let errors = parse(body.as_bytes(), "text").unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 6, 7], "{errors:?}");
        assert!(errors[0].message.contains("group"));
        assert!(errors[1].message.contains("text project"));
        assert!(errors[2].message.contains("pair line"));
        assert!(errors[3].message.contains("more than once"));
        assert!(errors[4].message.contains("unknown field"));
    }

    #[test]
    fn a_group_has_one_prompt() {
        let body = concat!(
            r#"{"group": "g", "prompt": "p", "rollout": {"text": "x"}}"#,
            "\n",
            r#"{"group": "g", "prompt": "q", "rollout": {"text": "y"}}"#,
        );
        let errors = parse(body.as_bytes(), "text").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
    }
}
