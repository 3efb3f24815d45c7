//! Exports: a project's judgments as datasets researchers train on.
//!
//! One pipeline serves the CLI, the streaming API and the export job: [`plan`]
//! validates the filters (a bad one is a 400 before anything is written), then
//! [`stream::start`] runs one SQL query with `fetch` (rows come off the socket
//! as they are consumed), encodes them in batches and hands out `Bytes` chunks
//! through a small bounded channel, so memory stays flat however large the
//! export. `files` writes a stream to disk with its manifest and dataset card.
//!
//! Formats (schemas in the README): raw judgments as JSONL or CSV, and
//! preferences (one row per pair, majority vote) as JSONL or Parquet; a bundle
//! (tar) adds the GIF clips preference rows refer to.

// The SQL the queries share. Macros, so each query is still one `&'static str`
// (concat!) and every filter a bound parameter, never spliced SQL.

/// The judgment filters. Binds: $1 project, $2 since, $3 until, $4 raters (empty:
/// all), $5 raters left out (named, and those a lead excluded unless asked for),
/// $6 include gold pairs, $7 policies (empty: all). Needs `j`, `c`, `ra`, `rb` in scope.
macro_rules! judgment_filters {
    () => {
        " where j.project_id = $1 and c.project_id = $1
            and ($2::timestamptz is null or j.created_at >= $2)
            and ($3::timestamptz is null or j.created_at < $3)
            and (cardinality($4::uuid[]) = 0 or j.rater_id = any($4))
            and not (j.rater_id = any($5::uuid[]))
            and ($6 or c.gold is null)
            and (cardinality($7::text[]) = 0 or ra.policy = any($7) or rb.policy = any($7)) "
    };
}

/// Bind the filter parameters $1..$7 of `judgment_filters!` in order, to a `query` or a
/// `query_as` alike (their `bind`s are separate methods, so a macro rather than a function).
macro_rules! bind_filters {
    ($q:expr, $plan:expr) => {
        $q.bind($plan.project.id)
            .bind($plan.since)
            .bind($plan.until)
            .bind(&$plan.raters)
            .bind(&$plan.exclude)
            .bind($plan.args.include_gold)
            .bind(&$plan.args.policy)
    };
}

/// Pairs in import order, their rollouts, then their judgments (`c`, `ra`, `rb`, `j`).
macro_rules! judgment_joins {
    () => {
        " from comparisons c
          join rollouts ra on ra.id = c.rollout_a
          join rollouts rb on rb.id = c.rollout_b
          join judgments j on j.comparison_id = c.id "
    };
}

pub mod card;
pub mod files;
pub mod job;
pub mod parquet;
pub mod raw;
pub mod rows;
pub mod stream;
pub mod weights;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    projects::Project,
};

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One JSON object a line per judgment: pair, both rollouts, canonical
    /// choice, side shown, strength, rationale, flags, timings, rater.
    #[default]
    RawJsonl,
    /// One JSON object a line per pair: prompt, chosen, rejected, votes,
    /// agreement, margin, aggregation ("majority" or "reliability").
    PreferencesJsonl,
    /// The preference rows as a Parquet file (Snappy pages, one row group per 16,384 rows).
    PreferencesParquet,
    /// The raw judgments as CSV (RFC 4180, header row, same columns as raw-jsonl).
    Csv,
    /// A tar of preferences.jsonl, its manifest and card, and the GIF clips the rows
    /// reference under clips/ (for GIF projects; CLI and export job only).
    Bundle,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::RawJsonl => "raw-jsonl",
            Format::PreferencesJsonl => "preferences-jsonl",
            Format::PreferencesParquet => "preferences-parquet",
            Format::Csv => "csv",
            Format::Bundle => "bundle",
        }
    }

    /// The data file's name when the output is a folder (and in the API's
    /// Content-Disposition).
    pub fn file_name(self) -> &'static str {
        match self {
            Format::RawJsonl => "judgments.jsonl",
            Format::PreferencesJsonl => "preferences.jsonl",
            Format::PreferencesParquet => "preferences.parquet",
            Format::Csv => "judgments.csv",
            Format::Bundle => "bundle.tar",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::RawJsonl | Format::PreferencesJsonl => "application/x-ndjson",
            Format::PreferencesParquet => "application/vnd.apache.parquet",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Bundle => "application/x-tar",
        }
    }

    /// One row per pair (aggregated) rather than one per judgment.
    pub fn is_preferences(self) -> bool {
        matches!(
            self,
            Format::PreferencesJsonl | Format::PreferencesParquet | Format::Bundle
        )
    }
}

