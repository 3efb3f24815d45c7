//! The lead's quality actions from the quality pages: the gold and repeat rates, gold
//! answers, promoting unanimous pairs, pausing and excluding raters. Each form carries the
//! session's CSRF token; each action is audit-logged by `quality::actions`.

use uuid::Uuid;

use super::*;
use crate::quality::actions::{self, QualitySettings};

async fn manage(state: &AppState, s: &PageSession, slug: &str, csrf: &str) -> PageResult<Access> {
    s.check_csrf(csrf)?;
    Ok(projects::access(&state.pool, s.user(), slug)
        .await?
        .require_manage()?)
}

#[derive(Deserialize)]
pub(super) struct SettingsForm {
    csrf: String,
    gold_rate: String,
    repeat_rate: String,
    #[serde(default)]
    reliability_weighting: Option<String>,
}

pub(super) async fn settings(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<SettingsForm>,
) -> PageResult {
    let access = manage(&state, &s, &slug, &f.csrf).await?;
    let rate = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| Error::invalid("rates are numbers between 0 and 0.5"))
    };
    let settings = QualitySettings {
        gold_rate: rate(&f.gold_rate)?,
        repeat_rate: rate(&f.repeat_rate)?,
        reliability_weighting: f.reliability_weighting.is_some(),
    };
    actions::update_settings(&state.pool, &access, settings).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/quality")).into_response())
}

#[derive(Deserialize)]
pub(super) struct PromoteForm {
    csrf: String,
    min_answers: String,
}

pub(super) async fn promote(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    Form(f): Form<PromoteForm>,
) -> PageResult {
    let access = manage(&state, &s, &slug, &f.csrf).await?;
    let n = f
        .min_answers
        .trim()
        .parse()
        .map_err(|_| Error::invalid("a whole number of answers"))?;
    actions::promote_unanimous(&state.pool, &access, n).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/quality")).into_response())
}

#[derive(Deserialize)]
pub(super) struct GoldForm {
    csrf: String,
    /// a, b, tie, or empty to unmark.
    answer: String,
}

pub(super) async fn gold(
    State(state): State<AppState>,
    s: PageSession,
    Path((slug, id)): Path<(String, Uuid)>,
    Form(f): Form<GoldForm>,
) -> PageResult {
    let access = manage(&state, &s, &slug, &f.csrf).await?;
    let answer = Some(f.answer.as_str()).filter(|a| !a.is_empty());
    actions::set_gold(&state.pool, &access, id, answer).await?;
    Ok(Redirect::to(&format!("/projects/{slug}/pairs/{id}")).into_response())
}

#[derive(Deserialize)]
pub(super) struct ToggleForm {
    csrf: String,
    /// "1" to pause or exclude, "0" to undo.
    on: String,
}

/// Pause or resume (`pause`), exclude or take back (`exclusion`) a rater.
pub(super) async fn rater_action(
    State(state): State<AppState>,
    s: PageSession,
    Path((slug, name, action)): Path<(String, String, String)>,
    Form(f): Form<ToggleForm>,
) -> PageResult {
    let access = manage(&state, &s, &slug, &f.csrf).await?;
    let on = f.on == "1";
    match action.as_str() {
        "pause" => actions::set_paused(&state.pool, &access, &name, on).await?,
        "exclusion" => {
            actions::set_excluded(&state.pool, &access, &name, on).await?;
        }
        _ => return Err(Error::NotFound("action").into()),
    }
    Ok(Redirect::to(&format!("/projects/{slug}/quality/raters/{name}")).into_response())
}
