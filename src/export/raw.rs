//! Raw judgments (raw-jsonl, csv) as two ordered streams merged by pair.
//!
//! Every judgment row repeats its pair's prompt and both rollouts' text. Read as
//! one joined query, that text crossed the wire and was decoded and escaped once
//! per judgment; here one connection streams the pairs with their rollouts and a
//! second the narrow judgments, both in pair order (`c.seq`) and in one snapshot
//! (`pg_export_snapshot`), and the merge writes each pair's text, JSON-escaped
//! once, into each of its judgments' lines. Judgment fields are decoded from the
//! row without allocating. The bytes are those of `serde_json` on [`RawRow`]
//! (the CSV path still serializes that struct; a test compares the two).

use anyhow::Context;
use futures::TryStreamExt;
use sqlx::{PgPool, Row, postgres::PgRow};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::{
    Format, Plan,
    parquet::Shared,
    rows::RawRow,
    stream::{Out, RAW_COLUMNS, Raters, SNAPSHOT_SETTINGS, Summary},
};

/// The filters both queries share (judgment level). Binds as `judgment_filters!`:
/// $1 project, $2 since, $3 until, $4 raters, $5 raters left out, $6 include gold,
/// $7 policies.
macro_rules! judgment_only_filters {
    () => {
        " j.project_id = $1
            and ($2::timestamptz is null or j.created_at >= $2)
            and ($3::timestamptz is null or j.created_at < $3)
            and (cardinality($4::uuid[]) = 0 or j.rater_id = any($4))
            and not (j.rater_id = any($5::uuid[])) "
    };
}

/// Pairs in import order with their rollouts: those the pair filters keep and that
/// have at least one judgment the judgment filters keep.
pub const PAIRS_SQL: &str = concat!(
    "select c.seq, c.id, c.external_id, c.prompt,
        ra.id as a_id, ra.body as a_text, ra.clip_sha256 as a_clip, ra.policy as a_policy,
        rb.id as b_id, rb.body as b_text, rb.clip_sha256 as b_clip, rb.policy as b_policy,
        c.gold is not null as gold
     from comparisons c
     join rollouts ra on ra.id = c.rollout_a
     join rollouts rb on rb.id = c.rollout_b
     where c.project_id = $1 and ($6 or c.gold is null)
       and (cardinality($7::text[]) = 0 or ra.policy = any($7) or rb.policy = any($7))
       and exists (select 1 from judgments j where j.comparison_id = c.id and",
    judgment_only_filters!(),
    ") order by c.seq"
);

/// Judgments by pair in import order, then time and id (a total order), narrow:
/// no text of the pair. Pairs the policy filter drops are skipped in the merge.
pub const JUDGMENTS_SQL: &str = concat!(
    "select c.seq, j.id, j.choice, j.left_is_a, j.displayed_choice, j.strength, j.rationale,
        j.content_flag, j.flag_reason, j.duration_ms, j.replays, j.answered_before_clip_end,
        j.rater_id, j.created_at, j.kind = 'repeat' as repeat
     from comparisons c join judgments j on j.comparison_id = c.id
     where c.project_id = $1 and ($6 or c.gold is null) and",
    judgment_only_filters!(),
    // $7 (policies) is bound to every export query; the merge applies it.
    " and cardinality($7::text[]) >= 0 order by c.seq, j.created_at, j.id"
);

/// One pair of the pairs stream.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Pair {
    seq: i64,
    id: Uuid,
    external_id: Option<String>,
    prompt: String,
    a_id: Uuid,
    a_text: Option<String>,
    a_clip: Option<String>,
    a_policy: Option<String>,
    b_id: Uuid,
    b_text: Option<String>,
    b_clip: Option<String>,
    b_policy: Option<String>,
    gold: bool,
}

fn clip_path(sha: &Option<String>) -> Option<String> {
    sha.as_ref().map(|s| format!("clips/{s}.gif"))
}

/// `"key":value` with serde_json's encoding of the value.
fn field<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, key: &str, value: &T) {
    buf.push(b'"');
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\":");
    serde_json::to_writer(&mut *buf, value).expect("JSON of plain values");
}

impl Pair {
    /// The pair's fields of a raw JSON line, from `"pair_id"` to `"b_policy"`'s value.
    fn json_fragment(&self, buf: &mut Vec<u8>) {
        buf.clear();
        field(buf, "pair_id", &self.id);
        buf.push(b',');
        field(buf, "external_id", &self.external_id);
        buf.push(b',');
        field(buf, "prompt", &self.prompt);
        for (side, id, text, clip, policy) in [
            ("a", &self.a_id, &self.a_text, &self.a_clip, &self.a_policy),
            ("b", &self.b_id, &self.b_text, &self.b_clip, &self.b_policy),
        ] {
            buf.push(b',');
            field(buf, &format!("{side}_id"), id);
            buf.push(b',');
            field(buf, &format!("{side}_text"), text);
            buf.push(b',');
            field(buf, &format!("{side}_clip"), &clip_path(clip));
            buf.push(b',');
            field(buf, &format!("{side}_policy"), policy);
        }
    }
}