/// How a pair's votes become one preference (preference formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Every vote counts 1.
    #[default]
    Majority,
    /// Every vote counts its rater's reliability weight: the project's Dawid–Skene
    /// estimate, rescaled as reliability-weighted training uses it (`quality::weights`).
    Reliability,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Majority => "majority",
            Aggregation::Reliability => "reliability",
        }
    }
}

/// What to export: the format and the filters. The same struct is the CLI's
/// flags, the API's query string and the page's form; lists are comma-separated
/// in query strings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args, utoipa::IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportArgs {
    /// raw-jsonl: one row per judgment; preferences-jsonl / preferences-parquet:
    /// one row per pair (see aggregation); csv: judgments as CSV; bundle: tar of
    /// preferences.jsonl + the GIF clips it references.
    #[arg(long, value_enum, default_value = "raw-jsonl")]
    #[param(value_type = String, example = "preferences-jsonl")]
    pub format: Format,
    /// Only judgments made at or after this time: YYYY-MM-DD (UTC midnight) or RFC 3339.
    #[arg(long)]
    #[serde(deserialize_with = "empty_is_none")]
    pub since: Option<String>,
    /// Only judgments made before this time (exclusive): YYYY-MM-DD or RFC 3339.
    #[arg(long)]
    #[serde(deserialize_with = "empty_is_none")]
    pub until: Option<String>,
    /// Only these raters (login name or export pseudonym; repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "comma_list")]
    #[param(value_type = Option<String>)]
    pub rater: Vec<String>,
    /// Leave these raters out (login name or export pseudonym).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "comma_list")]
    #[param(value_type = Option<String>)]
    pub exclude_rater: Vec<String>,
    /// Keep judgments of raters a lead excluded from the project (left out by default).
    #[arg(long)]
    pub include_excluded: bool,
    /// Keep gold (known-answer) pairs (left out by default).
    #[arg(long)]
    pub include_gold: bool,
    /// Preferences: how votes are combined. majority: one vote each; reliability: each
    /// vote weighs its rater's reliability weight (Dawid–Skene over the project's
    /// judgments, as reliability-weighted training uses; listed in the manifest).
    #[arg(long, value_enum, default_value = "majority")]
    #[param(value_type = Option<String>, example = "reliability")]
    pub aggregation: Aggregation,
    /// Preferences: only pairs with at least this many votes (a, b or tie; can't-tell
    /// does not count). Default 1.
    #[arg(long)]
    #[param(value_type = Option<u32>)]
    #[serde(deserialize_with = "empty_is_none_parse")]
    pub min_votes: Option<u32>,
    /// Preferences: only pairs whose winning answer has at least this share of the
    /// votes (0 to 1; e.g. 0.66 keeps 2-of-3 majorities and better; with
    /// reliability aggregation, the share of the vote weight).
    #[arg(long)]
    #[param(value_type = Option<f64>)]
    #[serde(deserialize_with = "empty_is_none_parse")]
    pub min_agreement: Option<f64>,
    /// Only pairs where either rollout came from one of these policies (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "comma_list")]
    #[param(value_type = Option<String>)]
    pub policy: Vec<String>,
    /// Preferences: keep pairs whose majority answer is "tie" (chosen/rejected then
    /// in stored order, winner "tie", margin 0).
    #[arg(long)]
    pub keep_ties: bool,
    /// Preferences: keep pairs where a and b got equally many votes (winner "split").
    #[arg(long)]
    pub keep_splits: bool,
    /// Name raters by login name instead of a per-project pseudonym (project leads
    /// and admins only; the CLI runs as the operator).
    #[arg(long)]
    pub real_identities: bool,
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

/// Numbers from a query string or form (where an empty field means "not set"),
/// or from JSON (job payloads, the job API).
fn empty_is_none_parse<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(other) => return Err(serde::de::Error::custom(format!("not a number: {other}"))),
    };
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// A list: comma-separated in a query string or form, or a JSON array (job payloads).
fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let items = match Option::<List>::deserialize(d)? {
        None => vec![],
        Some(List::One(s)) => vec![s],
        Some(List::Many(v)) => v,
    };
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A validated export: the filters resolved to what the SQL binds.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project: Project,
    pub args: ExportArgs,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub raters: Vec<Uuid>,
    pub exclude: Vec<Uuid>,
    pub min_votes: u32,
    pub min_agreement: f64,
    /// Per-project secret behind rater pseudonyms.
    pub salt: Uuid,
}

