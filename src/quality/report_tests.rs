//! The report on a hand-built dataset whose every figure is worked out in the comments.

use super::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

const R1: u128 = 1;
const R2: u128 = 2;
const R3: u128 = 3;
const P: u128 = 100;

/// (rater, pair, choice, displayed, kind, repeat_of (assignment), duration)
type Row = (
    u128,
    u128,
    &'static str,
    &'static str,
    &'static str,
    Option<u128>,
    i32,
);

fn build(rows: &[Row]) -> Vec<Obs> {
    let t0 = time::macros::datetime!(2026-11-20 10:00 UTC);
    rows.iter()
        .enumerate()
        .map(
            |(i, &(rater, pair, choice, displayed, kind, repeat_of, ms))| Obs {
                // assignment ids: 1000 + row number
                assignment: id(1000 + i as u128),
                repeat_of: repeat_of.map(id),
                rater: id(rater),
                pair: id(P + pair),
                choice: choice.into(),
                displayed: displayed.into(),
                kind: kind.into(),
                duration_ms: Some(ms),
                before_clip_end: None,
                at: t0 + time::Duration::minutes(i as i64),
                // Pair 4 is gold with answer a.
                gold: (pair == 4).then(|| "a".to_string()),
                // b is always the longer text.
                len_a: Some(10),
                len_b: Some(20),
            },
        )
        .collect()
}

fn raters() -> Vec<RaterInfo> {
    [(R1, "r1"), (R2, "r2"), (R3, "r3")]
        .iter()
        .map(|&(i, n)| RaterInfo {
            id: id(i),
            name: n.into(),
            excluded: false,
            paused: false,
        })
        .collect()
}

/// P1: a a b · P2: b b b · P3: a tie a · P4 (gold a): cant_tell a b; r3 repeats P1 (was b,
/// now a: inconsistent). r1 answers in 500 ms, the others in 3 s.
fn dataset() -> Vec<Obs> {
    build(&[
        (R1, 1, "a", "left", "regular", None, 500),
        (R2, 1, "a", "right", "regular", None, 3000),
        (R3, 1, "b", "right", "regular", None, 3000),
        (R1, 2, "b", "left", "regular", None, 500),
        (R2, 2, "b", "left", "regular", None, 3000),
        (R3, 2, "b", "right", "regular", None, 3000),
        (R1, 3, "a", "left", "regular", None, 500),
        (R2, 3, "tie", "tie", "regular", None, 3000),
        (R3, 3, "a", "left", "regular", None, 3000),
        (R1, 4, "cant_tell", "cant_tell", "gold", None, 500),
        (R2, 4, "a", "right", "gold", None, 3000),
        (R3, 4, "b", "left", "gold", None, 3000),
        // r3's repeat of their P1 assignment (row 2 -> assignment 1002), sides swapped.
        (R3, 1, "a", "left", "repeat", Some(1002), 3000),
    ])
}