/// A judgment row's fields, borrowed from the row (no allocation).
struct Judgment<'r> {
    id: Uuid,
    choice: &'r str,
    left_is_a: bool,
    displayed_choice: &'r str,
    strength: Option<i32>,
    rationale: Option<&'r str>,
    content_flag: bool,
    flag_reason: Option<&'r str>,
    duration_ms: Option<i32>,
    replays: Option<i32>,
    answered_before_clip_end: Option<bool>,
    rater_id: Uuid,
    created_at: OffsetDateTime,
    repeat: bool,
}

impl<'r> Judgment<'r> {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(Judgment {
            id: row.try_get(1)?,
            choice: row.try_get(2)?,
            left_is_a: row.try_get(3)?,
            displayed_choice: row.try_get(4)?,
            strength: row.try_get(5)?,
            rationale: row.try_get(6)?,
            content_flag: row.try_get(7)?,
            flag_reason: row.try_get(8)?,
            duration_ms: row.try_get(9)?,
            replays: row.try_get(10)?,
            answered_before_clip_end: row.try_get(11)?,
            rater_id: row.try_get(12)?,
            created_at: row.try_get(13)?,
            repeat: row.try_get(14)?,
        })
    }

    fn preferred(&self, pair: &Pair) -> Option<Uuid> {
        match self.choice {
            "a" => Some(pair.a_id),
            "b" => Some(pair.b_id),
            _ => None,
        }
    }

    fn shown_left(&self) -> &'static str {
        if self.left_is_a { "a" } else { "b" }
    }

    /// One raw-jsonl line: the judgment's fields around the pair's cached fragment.
    fn write_json(
        &self,
        pair: &Pair,
        fragment: &[u8],
        rater: &str,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        buf.push(b'{');
        field(buf, "judgment_id", &self.id);
        buf.push(b',');
        buf.extend_from_slice(fragment);
        buf.push(b',');
        field(buf, "choice", self.choice);
        buf.push(b',');
        field(buf, "preferred_id", &self.preferred(pair));
        buf.push(b',');
        field(buf, "shown_left", self.shown_left());
        buf.push(b',');
        field(buf, "displayed_choice", self.displayed_choice);
        buf.push(b',');
        field(buf, "strength", &self.strength);
        buf.push(b',');
        field(buf, "rationale", &self.rationale);
        buf.push(b',');
        field(buf, "content_flag", &self.content_flag);
        buf.push(b',');
        field(buf, "flag_reason", &self.flag_reason);
        buf.push(b',');
        field(buf, "duration_ms", &self.duration_ms);
        buf.push(b',');
        field(buf, "replays", &self.replays);
        buf.push(b',');
        field(
            buf,
            "answered_before_clip_end",
            &self.answered_before_clip_end,
        );
        buf.push(b',');
        field(buf, "rater", rater);
        buf.push(b',');
        field(buf, "created_at", &self.created_at.format(&Rfc3339)?);
        buf.push(b',');
        field(buf, "gold", &pair.gold);
        buf.push(b',');
        field(buf, "repeat", &self.repeat);
        buf.extend_from_slice(b"}\n");
        Ok(())
    }

    /// The same row as the struct the CSV writer serializes.
    fn to_row(&self, pair: &Pair, rater: &str) -> RawRow {
        RawRow {
            judgment_id: self.id,
            pair_id: pair.id,
            external_id: pair.external_id.clone(),
            prompt: pair.prompt.clone(),
            a_id: pair.a_id,
            a_text: pair.a_text.clone(),
            a_clip: clip_path(&pair.a_clip),
            a_policy: pair.a_policy.clone(),
            b_id: pair.b_id,
            b_text: pair.b_text.clone(),
            b_clip: clip_path(&pair.b_clip),
            b_policy: pair.b_policy.clone(),
            choice: self.choice.to_owned(),
            preferred_id: self.preferred(pair),
            shown_left: self.shown_left().to_owned(),
            displayed_choice: self.displayed_choice.to_owned(),
            strength: self.strength,
            rationale: self.rationale.map(str::to_owned),
            content_flag: self.content_flag,
            flag_reason: self.flag_reason.map(str::to_owned),
            duration_ms: self.duration_ms,
            replays: self.replays,
            answered_before_clip_end: self.answered_before_clip_end,
            rater_id: self.rater_id,
            rater: rater.to_owned(),
            created_at: self.created_at,
            gold: pair.gold,
            repeat: self.repeat,
        }
    }
}

