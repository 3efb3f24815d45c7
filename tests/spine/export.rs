//! Exports: raw judgments match the database row for row, majority preferences,
//! filters, pseudonyms, CSV quoting, Parquet read-back, manifests, the API
//! stream equal to the CLI's file, roles, bad filters, the export job and bundles.

use std::{collections::HashMap, path::Path, process::Command};

use axum::http::{Method, StatusCode};
use backflip::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::common::{Res, TestApp, app};

/// Ask for the next pair and answer it so that the *canonical* answer is `want`
/// (a, b, tie, cant_tell), whatever side rollout a was shown on.
async fn judge(app: &TestApp, slug: &str, token: &str, want: &str, rationale: Option<&str>) {
    judge_by(app, slug, token, |_| want, rationale).await;
}

/// Like `judge`, with the canonical answer chosen from the pair's number
/// (`question N`) by `want`.
async fn judge_by<'a>(
    app: &TestApp,
    slug: &str,
    token: &str,
    want: impl Fn(usize) -> &'a str,
    rationale: Option<&str>,
) {
    let next = app
        .get(&format!("/api/v1/projects/{slug}/next"), token)
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text());
    let pair = next.json();
    let number: usize = pair["prompt"]
        .as_str()
        .and_then(|p| p.strip_prefix("question "))
        .and_then(|n| n.parse().ok())
        .expect("a pair from text_pairs");
    let want = want(number);
    let left = pair["left"]["text"].as_str().unwrap_or_default();
    let left_is_a = left.contains(" A") || left.starts_with("answer A");
    let pressed = match (want, left_is_a) {
        ("a", true) | ("b", false) => "left",
        ("a", false) | ("b", true) => "right",
        (other, _) => other,
    };
    let mut body = json!({"choice": pressed, "duration_ms": 1234});
    if let Some(r) = rationale {
        body["rationale"] = json!(r);
    }
    let id = pair["assignment_id"].as_str().unwrap();
    let res = app
        .post(&format!("/api/v1/assignments/{id}/judgment"), token, body)
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
}

const HOSTILE: &str =
    "a, \"quoted\" answer;\nsecond line\r\n=HYPERLINK(\"x\") <script>alert(1)</script> \\ ü";

/// Project `ex` (overlap 3, rationales optional), six pairs, raters r1..r3 answering:
/// p0 a a b · p1 b b b · p2 a b tie · p3 tie tie a · p4 a b cant_tell · p5 cant_tell ×3.
async fn labelled(app: &TestApp) -> (String, [String; 3]) {
    let lead = app
        .project("ex", json!({"overlap": 3, "rationale": "optional"}))
        .await;
    app.import_text_pairs("ex", &lead, 6).await;
    let raters = [
        app.annotator("ex", &lead, "r1").await,
        app.annotator("ex", &lead, "r2").await,
        app.annotator("ex", &lead, "r3").await,
    ];
    let answers = [
        ["a", "a", "b"],
        ["b", "b", "b"],
        ["a", "b", "tie"],
        ["tie", "tie", "a"],
        ["a", "b", "cant_tell"],
        ["cant_tell", "cant_tell", "cant_tell"],
    ];
    for (i, token) in raters.iter().enumerate() {
        for (p, pair) in answers.iter().enumerate() {
            let rationale = (p == 0 && i == 0).then_some(HOSTILE);
            judge(app, "ex", token, pair[i], rationale).await;
        }
    }
    (lead, raters)
}

fn backflip(app: &TestApp, data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backflip"));
    c.env("DATABASE_URL", &app.url)
        .env("RUST_LOG", "warn")
        .env("BACKFLIP_DATA_DIR", data_dir);
    c
}

