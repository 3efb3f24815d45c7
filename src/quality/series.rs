//! A rater's figures day by day, for the rater page's chart and the per-rater API.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::Date;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    detectors::{Proportion, median},
    report::{self, Index, Obs, RaterQuality, category, loo_flags},
};
use crate::error::{Error, Result};

/// One day of a rater's first answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayPoint {
    pub day: Date,
    pub judgments: usize,
    /// Agreement with the other raters' majority.
    pub majority_agreement: Proportion,
    /// Share of "left" among left/right answers.
    pub left: Proportion,
    pub median_ms: Option<f64>,
}

/// A judgment as the day series reads it: day, agreement with the majority, side pressed, time.
type Answer<'a> = (Date, Option<bool>, &'a str, Option<i32>);

/// Day-by-day figures of every rater, from the project's judgments in time order: the
/// leave-one-out flags once for all raters, then one pass grouped by rater.
pub fn all_days(obs: &[Obs]) -> HashMap<Uuid, Vec<DayPoint>> {
    let idx = Index::new(obs);
    let flags = loo_flags(&idx.ratings(obs, |_| true));
    let mut by_rater = HashMap::<Uuid, Vec<Answer>>::new();
    for o in obs.iter().filter(|o| o.kind != "repeat") {
        let agrees = category(&o.choice).and_then(|_| {
            flags
                .get(&(idx.pairs[&o.pair], idx.raters[&o.rater]))
                .copied()
        });
        by_rater.entry(o.rater).or_default().push((
            o.at.date(),
            agrees,
            &o.displayed,
            o.duration_ms,
        ));
    }
    by_rater
        .into_iter()
        .map(|(rater, acc)| (rater, points(&acc)))
        .collect()
}

/// Day-by-day figures of one rater, from the project's judgments in time order.
pub fn days(obs: &[Obs], rater: Uuid) -> Vec<DayPoint> {
    all_days(obs).remove(&rater).unwrap_or_default()
}

fn points(acc: &[Answer]) -> Vec<DayPoint> {
    let mut out: Vec<DayPoint> = vec![];
    for chunk in acc.chunk_by(|a, b| a.0 == b.0) {
        let count = |f: &dyn Fn(&Answer) -> Option<bool>| {
            let v: Vec<bool> = chunk.iter().filter_map(f).collect();
            Proportion::new(v.iter().filter(|&&x| x).count(), v.len())
        };
        let times: Vec<f64> = chunk.iter().filter_map(|c| c.3).map(f64::from).collect();
        out.push(DayPoint {
            day: chunk[0].0,
            judgments: chunk.len(),
            majority_agreement: count(&|c| c.1),
            left: count(&|c| match c.2 {
                "left" => Some(true),
                "right" => Some(false),
                _ => None,
            }),
            median_ms: median(&times),
        });
    }
    out
}

/// A rater's row of the report and their days, by name.
pub async fn rater(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
) -> Result<(RaterQuality, Vec<DayPoint>)> {
    let (obs, raters) = report::load(&mut *pool.acquire().await?, project_id).await?;
    let excluded = raters.iter().filter(|r| r.excluded).map(|r| r.id).collect();
    let report = report::analyse(&obs, &raters, &excluded);
    let row = report
        .raters
        .into_iter()
        .find(|r| r.name == name)
        .ok_or(Error::NotFound("rater"))?;
    let days = days(&obs, row.id);
    Ok((row, days))
}

/// A judgment as the rater page and the lists behind the figures show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recent {
    pub assignment: Uuid,
    pub pair: Uuid,
    pub external_id: Option<String>,
    pub displayed: String,
    pub choice: String,
    pub kind: String,
    pub gold: Option<String>,
    pub duration_ms: Option<i32>,
    pub at: String,
}

/// One side of a pair on the pair page.
#[derive(Debug, Clone)]
pub struct Side {
    /// a or b: which rollout this is.
    pub rollout: &'static str,
    pub text: Option<String>,
    pub clip_url: Option<String>,
}

/// A pair as one rater saw it (sides as in their assignment), or in canonical order.
#[derive(Debug, Clone)]
pub struct PairView {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub prompt: String,
    pub gold: Option<String>,
    /// Left, then right.
    pub sides: [Side; 2],
    /// The rater, their kind of assignment and what they pressed, when viewed as theirs.
    pub seen_by: Option<(String, String, Option<String>)>,
    /// Every answer to the pair: rater, kind, as pressed, canonical, assignment.
    pub answers: Vec<(String, String, String, String, Uuid)>,
}

pub async fn pair_view(
    pool: &PgPool,
    project_id: Uuid,
    pair: Uuid,
    assignment: Option<Uuid>,
) -> Result<PairView> {
    type Row = (
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let (external_id, prompt, gold, a_text, a_clip, b_text, b_clip): Row = sqlx::query_as(
        "select c.external_id, c.prompt, c.gold, ra.body, ra.clip_sha256, rb.body, rb.clip_sha256
         from comparisons c
         join rollouts ra on ra.id = c.rollout_a join rollouts rb on rb.id = c.rollout_b
         where c.id = $1 and c.project_id = $2",
    )
    .bind(pair)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("pair"))?;
    let seen: Option<(bool, String, String, Option<String>)> = match assignment {
        Some(id) => Some(
            sqlx::query_as(
                "select a.left_is_a, u.name, a.kind, j.displayed_choice
                 from assignments a join users u on u.id = a.rater_id
                 left join judgments j on j.assignment_id = a.id
                 where a.id = $1 and a.comparison_id = $2",
            )
            .bind(id)
            .bind(pair)
            .fetch_optional(pool)
            .await?
            .ok_or(Error::NotFound("assignment"))?,
        ),
        None => None,
    };
    let answers = sqlx::query_as(
        "select u.name, j.kind, j.displayed_choice, j.choice, j.assignment_id
         from judgments j join users u on u.id = j.rater_id
         where j.comparison_id = $1 order by j.created_at",
    )
    .bind(pair)
    .fetch_all(pool)
    .await?;
    let side = |rollout, text, clip: Option<String>| Side {
        rollout,
        text,
        clip_url: clip.map(|sha| format!("/api/v1/clips/{sha}")),
    };
    let (a, b) = (side("a", a_text, a_clip), side("b", b_text, b_clip));
    let left_is_a = seen.as_ref().is_none_or(|s| s.0);
    let sides = if left_is_a { [a, b] } else { [b, a] };
    Ok(PairView {
        id: pair,
        external_id,
        prompt,
        gold,
        sides,
        seen_by: seen.map(|(_, name, kind, pressed)| (name, kind, pressed)),
        answers,
    })
}