/// Bind $1..$7 as `judgment_filters!` does.
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    plan: &'q Plan,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    bind_filters!(q, plan)
}

pub(super) async fn raw(pool: &PgPool, plan: &Plan, out: &mut Out) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut raters = Raters::new(pool, plan);
    // Two connections, one snapshot: the first exports it, the second adopts it.
    let mut pairs_tx = pool.begin().await?;
    sqlx::raw_sql(SNAPSHOT_SETTINGS)
        .execute(&mut *pairs_tx)
        .await?;
    let snapshot: String = sqlx::query_scalar("select pg_export_snapshot()")
        .fetch_one(&mut *pairs_tx)
        .await?;
    let mut judgments_tx = pool.begin().await?;
    sqlx::raw_sql(SNAPSHOT_SETTINGS)
        .execute(&mut *judgments_tx)
        .await?;
    // The snapshot id comes from PostgreSQL (hex digits and dashes), not from a user.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "set transaction snapshot '{}'",
        snapshot.replace('\'', "")
    )))
    .execute(&mut *judgments_tx)
    .await?;

    let mut pairs = bind(sqlx::query(PAIRS_SQL), plan)
        .try_map(|row: PgRow| <Pair as sqlx::FromRow<PgRow>>::from_row(&row))
        .fetch(&mut *pairs_tx);
    let mut judgments = bind(sqlx::query(JUDGMENTS_SQL), plan).fetch(&mut *judgments_tx);

    let csv_out = Shared::default();
    let mut csv =
        (plan.args.format == Format::Csv).then(|| csv::Writer::from_writer(csv_out.clone()));
    let mut pair: Option<Pair> = None;
    let mut fragment = Vec::with_capacity(4096);
    while let Some(row) = judgments.try_next().await.context("reading judgments")? {
        let seq: i64 = row.try_get(0)?;
        // Advance the pairs to this judgment's; a pair the filters dropped has none.
        while pair.as_ref().is_none_or(|p| p.seq < seq) {
            match pairs.try_next().await.context("reading pairs")? {
                Some(p) => {
                    p.json_fragment(&mut fragment);
                    pair = Some(p);
                }
                None => break,
            }
        }
        let Some(p) = pair.as_ref().filter(|p| p.seq == seq) else {
            continue;
        };
        let j = Judgment::from_row(&row)?;
        let rater = raters.name(j.rater_id).await?;
        match &mut csv {
            Some(w) => w.serialize(j.to_row(p, rater))?,
            None => j.write_json(p, &fragment, rater, &mut out.buf)?,
        }
        summary.rows += 1;
        if let Some(w) = &mut csv
            && summary.rows % 512 == 0
        {
            w.flush()?;
            out.buf.append(&mut csv_out.take());
        }
        out.maybe_flush().await?;
    }
    if let Some(mut w) = csv {
        if summary.rows == 0 {
            // No rows: still a header, so the file parses with the documented columns.
            w.write_record(RAW_COLUMNS)?;
        }
        w.flush()?;
        out.buf.append(&mut csv_out.take());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(text: bool) -> Pair {
        Pair {
            seq: 7,
            id: Uuid::new_v4(),
            external_id: text.then(|| "p\"1\u{e9}".into()),
            prompt: "say \"hi\"\n\t<b>\u{1F600}</b> \\".into(),
            a_id: Uuid::new_v4(),
            a_text: text.then(|| "A\u{0001}".into()),
            a_clip: (!text).then(|| "ab12".into()),
            a_policy: Some("pa".into()),
            b_id: Uuid::new_v4(),
            b_text: text.then(|| "B".into()),
            b_clip: (!text).then(|| "cd34".into()),
            b_policy: None,
            gold: text,
        }
    }

    #[test]
    fn the_merged_json_line_is_serde_json_of_the_row() {
        for (text, choice, left_is_a) in [
            (true, "a", true),
            (true, "b", false),
            (false, "tie", true),
            (false, "cant_tell", false),
        ] {
            let p = pair(text);
            let j = Judgment {
                id: Uuid::new_v4(),
                choice,
                left_is_a,
                displayed_choice: "left",
                strength: text.then_some(3),
                rationale: text.then_some("a, \"b\"\r\nc"),
                content_flag: !text,
                flag_reason: (!text).then_some("gore"),
                duration_ms: Some(1234),
                replays: None,
                answered_before_clip_end: (!text).then_some(true),
                rater_id: Uuid::new_v4(),
                created_at: time::macros::datetime!(2026-11-27 10:11:12.345678 UTC),
                repeat: text,
            };
            let mut fragment = vec![];
            p.json_fragment(&mut fragment);
            let mut line = vec![];
            j.write_json(&p, &fragment, "r-0123456789ab", &mut line)
                .unwrap();
            let mut want = serde_json::to_vec(&j.to_row(&p, "r-0123456789ab")).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