/// Run `backflip export --project ex --out OUT ARGS…`; panics if it fails.
#[track_caller]
fn cli_export(app: &TestApp, out: &Path, args: &[&str]) -> Vec<u8> {
    let dir = out.parent().unwrap();
    let res = backflip(app, dir)
        .args(["export", "--project", "ex", "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::read(out).unwrap()
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn api_export(app: &TestApp, token: &str, query: &str) -> Res {
    app.get(&format!("/api/v1/projects/ex/export?{query}"), token)
        .await
}

/// Run the queued export jobs to the end; how many ran.
async fn drain_exports(app: &TestApp) -> usize {
    let runner = backflip::jobs::Runner::new(
        app.pool.clone(),
        backflip::export::job::handlers(app.state.clips.clone()),
        backflip::jobs::WorkerConfig::new(1, 30.0),
    );
    runner.drain().await.unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn raw_jsonl_matches_the_database_row_for_row() {
    let app = app().await;
    labelled(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("raw.jsonl");
    let rows = lines(&cli_export(&app, &out, &["--format", "raw-jsonl"]));
    type Db = (
        Uuid,
        Uuid,
        String,
        String,
        bool,
        Option<String>,
        Uuid,
        String,
        Option<i32>,
    );
    let db: Vec<Db> = sqlx::query_as(
        "select j.id, j.comparison_id, j.choice, j.displayed_choice, j.left_is_a, j.rationale,
                j.rater_id, u.name, j.duration_ms
         from judgments j join users u on u.id = j.rater_id
         join comparisons c on c.id = j.comparison_id
         order by c.seq, j.created_at, j.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), db.len());
    assert_eq!(rows.len(), 18);
    let mut pseudonyms: HashMap<Uuid, String> = HashMap::new();
    for (row, (id, pair, choice, displayed, left_is_a, rationale, rater, name, ms)) in
        rows.iter().zip(&db)
    {
        assert_eq!(row["judgment_id"], id.to_string());
        assert_eq!(row["pair_id"], pair.to_string());
        assert_eq!(row["choice"], *choice);
        assert_eq!(row["displayed_choice"], *displayed);
        assert_eq!(row["shown_left"], if *left_is_a { "a" } else { "b" });
        assert_eq!(row["rationale"].as_str(), rationale.as_deref());
        assert_eq!(row["duration_ms"], json!(ms));
        assert_eq!(row["gold"], false);
        assert_eq!(row["repeat"], false);
        // The side shown resolves to the canonical answer.
        let resolved = match (displayed.as_str(), left_is_a) {
            ("left", true) | ("right", false) => "a",
            ("left", false) | ("right", true) => "b",
            (other, _) => other,
        };
        assert_eq!(resolved, choice);
        let preferred = match choice.as_str() {
            "a" => row["a_id"].clone(),
            "b" => row["b_id"].clone(),
            _ => Value::Null,
        };
        assert_eq!(row["preferred_id"], preferred);
        assert!(row["a_text"].as_str().unwrap().starts_with("answer A"));
        assert_eq!(row["a_policy"], "pa");
        // Pseudonymous: not the name, not the id, one per rater.
        let p = row["rater"].as_str().unwrap().to_owned();
        assert!(p.starts_with("r-") && p.len() == 14, "{p}");
        assert!(p != *name && !p.contains(&rater.to_string()));
        assert_eq!(pseudonyms.entry(*rater).or_insert(p.clone()), &p);
    }
    assert_eq!(pseudonyms.len(), 3);
    // Stable: a second export names raters the same.
    let again = lines(&cli_export(
        &app,
        &dir.path().join("again.jsonl"),
        &["--format", "raw-jsonl"],
    ));
    assert_eq!(again, rows);
    // Real names only on request.
    let named = lines(&cli_export(
        &app,
        &dir.path().join("named.jsonl"),
        &["--real-identities"],
    ));
    assert_eq!(named[0]["rater"], db[0].7);

    // The manifest and the card sit beside the file, with matching sha256s.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("raw.jsonl.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], "raw-jsonl");
    assert_eq!(manifest["rows"], 18);
    assert_eq!(manifest["project"], "ex");
    assert_eq!(manifest["filters"]["identities"], "pseudonymous");
    assert!(manifest["backflip_version"].is_string() && manifest["created_at"].is_string());
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        let name = f["path"].as_str().unwrap();
        let path = match name {
            "raw.jsonl" => dir.path().join("raw.jsonl"),
            "raw.jsonl.README.md" => dir.path().join("raw.jsonl.README.md"),
            other => panic!("unexpected file {other}"),
        };
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(f["sha256"], sha(&bytes), "{name}");
        assert_eq!(f["bytes"], bytes.len());
    }
    let card = std::fs::read_to_string(dir.path().join("raw.jsonl.README.md")).unwrap();
    assert!(
        card.contains("18 judgments") && card.contains("by 3 raters"),
        "{card}"
    );
    assert!(
        card.contains("Fleiss") && card.contains("Krippendorff"),
        "{card}"
    );
    assert!(
        card.contains("`left`") && card.contains("`cant_tell`"),
        "{card}"
    );
    assert_eq!(manifest["stats"]["raters"], 3);

    // --out a folder: fixed names inside it.
    let folder = dir.path().join("folder/");
    let res = backflip(&app, dir.path())
        .args(["export", "--project", "ex", "--format", "csv", "--out"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for f in ["judgments.csv", "README.md", "manifest.json"] {
        assert!(folder.join(f).exists(), "{f}");
    }
}

#[tokio::test]
async fn preferences_take_the_majority_and_leave_ties_and_splits_out_unless_asked() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let get = |q: &'static str| {
        let (app, lead) = (&app, &lead);
        async move {
            let res = api_export(app, lead, q).await;
            assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.text());
            lines(&res.body)
        }
    };
    let rows = get("format=preferences-jsonl").await;
    let ids: Vec<&str> = rows.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
    assert_eq!(ids, ["question 0", "question 1"]);
    let p0 = &rows[0];
    assert_eq!(p0["chosen"], "answer A0");
    assert_eq!(p0["rejected"], "answer B0");
    assert_eq!(p0["winner"], "a");
    assert_eq!(p0["aggregation"], "majority");
    assert_eq!(
        (
            p0["votes"].clone(),
            p0["votes_chosen"].clone(),
            p0["votes_rejected"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert!((p0["agreement"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((p0["margin"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(p0["chosen_policy"], "pa");
    let p1 = &rows[1];
    assert_eq!(
        (p1["chosen"].as_str(), p1["rejected"].as_str()),
        (Some("answer B1"), Some("answer A1"))
    );
    assert_eq!(
        (p1["winner"].as_str(), p1["agreement"].as_f64()),
        (Some("b"), Some(1.0))
    );
    assert_eq!(p1["raters"], 3);

    let with_ties = get("format=preferences-jsonl&keep_ties=true").await;
    let tie: Vec<&Value> = with_ties.iter().filter(|r| r["winner"] == "tie").collect();
    assert_eq!(tie.len(), 1);
    assert_eq!(tie[0]["prompt"], "question 3");
    assert_eq!(
        (tie[0]["votes_tie"].clone(), tie[0]["margin"].clone()),
        (json!(2), json!(0.0))
    );

    let with_splits = get("format=preferences-jsonl&keep_splits=true").await;
    let splits: Vec<&str> = with_splits
        .iter()
        .filter(|r| r["winner"] == "split")
        .map(|r| r["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(splits, ["question 2", "question 4"]);
    let p4 = with_splits
        .iter()
        .find(|r| r["prompt"] == "question 4")
        .unwrap();
    assert_eq!(
        (p4["votes"].clone(), p4["votes_cant_tell"].clone()),
        (json!(2), json!(1))
    );

    assert_eq!(
        get("format=preferences-jsonl&min_agreement=0.9")
            .await
            .len(),
        1
    );
    assert_eq!(
        get("format=preferences-jsonl&keep_splits=true&min_votes=3")
            .await
            .len(),
        3
    );

    // The card counts what was left out, and why.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prefs.jsonl");
    cli_export(&app, &out, &["--format", "preferences-jsonl"]);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("prefs.jsonl.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["rows"], 2);
    assert_eq!(
        manifest["dropped"],
        json!({"no_votes": 1, "tie": 1, "split": 2})
    );
}

/// Project `ex`, 31 pairs, overlap 5. On pairs 0..30 (truth: a on even, b on odd) `good`,
/// `h1` and `h2` give the true answer while `u1` and `u2` always answer a, which makes
/// them no better than chance. On pair 30 (truth b) `good` answers b, `u1` and `u2` a,
/// and `h1`, `h2` can't tell: the majority says a, the reliable rater b.
async fn reliability_case(app: &TestApp) -> String {
    let lead = app.project("ex", json!({"overlap": 5})).await;
    app.import_text_pairs("ex", &lead, 31).await;
    for name in ["good", "h1", "h2", "u1", "u2"] {
        let token = app.annotator("ex", &lead, name).await;
        for _ in 0..31 {
            let want = |n: usize| match (name, n) {
                ("h1" | "h2", 30) => "cant_tell",
                ("good", 30) => "b",
                ("u1" | "u2", _) => "a",
                (_, n) if n % 2 == 0 => "a",
                _ => "b",
            };
            judge_by(app, "ex", &token, want, None).await;
        }
    }
    lead
}

#[tokio::test]
async fn reliability_weighting_outvotes_two_unreliable_raters() {
    let app = app().await;
    let lead = reliability_case(&app).await;
    let pair30 = |rows: &[Value]| {
        rows.iter()
            .find(|r| r["prompt"] == "question 30")
            .cloned()
            .expect("pair 30 exported")
    };

    // Majority: two votes for a beat one for b.
    let res = api_export(&app, &lead, "format=preferences-jsonl").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let majority = lines(&res.body);
    let m = pair30(&majority);
    assert_eq!(
        (
            m["winner"].as_str(),
            m["chosen"].as_str(),
            m["aggregation"].as_str()
        ),
        (Some("a"), Some("answer A30"), Some("majority"))
    );
    assert!(
        (m["agreement"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{m}"
    );

    // Reliability: the one reliable rater outweighs the two always-a raters.
    let res = api_export(
        &app,
        &lead,
        "format=preferences-jsonl&aggregation=reliability",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let weighted = lines(&res.body);
    let w = pair30(&weighted);
    assert_eq!(
        (
            w["winner"].as_str(),
            w["chosen"].as_str(),
            w["rejected"].as_str()
        ),
        (Some("b"), Some("answer B30"), Some("answer A30"))
    );
    assert_eq!(w["aggregation"], "reliability");
    // Counts stay counts; agreement and margin are shares of the vote weight.
    assert_eq!(
        (
            w["votes"].clone(),
            w["votes_chosen"].clone(),
            w["votes_rejected"].clone()
        ),
        (json!(3), json!(1), json!(2))
    );
    let (agreement, margin) = (
        w["agreement"].as_f64().unwrap(),
        w["margin"].as_f64().unwrap(),
    );
    assert!(agreement > 0.8 && agreement <= 1.0, "{agreement}");
    assert!(
        margin > 0.6 && (margin - (2.0 * agreement - 1.0)).abs() < 1e-9,
        "{margin}"
    );
    // Where all five agree, both methods pick the same answer.
    assert_eq!(weighted.len(), majority.len());
    for (a, b) in majority.iter().zip(&weighted) {
        if a["prompt"] != "question 30" {
            assert_eq!(a["chosen"], b["chosen"], "{}", a["prompt"]);
        }
    }

    // The CLI's manifest and card state the method and every rater's weight.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prefs.jsonl");
    let cli = lines(&cli_export(
        &app,
        &out,
        &[
            "--format",
            "preferences-jsonl",
            "--aggregation",
            "reliability",
            "--real-identities",
        ],
    ));
    assert_eq!(pair30(&cli)["chosen"], "answer B30");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("prefs.jsonl.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["filters"]["aggregation"], "reliability");
    let agg = &manifest["aggregation"];
    assert_eq!(agg["method"], "reliability");
    assert!(
        agg["weights_source"]
            .as_str()
            .unwrap()
            .contains("Dawid–Skene"),
        "{agg}"
    );
    let weight = |name: &str| {
        agg["raters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rater"] == name)
            .and_then(|r| r["weight"].as_f64())
            .unwrap_or_else(|| panic!("no weight for {name}: {agg}"))
    };
    assert!(weight("good") > 0.8, "{agg}");
    assert!(weight("u1") < 0.2 && weight("u2") < 0.2, "{agg}");
    let card = std::fs::read_to_string(dir.path().join("prefs.jsonl.README.md")).unwrap();
    assert!(
        card.contains("reliability-weighted") && card.contains("| good |"),
        "{card}"
    );
    // Majority exports say so and list no weights.
    cli_export(
        &app,
        &dir.path().join("m.jsonl"),
        &["--format", "preferences-jsonl"],
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.jsonl.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["aggregation"], json!({"method": "majority"}));

    // Parquet carries the same answer and method.
    let res = api_export(
        &app,
        &lead,
        "format=preferences-parquet&aggregation=reliability",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let rows = parquet_rows(&res.body);
    let p = pair30(&rows);
    assert_eq!(
        (p["chosen"].as_str(), p["aggregation"].as_str()),
        (Some("answer B30"), Some("reliability"))
    );
    assert_eq!(p["margin"].as_f64(), Some(margin));

    // Raw formats have nothing to aggregate.
    let res = api_export(&app, &lead, "format=raw-jsonl&aggregation=reliability").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    assert_eq!(res.code(), "bad_filter");
}

#[tokio::test]
async fn filters_raters_dates_policies_gold_and_excluded_raters() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let count = |q: String| {
        let (app, lead) = (&app, &lead);
        async move {
            let res = api_export(app, lead, &q).await;
            assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.text());
            lines(&res.body)
        }
    };
    assert_eq!(count("format=raw-jsonl&rater=r1".into()).await.len(), 6);
    assert_eq!(count("format=raw-jsonl&rater=r1,r2".into()).await.len(), 12);
    let r1 = count("format=raw-jsonl&rater=r1".into()).await[0]["rater"]
        .as_str()
        .unwrap()
        .to_owned();
    // A pseudonym names a rater as well as a login name does.
    let without = count(format!("format=raw-jsonl&exclude_rater={r1}")).await;
    assert_eq!(without.len(), 12);
    assert!(without.iter().all(|r| r["rater"] != r1.as_str()));
    assert_eq!(
        count("format=raw-jsonl&since=2000-01-01".into())
            .await
            .len(),
        18
    );
    assert_eq!(
        count("format=raw-jsonl&since=2999-01-01".into())
            .await
            .len(),
        0
    );
    assert_eq!(
        count("format=raw-jsonl&until=2999-01-01T00:00:00Z".into())
            .await
            .len(),
        18
    );
    assert_eq!(count("format=raw-jsonl&policy=pa".into()).await.len(), 18);
    assert_eq!(count("format=raw-jsonl&policy=nope".into()).await.len(), 0);

    // Excluded raters are out by default.
    sqlx::query("update project_members set excluded_at = now() where user_id = (select id from users where name = 'r3')")
        .execute(&app.pool)
        .await
        .unwrap();
    let raw = count("format=raw-jsonl".into()).await;
    assert_eq!(raw.len(), 12);
    assert_eq!(
        count("format=raw-jsonl&include_excluded=true".into())
            .await
            .len(),
        18
    );
    // Without r3, p2 (a b) is a split and p4 (a b) too; p0 (a a) is unanimous.
    let prefs = count("format=preferences-jsonl".into()).await;
    assert_eq!(prefs[0]["votes"], 2);
    assert_eq!(prefs[0]["agreement"], 1.0);

    // Gold pairs are out by default, marked when included.
    sqlx::query("update comparisons set gold = 'a' where external_id = 'p0'")
        .execute(&app.pool)
        .await
        .unwrap();
    let raw = count("format=raw-jsonl&include_excluded=true".into()).await;
    assert_eq!(raw.len(), 15);
    let all = count("format=raw-jsonl&include_excluded=true&include_gold=true".into()).await;
    assert_eq!(all.iter().filter(|r| r["gold"] == true).count(), 3);
}

#[tokio::test]
async fn csv_parses_and_escapes_hostile_text() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let res = api_export(&app, &lead, "format=csv").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let json = lines(&api_export(&app, &lead, "format=raw-jsonl").await.body);
    let mut reader = csv::Reader::from_reader(res.body.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, backflip::export::stream::RAW_COLUMNS);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), json.len());
    for (rec, row) in records.iter().zip(&json) {
        for (name, field) in header.iter().zip(rec.iter()) {
            let expected = match &row[name.as_str()] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            assert_eq!(field, expected, "{name}");
        }
    }
    let hostile = records.iter().filter(|r| &r[17] == HOSTILE).count();
    assert_eq!(
        hostile, 1,
        "the rationale survives CSV quoting byte for byte"
    );
}

/// A Parquet file's rows as JSON objects (column name to value), read by the parquet crate.
fn parquet_rows(bytes: &[u8]) -> Vec<Value> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes.to_vec())).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| {
            use parquet::record::Field;
            let r = r.unwrap();
            let fields = r.get_column_iter().map(|(name, f)| {
                let v = match f {
                    Field::Null => Value::Null,
                    Field::Bool(b) => json!(b),
                    Field::Int(i) => json!(i),
                    Field::Double(d) => json!(d),
                    Field::Str(s) => json!(s),
                    other => panic!("{name}: unexpected {other:?}"),
                };
                (name.clone(), v)
            });
            Value::Object(fields.collect())
        })
        .collect()
}

#[tokio::test]
async fn parquet_reads_back_with_the_documented_schema() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let q = "format=preferences-parquet&keep_ties=true&keep_splits=true";
    let res = api_export(&app, &lead, q).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let expected = lines(
        &api_export(&app, &lead, &q.replace("parquet", "jsonl"))
            .await
            .body,
    );
    assert_eq!(expected.len(), 5);
    let reader = SerializedFileReader::new(bytes::Bytes::from(res.body.clone())).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<(String, String)> = schema
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.physical_type() {
                parquet::basic::Type::BYTE_ARRAY => "binary",
                parquet::basic::Type::INT32 => "int32",
                parquet::basic::Type::DOUBLE => "double",
                parquet::basic::Type::BOOLEAN => "boolean",
                other => panic!("unexpected {other:?}"),
            };
            (c.name().to_owned(), ty.to_owned())
        })
        .collect();
    let documented = backflip::export::parquet::SCHEMA;
    for (name, ty) in &columns {
        assert!(
            documented.contains(&format!(" {name};")) || documented.contains(&format!(" {name} (")),
            "{name}"
        );
        let want = documented
            .lines()
            .find(|l| l.contains(&format!(" {name}")))
            .unwrap();
        assert!(
            want.contains(&format!("{ty} {name}")),
            "{name}: {ty} vs {want}"
        );
    }
    assert_eq!(columns.len(), 20);
    let rows = parquet_rows(&res.body);
    assert_eq!(rows.len(), expected.len());
    for (got, want) in rows.iter().zip(&expected) {
        for key in [
            "pair_id",
            "prompt",
            "chosen",
            "rejected",
            "winner",
            "aggregation",
            "chosen_policy",
        ] {
            assert_eq!(got[key], want[key], "{key}");
        }
        for key in [
            "votes",
            "votes_chosen",
            "votes_rejected",
            "votes_tie",
            "votes_cant_tell",
            "raters",
        ] {
            assert_eq!(got[key].as_i64(), want[key].as_i64(), "{key}");
        }
        assert_eq!(got["agreement"].as_f64(), want["agreement"].as_f64());
        assert_eq!(got["gold"], want["gold"]);
        assert_eq!(got["external_id"], want["external_id"]);
    }
}

#[tokio::test]
async fn the_api_streams_the_same_bytes_as_the_cli() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let dir = tempfile::tempdir().unwrap();
    for (i, (query, args)) in [
        ("format=raw-jsonl", vec!["--format", "raw-jsonl"]),
        (
            "format=preferences-jsonl&keep_splits=true&min_votes=2",
            vec![
                "--format",
                "preferences-jsonl",
                "--keep-splits",
                "--min-votes",
                "2",
            ],
        ),
        (
            "format=csv&rater=r1,r2",
            vec!["--format", "csv", "--rater", "r1,r2"],
        ),
        (
            "format=preferences-parquet",
            vec!["--format", "preferences-parquet"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let file = cli_export(&app, &dir.path().join(format!("out{i}")), &args);
        let res = api_export(&app, &lead, query).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        assert!(!file.is_empty());
        assert_eq!(res.body, file, "{query}");
        assert!(
            res.headers["content-disposition"]
                .to_str()
                .unwrap()
                .contains("attachment")
        );
        // Provenance: what the CLI's manifest says, in headers before the data, the row
        // count and sha256 of what was sent in trailer fields after it, and the whole
        // manifest and card from the same query.
        let cli_manifest: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("out{i}.manifest.json"))).unwrap(),
        )
        .unwrap();
        let header = |name: &str| res.headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-backflip-export-format"), cli_manifest["format"]);
        assert_eq!(
            header("x-backflip-version"),
            cli_manifest["backflip_version"]
        );
        let filters: Value = serde_json::from_str(&header("x-backflip-export-filters")).unwrap();
        assert_eq!(filters, cli_manifest["filters"], "{query}");
        assert!(header("x-backflip-export-created-at").starts_with("20"));
        let trailers = res.trailers.as_ref().expect("trailer fields");
        assert_eq!(trailers["x-backflip-export-sha256"], sha(&file).as_str());
        assert_eq!(
            trailers["x-backflip-export-rows"],
            cli_manifest["rows"].to_string().as_str()
        );
        let manifest = app
            .get(
                &format!("/api/v1/projects/ex/export/manifest?{query}"),
                &lead,
            )
            .await;
        assert_eq!(manifest.status, StatusCode::OK, "{}", manifest.text());
        let manifest = manifest.json();
        for key in ["format", "filters", "rows", "dropped", "stats", "project"] {
            assert_eq!(manifest[key], cli_manifest[key], "{query}: {key}");
        }
        assert_eq!(manifest["files"][0]["sha256"], sha(&file), "{query}");
        assert_eq!(manifest["files"][0]["bytes"], file.len());
        let card = app
            .get(&format!("/api/v1/projects/ex/export/card?{query}"), &lead)
            .await;
        assert_eq!(card.status, StatusCode::OK);
        assert!(
            card.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/markdown")
        );
        let card = card.text();
        assert!(
            card.contains("## Agreement") && card.contains(&format!("{} ", cli_manifest["rows"])),
            "{card}"
        );
    }
    // Every API export is in the audit log.
    let audited = app
        .count("select count(*) from audit_log where action = 'export.download'")
        .await;
    assert_eq!(audited, 4);
}

#[tokio::test]
async fn only_readers_export_and_only_leads_see_names() {
    let app = app().await;
    let (lead, raters) = labelled(&app).await;
    let researcher = app.user("res", Role::Researcher).await;
    app.add_member("ex", &lead, "res", "researcher").await;
    let outsider = app.user("outsider", Role::Lead).await;
    let uri = "/api/v1/projects/ex/export?format=raw-jsonl";
    assert_eq!(app.get(uri, &researcher).await.status, StatusCode::OK);
    assert_eq!(app.get(uri, &raters[0]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(uri, &outsider).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::GET, uri, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let named = format!("{uri}&real_identities=true");
    assert_eq!(
        app.get(&named, &researcher).await.status,
        StatusCode::FORBIDDEN
    );
    let res = app.get(&named, &lead).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.text().contains("\"rater\":\"r1\""));
}

#[tokio::test]
async fn a_bad_filter_is_a_clear_400_and_writes_nothing() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    for (query, says) in [
        ("format=raw-jsonl&since=yesterday", "since"),
        ("format=preferences-jsonl&min_agreement=2", "min_agreement"),
        ("format=raw-jsonl&rater=nobody", "nobody"),
        ("format=raw-jsonl&min_votes=2", "preference"),
        ("format=xml", "format"),
        ("format=raw-jsonl&colour=blue", "colour"),
        (
            "format=raw-jsonl&since=2026-02-01&until=2026-01-01",
            "before",
        ),
        ("format=bundle", "GIF"),
    ] {
        let res = api_export(&app, &lead, query).await;
        assert_eq!(
            res.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            res.text()
        );
        assert_eq!(res.code(), "bad_filter", "{query}");
        assert!(
            res.json()["message"].as_str().unwrap().contains(says),
            "{query}: {}",
            res.text()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.jsonl");
    let res = backflip(&app, dir.path())
        .args([
            "export",
            "--project",
            "ex",
            "--since",
            "not-a-date",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("since"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "clips")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_export_job_writes_files_to_download() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let res = app
        .post(
            "/api/v1/projects/ex/exports",
            &lead,
            json!({"format": "preferences-jsonl", "keep_ties": true, "min_votes": 2, "rater": ["r1", "r2", "r3"]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    let job = res.json()["job_id"].as_i64().unwrap();
    // A second one while the first still waits: refused, not merged.
    let res = app
        .post(
            "/api/v1/projects/ex/exports",
            &lead,
            json!({"format": "csv"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    let bad = app
        .post(
            "/api/v1/projects/ex/exports",
            &lead,
            json!({"format": "csv", "since": "x"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(drain_exports(&app).await, 1);
    let status: (String, Option<String>) =
        sqlx::query_as("select status, error from jobs where id = $1")
            .bind(job)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status.0, "done", "{:?}", status.1);
    let file = app
        .get(
            &format!("/api/v1/projects/ex/exports/{job}/preferences.jsonl"),
            &lead,
        )
        .await;
    assert_eq!(file.status, StatusCode::OK);
    let streamed = api_export(
        &app,
        &lead,
        "format=preferences-jsonl&keep_ties=true&min_votes=2&rater=r1,r2,r3",
    )
    .await;
    assert_eq!(file.body, streamed.body);
    let manifest = app
        .get(
            &format!("/api/v1/projects/ex/exports/{job}/manifest.json"),
            &lead,
        )
        .await
        .json();
    assert_eq!(manifest["files"][0]["sha256"], sha(&file.body));
    let card = app
        .get(
            &format!("/api/v1/projects/ex/exports/{job}/README.md"),
            &lead,
        )
        .await;
    assert_eq!(manifest["files"][1]["sha256"], sha(&card.body));
    for missing in ["../../clips", "other.jsonl"] {
        let res = app
            .get(
                &format!("/api/v1/projects/ex/exports/{job}/{missing}"),
                &lead,
            )
            .await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{missing}");
    }
}

#[tokio::test]
async fn a_gif_bundle_holds_the_clips_its_rows_reference() {
    let app = app().await;
    let lead = app
        .project("ex", json!({"media_kind": "gif", "overlap": 1}))
        .await;
    let (a, b) = (
        backflip::clips::demo_clip(1, 1.0),
        backflip::clips::demo_clip(2, 0.0),
    );
    let res = crate::clips::upload(&app, &lead, "ex", &[("a.gif", &a), ("b.gif", &b)]).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    let line =
        json!({"id": "g0", "prompt": "walk", "a": {"clip": "a.gif"}, "b": {"clip": "b.gif"}});
    let res = app
        .post_raw("/api/v1/projects/ex/import", &lead, format!("{line}\n"))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let rater = app.annotator("ex", &lead, "g1").await;
    let next = app.get("/api/v1/projects/ex/next", &rater).await.json();
    let id = next["assignment_id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &rater,
            json!({"choice": "left"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    // The CLI's clip store is the data dir's: put the clips there too.
    let dir = tempfile::tempdir().unwrap();
    let store = backflip::clips::ClipStore::local(&dir.path().join("clips")).unwrap();
    for clip in [&a, &b] {
        let sha = backflip::clips::sha256_hex(clip);
        store.put(&sha, clip.clone().into()).await.unwrap();
    }
    let out = dir.path().join("bundle.tar");
    let tar_bytes = cli_export(&app, &out, &["--format", "bundle"]);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut inside: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        inside.insert(name, bytes);
    }
    let prefs = lines(&inside["preferences.jsonl"]);
    assert_eq!(prefs.len(), 1);
    let chosen = prefs[0]["chosen"].as_str().unwrap();
    assert!(
        chosen.starts_with("clips/") && chosen.ends_with(".gif"),
        "{chosen}"
    );
    for path in [chosen, prefs[0]["rejected"].as_str().unwrap()] {
        let bytes = &inside[path];
        assert_eq!(format!("clips/{}.gif", sha(bytes)), path);
    }
    let manifest: Value = serde_json::from_slice(&inside["manifest.json"]).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let name = f["path"].as_str().unwrap();
        assert_eq!(f["sha256"], sha(&inside[name]), "{name}");
    }
    assert_eq!(manifest["files"].as_array().unwrap().len(), 4);
    assert!(inside.contains_key("README.md"));
}

#[tokio::test]
async fn the_export_page_downloads_and_queues_jobs() {
    let app = app().await;
    let (lead, _) = labelled(&app).await;
    let browser = crate::pages::Browser::login(&app, "lead-ex", "password123").await;
    let overview = browser.get(&app, "/projects/ex").await.text();
    assert!(
        overview.contains("/projects/ex/export"),
        "the project page links to exports"
    );
    let page = browser.get(&app, "/projects/ex/export").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("preferences-parquet") && html.contains("min_agreement"),
        "{html}"
    );
    assert!(html.contains("real_identities"), "leads may ask for names");
    let csrf = browser.csrf.clone();
    let fields = [
        ("csrf", csrf.as_str()),
        ("format", "preferences-jsonl"),
        ("since", ""),
        ("rater", ""),
        ("min_votes", ""),
        ("keep_ties", "true"),
    ];
    let download = browser
        .post(&app, "/projects/ex/export/download", &fields)
        .await;
    assert_eq!(download.status, StatusCode::OK, "{}", download.text());
    let api = api_export(&app, &lead, "format=preferences-jsonl&keep_ties=true").await;
    assert_eq!(download.body, api.body);
    // Without the CSRF token: refused.
    let forged = browser
        .post(&app, "/projects/ex/export/download", &fields[1..])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let queued = browser.post(&app, "/projects/ex/export", &fields).await;
    assert_eq!(queued.status, StatusCode::SEE_OTHER, "{}", queued.text());
    let page = browser.get(&app, "/projects/ex/export").await.text();
    assert!(
        page.contains("queued") && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    drain_exports(&app).await;
    let page = browser.get(&app, "/projects/ex/export").await.text();
    let job: i64 = app.count("select max(id) from jobs").await;
    let link = format!("/projects/ex/exports/{job}/preferences.jsonl");
    assert!(page.contains(&link), "{page}");
    let file = browser.get(&app, &link).await;
    assert_eq!(file.body, api.body);
}

#[test]
fn export_help_explains_formats_and_filters() {
    let out = Command::new(env!("CARGO_BIN_EXE_backflip"))
        .args(["export", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "raw-jsonl",
        "preferences-parquet",
        "bundle",
        "--since",
        "--exclude-rater",
        "--include-excluded",
        "--include-gold",
        "--min-agreement",
        "--keep-splits",
        "--real-identities",
        "manifest.json",
        "pseudonym",
    ] {
        assert!(
            text.contains(word),
            "{word} missing from export --help:\n{text}"
        );
    }
}