fn bad(message: impl Into<String>) -> Error {
    Error::BadRequest {
        code: "bad_filter",
        message: message.into(),
    }
}

/// Parse a filter date: `YYYY-MM-DD` (UTC midnight) or RFC 3339.
pub fn parse_time(name: &str, s: &str) -> Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    time::Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            bad(format!(
                "{name}: {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

/// Check the filters and resolve raters; nothing is read or written yet.
/// `may_identify`: whether the caller may see raters' login names.
pub async fn plan(
    pool: &PgPool,
    project: Project,
    args: ExportArgs,
    may_identify: bool,
) -> Result<Plan> {
    if args.real_identities && !may_identify {
        return Err(Error::forbidden(
            "only the project's leads and admins may export raters' names",
        ));
    }
    if args.format == Format::Bundle && project.media_kind != "gif" {
        return Err(bad("bundle is for GIF projects; use preferences-jsonl"));
    }
    let since = args
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(bad("since must be before until"));
    }
    let min_agreement = args.min_agreement.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_agreement) {
        return Err(bad("min_agreement must be between 0 and 1"));
    }
    let preference_only = args.aggregation != Aggregation::Majority
        || args.min_votes.is_some()
        || args.min_agreement.is_some()
        || args.keep_ties
        || args.keep_splits;
    if preference_only && !args.format.is_preferences() {
        return Err(bad(
            "aggregation, min_votes, min_agreement, keep_ties and keep_splits apply to preference formats only",
        ));
    }
    let salt: Uuid = sqlx::query_scalar("select pseudonym_salt from projects where id = $1")
        .bind(project.id)
        .fetch_one(pool)
        .await?;
    let members: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "select u.id, u.name, m.excluded_at is not null from project_members m
         join users u on u.id = m.user_id where m.project_id = $1",
    )
    .bind(project.id)
    .fetch_all(pool)
    .await?;
    let resolve = |names: &[String]| -> Result<Vec<Uuid>> {
        names
            .iter()
            .map(|n| {
                members
                    .iter()
                    .find(|(id, name, _)| name == n || pseudonym(salt, *id) == *n)
                    .map(|(id, _, _)| *id)
                    .ok_or_else(|| bad(format!("no rater {n:?} in this project")))
            })
            .collect()
    };
    let raters = resolve(&args.rater)?;
    let mut exclude = resolve(&args.exclude_rater)?;
    // Raters a lead excluded: out unless asked for (a short list, bound like the named ones).
    if !args.include_excluded {
        exclude.extend(members.iter().filter(|m| m.2).map(|m| m.0));
    }
    Ok(Plan {
        since,
        until,
        raters,
        exclude,
        min_votes: args.min_votes.unwrap_or(1).max(1),
        min_agreement,
        salt,
        project,
        args,
    })
}

/// A rater's stable name in this project's exports: `r-` and 12 hex digits of
/// sha256(project salt ‖ user id). The salt is secret and per project, so the
/// same person has unrelated pseudonyms in two projects and a user id cannot be
/// hashed to find their rows.
pub fn pseudonym(salt: Uuid, rater: Uuid) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(rater.as_bytes());
    format!("r-{}", &hex::encode(h.finalize())[..12])
}

impl Plan {
    /// The filters as the manifest records them.
    pub fn filters_json(&self) -> serde_json::Value {
        let a = &self.args;
        let mut filters = serde_json::json!({
            "since": self.since.and_then(|t| t.format(&Rfc3339).ok()),
            "until": self.until.and_then(|t| t.format(&Rfc3339).ok()),
            "raters": a.rater,
            "exclude_raters": a.exclude_rater,
            "include_excluded": a.include_excluded,
            "include_gold": a.include_gold,
            "min_votes": self.min_votes,
            "min_agreement": self.min_agreement,
            "policies": a.policy,
            "keep_ties": a.keep_ties,
            "keep_splits": a.keep_splits,
            "identities": if a.real_identities { "real" } else { "pseudonymous" },
        });
        if a.format.is_preferences() {
            filters["aggregation"] = a.aggregation.as_str().into();
        }
        filters
    }
}