fn rater<'a>(q: &'a ProjectQuality, name: &str) -> &'a RaterQuality {
    q.raters.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn project_figures_match_the_hand_count() {
    let q = analyse(&dataset(), &raters(), &HashSet::new());
    // 12 first answers; the repeat counts only for self-consistency.
    assert_eq!(q.judgments, 12);
    // Agreeing answer pairs / all answer pairs per pair: P1 1/3, P2 3/3, P3 1/3, P4 0/1
    // (r1's can't-tell is missing) = 5/10.
    assert_eq!(q.agreement.pairs, 4);
    assert_eq!(q.agreement.percent, Some(0.5));
    // Left among left/right answers: r1 3-0, r2 1-2, r3 2-2 = 6 of 10.
    assert_eq!((q.position.share.k, q.position.share.n), (6, 10));
    // The longer text (b) among a/b answers: P1 1 of 3, P2 3/3, P3 0/2, P4 1/2 = 5 of 10.
    let length = q.length.unwrap();
    assert_eq!((length.share.k, length.share.n), (5, 10));
    assert_eq!((q.ties.k, q.ties.n), (1, 12));
    assert_eq!((q.cant_tell.k, q.cant_tell.n), (1, 12));
    // Gold (P4 = a): r2 right, r3 wrong, r1's can't-tell is no answer.
    assert_eq!((q.gold_accuracy.k, q.gold_accuracy.n), (1, 2));
    assert_eq!(q.gold_failures.len(), 1);
    assert_eq!(
        (
            q.gold_failures[0].rater.as_str(),
            q.gold_failures[0].choice.as_str()
        ),
        ("r3", "b")
    );
    assert_eq!((q.self_consistency.k, q.self_consistency.n), (0, 1));
    // P1, P3 and P4 split; P2 is unanimous.
    let split: Vec<Uuid> = q.split_pairs.iter().map(|s| s.pair).collect();
    assert_eq!(split.len(), 3);
    assert!(!split.contains(&id(P + 2)));
    // Strict a-or-b majorities of at least two answers, newest answer first: P3 (a 2, tie 1;
    // last answer at row 8), P2 (b 3, row 5), P1 (a 2-1, row 2; r3's later repeat does not
    // count). P4 is 1-1 after r1's can't-tell: no majority.
    let majority: Vec<(Uuid, [usize; 3])> = q
        .majority_pairs
        .iter()
        .map(|m| (m.pair, [m.a, m.b, m.tie]))
        .collect();
    assert_eq!(
        majority,
        [
            (id(P + 3), [2, 0, 1]),
            (id(P + 2), [0, 3, 0]),
            (id(P + 1), [2, 1, 0])
        ]
    );
    // r1 and r2 share P1-P3 (r1's can't-tell on P4 is missing): 2 of 3 agree; kappa needs 5.
    let r12 = q
        .rater_pairs
        .iter()
        .find(|p| p.a == "r1" && p.b == "r2")
        .unwrap();
    assert_eq!((r12.shared, r12.kappa), (3, None));
    assert!((r12.agreement.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(q.class_priors.len(), 3);
}

#[test]
fn rater_figures_match_the_hand_count() {
    let q = analyse(&dataset(), &raters(), &HashSet::new());
    // Leave-one-out majority: r1 is compared only on P2 (the others tie on P1 and P3).
    let (r1, r2, r3) = (rater(&q, "r1"), rater(&q, "r2"), rater(&q, "r3"));
    assert_eq!((r1.majority_agreement.k, r1.majority_agreement.n), (1, 1));
    // r2: P2 right, P3 (others a, a; r2 tie) wrong, P4 (other b; r2 a) wrong.
    assert_eq!((r2.majority_agreement.k, r2.majority_agreement.n), (1, 3));
    // r3: P1 (others a, a) wrong, P2 right, P4 (other a) wrong.
    assert_eq!((r3.majority_agreement.k, r3.majority_agreement.n), (1, 3));
    assert_eq!((r1.position.share.k, r1.position.share.n), (3, 3));
    // 3 of 3 on the left is no evidence yet: p = 0.25.
    assert!((r1.position.p_value - 0.25).abs() < 1e-12);
    assert!(r1.flags.iter().all(|f| f.code != "position_bias"));
    // r3 chose the longer text 3 of 4 times, tested against the project's 0.5.
    let l3 = r3.length.unwrap();
    assert_eq!((l3.share.k, l3.share.n, l3.reference), (3, 4, 0.5));
    // r1 answered in 500 ms every time: 4 of 4 under the floor, lower bound 0.51 > 0.2.
    assert_eq!(r1.timing.median_ms, Some(500.0));
    assert_eq!((r1.timing.too_fast.k, r1.timing.too_fast.n), (4, 4));
    assert!(r1.flags.iter().any(|f| f.code == "too_fast"));
    assert!(r2.flags.is_empty(), "{:?}", r2.flags);
    assert_eq!(r3.judgments, 4);
    assert_eq!((r3.self_consistency.k, r3.self_consistency.n), (0, 1));
    assert_eq!((r3.gold_accuracy.k, r3.gold_accuracy.n), (0, 1));
    // Sessions: all within minutes, one session each. r1's flags in time order: P1 none
    // (others tie), P2 agrees, P3 none, P4 can't-tell: first half 1 of 1, second half empty.
    assert_eq!((r1.session_drift.early.k, r1.session_drift.early.n), (1, 1));
    assert_eq!(r1.session_drift.late.n, 0);
    assert_eq!(r1.session_drift.p_value, None);
    assert_eq!(r1.day_drift.early.n, 0, "one day: nothing to compare");
    assert!(r1.reliability.is_some());
}

#[test]
fn excluding_a_rater_changes_project_agreement_only() {
    let obs = dataset();
    let excluded: HashSet<Uuid> = [id(R3)].into();
    // Without r3: P1 a a, P2 b b, P3 a tie, P4 a alone: 2 agreeing of 3 answer pairs.
    let a = project_agreement(&obs, &excluded);
    assert_eq!(a.pairs, 3);
    assert!((a.percent.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let q = analyse(&obs, &raters(), &excluded);
    assert_eq!(q.agreement, a);
    let r3 = rater(&q, "r3");
    assert!(r3.excluded);
    // r3's own figures are still computed against everyone.
    assert_eq!((r3.majority_agreement.k, r3.majority_agreement.n), (1, 3));
    // Excluded raters' gold failures leave the dashboard.
    assert!(q.gold_failures.is_empty());
    // And their answers leave the majorities: P3 is a 1, tie 1 without r3 (no majority).
    let majority: Vec<(Uuid, usize, usize)> = q
        .majority_pairs
        .iter()
        .map(|m| (m.pair, m.a, m.b))
        .collect();
    assert_eq!(majority, [(id(P + 2), 0, 2), (id(P + 1), 2, 0)]);
}

#[test]
fn an_always_left_rater_is_flagged() {
    // 12 pairs; r1 presses left on every one, whatever it means; r2 and r3 agree on a.
    let mut rows = vec![];
    for p in 0..12 {
        let left_is_a = p % 2 == 0;
        rows.push((
            R1,
            p,
            if left_is_a { "a" } else { "b" },
            "left",
            "regular",
            None,
            3000,
        ));
        rows.push((
            R2,
            p,
            "a",
            if left_is_a { "left" } else { "right" },
            "regular",
            None,
            3000,
        ));
        rows.push((
            R3,
            p,
            "a",
            if left_is_a { "left" } else { "right" },
            "regular",
            None,
            3000,
        ));
    }
    let q = analyse(&build(&rows), &raters(), &HashSet::new());
    let r1 = rater(&q, "r1");
    // 12 of 12 left: p = 2 * 0.5^12 = 0.000488.
    assert!((r1.position.p_value - 2.0 * 0.5f64.powi(12)).abs() < 1e-12);
    assert!(
        r1.flags.iter().any(|f| f.code == "position_bias"),
        "{:?}",
        r1.flags
    );
    // Right only half the time against a unanimous majority: 6 of 12, upper bound 0.746 > 0.6,
    // so not (yet) flagged for agreement; the others are not flagged at all.
    assert_eq!((r1.majority_agreement.k, r1.majority_agreement.n), (6, 12));
    assert!(rater(&q, "r2").flags.is_empty());
    // Dawid–Skene ranks the clicker below the careful raters.
    assert!(r1.reliability.unwrap() < rater(&q, "r2").reliability.unwrap());
}

#[test]
fn no_judgments_is_an_empty_report() {
    let q = analyse(&[], &raters(), &HashSet::new());
    assert_eq!(q.judgments, 0);
    assert!(q.raters.is_empty() && q.rater_pairs.is_empty());
    assert_eq!(q.agreement.percent, None);
    assert_eq!(q.position.share.share, None);
    assert!(q.length.is_none());
}

/// How long the report takes on a large synthetic project (`n` judgments, `raters` raters,
/// three answers a pair). Run: `cargo test --lib quality::report::tests::scale -- --ignored
/// --nocapture`; figures in docs/quality.md.
#[test]
#[ignore = "a benchmark"]
fn scale() {
    for (n, raters_n) in [(100_000usize, 100u128), (1_000_000, 1000)] {
        let t0 = time::macros::datetime!(2026-11-20 10:00 UTC);
        let obs: Vec<Obs> = (0..n)
            .map(|k| {
                let pair = k / 3;
                let rater = (pair * 7 + k % 3) as u128 % raters_n;
                let left = (k * 2_654_435_761) % 7 < 4;
                Obs {
                    assignment: id(10_000_000 + k as u128),
                    repeat_of: None,
                    rater: id(rater + 1),
                    pair: id(P + pair as u128),
                    choice: if (k * 40_503) % 5 < 3 { "a" } else { "b" }.into(),
                    displayed: if left { "left" } else { "right" }.into(),
                    kind: "regular".into(),
                    duration_ms: Some((k % 9000) as i32),
                    before_clip_end: None,
                    at: t0 + time::Duration::seconds(k as i64),
                    gold: (pair % 50 == 0).then(|| "a".to_string()),
                    len_a: Some(100),
                    len_b: Some((k % 200) as i32),
                }
            })
            .collect();
        let infos: Vec<RaterInfo> = (0..raters_n)
            .map(|r| RaterInfo {
                id: id(r + 1),
                name: format!("rater{r}"),
                excluded: false,
                paused: false,
            })
            .collect();
        let start = std::time::Instant::now();
        let q = analyse(&obs, &infos, &HashSet::new());
        println!(
            "{n} judgments, {raters_n} raters: {:.2} s ({} rater pairs)",
            start.elapsed().as_secs_f64(),
            q.rater_pairs.len()
        );
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
    }
}
