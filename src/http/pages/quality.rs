//! The quality pages: the project's quality overview with the per-rater table and the
//! agreement heatmap, a rater's page with their series and the lead's actions, the error
//! dashboard, and a pair as a rater saw it. Leads and researchers read; leads act.

use std::collections::HashMap;

use uuid::Uuid;

use super::*;
use crate::quality::{
    actions::{self, ExclusionPreview, QualitySettings},
    behind::{self, Behind},
    detectors::{Proportion, Tested},
    model_check::{self, ModelDisagreement},
    report::{self, Flag, GoldFailure, ProjectQuality, RaterQuality, SplitPair},
    series::{self, Recent},
    store::{self, Freshness, Lists},
};

/// A page's line on where its figures come from and how fresh they are.
pub(super) struct FreshnessLine {
    text: String,
    stale: bool,
}

impl From<&Freshness> for FreshnessLine {
    fn from(f: &Freshness) -> Self {
        FreshnessLine {
            text: f.describe(),
            stale: f.stale,
        }
    }
}

/// Shown instead of a quality page while a large project's first report is computed.
#[derive(Template, WebTemplate)]
#[template(path = "quality_computing.html")]
pub(super) struct ComputingPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    freshness: FreshnessLine,
}

fn computing(s: &PageSession, project: Project, f: &Freshness) -> Response {
    let c = chrome(s);
    ComputingPage {
        user: c.user,
        csrf: c.csrf,
        project,
        freshness: f.into(),
    }
    .into_response()
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.filter(|x| x.is_finite())
        .map(|f| format!("{f:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// A figure as a table cell: its text and the value it sorts by.
pub(super) struct Cell {
    text: String,
    sort: String,
    /// The judgments behind the figure, linked from it.
    show: Behind,
}

impl Cell {
    fn share(p: &Proportion, behind: Behind) -> Self {
        Cell {
            text: p.describe(),
            sort: num(p.share, 4),
            show: behind,
        }
    }
    fn value(x: Option<f64>, digits: usize, behind: Behind) -> Self {
        Cell {
            text: num(x, digits),
            sort: num(x, 6),
            show: behind,
        }
    }
    fn tested(t: &Tested, behind: Behind) -> Self {
        Cell {
            text: format!("{} p={:.2e}", t.share.describe(), t.p_value),
            sort: num(t.share.share, 4),
            show: behind,
        }
    }
}

/// A figure of the project or rater table: label, value and the judgments behind it.
pub(super) type Figure = (&'static str, String, Behind);

/// A rater's row of the table.
pub(super) struct RaterRow {
    name: String,
    excluded: bool,
    paused: bool,
    judgments: usize,
    cells: Vec<Cell>,
    flags: Vec<Flag>,
}

impl RaterRow {
    fn from(r: &RaterQuality) -> Self {
        RaterRow {
            name: r.name.clone(),
            excluded: r.excluded,
            paused: r.paused,
            judgments: r.judgments,
            cells: vec![
                Cell::share(&r.majority_agreement, Behind::Answers),
                Cell::share(&r.gold_accuracy, Behind::Gold),
                Cell::share(&r.self_consistency, Behind::Repeats),
                Cell::value(r.reliability, 3, Behind::Answers),
                Cell::tested(&r.position, Behind::Left),
                r.length.as_ref().map_or_else(
                    || Cell::value(None, 0, Behind::Longer),
                    |t| Cell::tested(t, Behind::Longer),
                ),
                Cell::share(&r.ties, Behind::Tie),
                Cell::share(&r.cant_tell, Behind::CantTell),
                Cell::value(r.timing.median_ms, 0, Behind::First),
                Cell::share(&r.timing.too_fast, Behind::Fast),
            ],
            flags: r.flags.clone(),
        }
    }
}

/// The per-rater table's columns, in `RaterRow::cells` order.
const RATER_COLUMNS: [&str; 10] = [
    "Agreement with majority",
    "Gold accuracy",
    "Self-consistency (swapped repeats)",
    "Reliability (Dawid–Skene)",
    "Left share",
    "Longer-text share",
    "Tie rate",
    "Can't-tell rate",
    "Median ms",
    "Faster than floor",
];

#[derive(Template, WebTemplate)]
#[template(path = "quality.html")]
pub(super) struct QualityPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    can_manage: bool,
    q: ProjectQuality,
    columns: Vec<&'static str>,
    rows: Vec<RaterRow>,
    heatmap: Option<String>,
    settings: QualitySettings,
    summary: Vec<Figure>,
    fast_ms: i32,
    freshness: FreshnessLine,
}

pub(super) async fn quality_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let (q, freshness) = store::report(&state.pool, access.project.id, Lists::None).await?;
    let Some(q) = q else {
        return Ok(computing(&s, access.project, &freshness));
    };
    let settings = actions::settings(&state.pool, access.project.id).await?;
    let names: Vec<String> = q.raters.iter().map(|r| r.name.clone()).collect();
    let at: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut kappa = vec![vec![None; names.len()]; names.len()];
    for p in &q.rater_pairs {
        let (i, j) = (at[p.a.as_str()], at[p.b.as_str()]);
        kappa[i][j] = p.kappa;
        kappa[j][i] = p.kappa;
    }
    let a = &q.agreement;
    let (first, answers) = (Behind::First, Behind::Answers);
    let summary = vec![
        ("Judgments (first answers)", q.judgments.to_string(), first),
        ("Pairs with 2+ answers", a.pairs.to_string(), answers),
        ("Percent agreement", num(a.percent, 3), answers),
        ("Fleiss' kappa", num(a.fleiss_kappa, 3), answers),
        (
            "Krippendorff's alpha (nominal)",
            num(a.krippendorff_alpha, 3),
            answers,
        ),
        ("Gold accuracy", q.gold_accuracy.describe(), Behind::Gold),
        (
            "Self-consistency on swapped repeats",
            q.self_consistency.describe(),
            Behind::Repeats,
        ),
        (
            "Left share (binomial test against 0.5)",
            Cell::tested(&q.position, Behind::Left).text,
            Behind::Left,
        ),
        (
            "Longer-text share",
            q.length
                .as_ref()
                .map_or("–".into(), |t| Cell::tested(t, Behind::Longer).text),
            Behind::Longer,
        ),
        ("Tie rate", q.ties.describe(), Behind::Tie),
        ("Can't-tell rate", q.cant_tell.describe(), Behind::CantTell),
        ("Median answer time (ms)", num(q.timing.median_ms, 0), first),
        (
            "Answers faster than the floor",
            q.timing.too_fast.describe(),
            Behind::Fast,
        ),
        (
            "Answered before the clips ended",
            q.timing.before_clip_end.describe(),
            Behind::BeforeClipEnd,
        ),
    ];
    let c = chrome(&s);
    Ok(QualityPage {
        user: c.user,
        csrf: c.csrf,
        can_manage: access.can_manage(),
        project: access.project,
        rows: q.raters.iter().map(RaterRow::from).collect(),
        heatmap: crate::http::quality_charts::heatmap(&names, &kappa),
        columns: RATER_COLUMNS.to_vec(),
        q,
        settings,
        summary,
        fast_ms: report::FAST_MS,
        freshness: (&freshness).into(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "quality_rater.html")]
pub(super) struct RaterPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    can_manage: bool,
    r: RaterQuality,
    figures: Vec<Figure>,
    chart: Option<String>,
    recent: Vec<Recent>,
    preview: Option<ExclusionPreview>,
    freshness: FreshnessLine,
}

fn drift_text(d: &crate::quality::detectors::Drift) -> String {
    format!(
        "{} → {} (p = {})",
        d.early.describe(),
        d.late.describe(),
        num(d.p_value, 3)
    )
}

pub(super) async fn rater_page(
    State(state): State<AppState>,
    s: PageSession,
    Path((slug, name)): Path<(String, String)>,
) -> PageResult {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let (found, freshness) = store::rater(&state.pool, access.project.id, &name).await?;
    let Some((r, days)) = found else {
        return Ok(computing(&s, access.project, &freshness));
    };
    // The preview recomputes project agreement twice over every judgment: on the page only
    // where the report itself is computed per request (the API still answers it on demand).
    let preview = match access.can_manage() && freshness.source == "live" {
        true => Some(actions::preview_exclusion(&state.pool, &access, &name).await?),
        false => None,
    };
    let recent = behind::list(&state.pool, access.project.id, Some(r.id), Behind::All).await?;
    let (first, answers) = (Behind::First, Behind::Answers);
    let figures = vec![
        ("Judgments (first answers)", r.judgments.to_string(), first),
        (
            "Agreement with the others' majority",
            r.majority_agreement.describe(),
            answers,
        ),
        ("Gold accuracy", r.gold_accuracy.describe(), Behind::Gold),
        (
            "Self-consistency on swapped repeats",
            r.self_consistency.describe(),
            Behind::Repeats,
        ),
        ("Reliability (Dawid–Skene)", num(r.reliability, 3), answers),
        (
            "Left share",
            Cell::tested(&r.position, Behind::Left).text,
            Behind::Left,
        ),
        (
            "Longer-text share (against the project's level)",
            r.length
                .as_ref()
                .map_or("–".into(), |t| Cell::tested(t, Behind::Longer).text),
            Behind::Longer,
        ),
        ("Tie rate", r.ties.describe(), Behind::Tie),
        ("Can't-tell rate", r.cant_tell.describe(), Behind::CantTell),
        ("Median answer time (ms)", num(r.timing.median_ms, 0), first),
        (
            "Faster than the floor",
            r.timing.too_fast.describe(),
            Behind::Fast,
        ),
        (
            "Answered before the clips ended",
            r.timing.before_clip_end.describe(),
            Behind::BeforeClipEnd,
        ),
        (
            "Drift within sessions (agreement, first → second half)",
            drift_text(&r.session_drift),
            answers,
        ),
        (
            "Drift over days (agreement, first → second half)",
            drift_text(&r.day_drift),
            answers,
        ),
    ];
    let c = chrome(&s);
    Ok(RaterPage {
        user: c.user,
        csrf: c.csrf,
        can_manage: access.can_manage(),
        project: access.project,
        chart: crate::http::quality_charts::rater_days(&days),
        r,
        figures,
        recent,
        preview,
        freshness: (&freshness).into(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "quality_errors.html")]
pub(super) struct ErrorsPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    gold_failures: Vec<GoldFailure>,
    split_pairs: Vec<SplitPair>,
    /// None: the project has no reward model yet.
    model: Option<Vec<(ModelDisagreement, String)>>,
    confident: f64,
    freshness: FreshnessLine,
}

/// Lists are cut at this many rows.
const MAX_ROWS: usize = store::HEAD;

pub(super) async fn errors_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
) -> PageResult {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let (q, freshness) = store::report(&state.pool, access.project.id, Lists::Head).await?;
    let Some(mut q) = q else {
        return Ok(computing(&s, access.project, &freshness));
    };
    let model = model_check::disagreements(
        &state.pool,
        &state.clips,
        &state.models,
        &access.project,
        &q.majority_pairs,
    )
    .await?
    .map(|v| {
        v.into_iter()
            .take(MAX_ROWS)
            .map(|d| {
                let p = format!("{:.3}", d.model_probability);
                (d, p)
            })
            .collect()
    });
    q.gold_failures.truncate(MAX_ROWS);
    q.split_pairs.truncate(MAX_ROWS);
    let c = chrome(&s);
    Ok(ErrorsPage {
        user: c.user,
        csrf: c.csrf,
        project: access.project,
        gold_failures: q.gold_failures,
        split_pairs: q.split_pairs,
        model,
        confident: model_check::CONFIDENT,
        freshness: (&freshness).into(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "quality_judgments.html")]
pub(super) struct JudgmentsPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    rater: Option<String>,
    show: Behind,
    count: i64,
    cap: i64,
    /// More match than are listed.
    more: bool,
    rows: Vec<Recent>,
    kinds: Vec<Behind>,
}

#[derive(Deserialize)]
pub(super) struct JudgmentsQuery {
    #[serde(default)]
    rater: Option<String>,
    #[serde(default)]
    show: Option<String>,
}

/// The judgments behind a figure of the quality pages: the project's (raters not excluded) or
/// one rater's, newest first.
pub(super) async fn judgments_page(
    State(state): State<AppState>,
    s: PageSession,
    Path(slug): Path<String>,
    axum::extract::Query(query): axum::extract::Query<JudgmentsQuery>,
) -> PageResult {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let show = Behind::parse(query.show.as_deref().unwrap_or("first"))?;
    let rater = match query.rater.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => Some((
            behind::rater_id(&state.pool, access.project.id, name).await?,
            name.to_string(),
        )),
        None => None,
    };
    let rater_id = rater.as_ref().map(|r| r.0);
    let rows = behind::list(&state.pool, access.project.id, rater_id, show).await?;
    let count = behind::count(&state.pool, access.project.id, rater_id, show).await?;
    let c = chrome(&s);
    Ok(JudgmentsPage {
        user: c.user,
        csrf: c.csrf,
        project: access.project,
        rater: rater.map(|r| r.1),
        show,
        count,
        cap: behind::COUNT_CAP,
        more: count > rows.len() as i64,
        rows,
        kinds: Behind::ALL.to_vec(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "pair.html")]
pub(super) struct PairPage {
    user: Option<String>,
    csrf: String,
    project: Project,
    can_manage: bool,
    pair: series::PairView,
}

#[derive(Deserialize)]
pub(super) struct PairQuery {
    #[serde(default)]
    assignment: Option<Uuid>,
}

pub(super) async fn pair_page(
    State(state): State<AppState>,
    s: PageSession,
    Path((slug, id)): Path<(String, Uuid)>,
    axum::extract::Query(query): axum::extract::Query<PairQuery>,
) -> PageResult<PairPage> {
    let access = projects::access(&state.pool, s.user(), &slug)
        .await?
        .require_read()?;
    let pair = series::pair_view(&state.pool, access.project.id, id, query.assignment).await?;
    let c = chrome(&s);
    Ok(PairPage {
        user: c.user,
        csrf: c.csrf,
        can_manage: access.can_manage(),
        project: access.project,
        pair,
    })
}
