//! The quality report of a project: agreement, per-rater reliability, bias and attention
//! detectors, gold failures and split pairs. `analyse` is pure (tested with hand-built data);
//! `load` gathers its input with one query.
//!
//! Which answers count where: a repeat (the same pair shown again, sides swapped) is used only
//! for self-consistency; can't-tell is no category (missing) for agreement; project-level
//! agreement leaves excluded raters out, while a rater's own figures (majority agreement,
//! reliability) are computed against everyone, so an excluded rater still has them.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

pub use super::figures::*;
use super::{
    checks::{drifts, flags},
    detectors::{self, Proportion, Timing},
    model_check,
    stats::{self, Rating},
};

/// Answers faster than this are "too fast" (ms).
pub const FAST_MS: i32 = 1500;
/// Cohen's kappa is shown for rater pairs sharing at least this many pairs.
pub const MIN_PAIR_OVERLAP: usize = 5;

pub(super) fn category(choice: &str) -> Option<usize> {
    match choice {
        "a" => Some(0),
        "b" => Some(1),
        "tie" => Some(2),
        _ => None,
    }
}

/// Index maps for the statistics, which take small integers.
pub(super) struct Index {
    pub(super) pairs: HashMap<Uuid, usize>,
    pub(super) raters: HashMap<Uuid, usize>,
}

impl Index {
    pub(super) fn new(obs: &[Obs]) -> Self {
        let mut idx = Index {
            pairs: HashMap::new(),
            raters: HashMap::new(),
        };
        for o in obs {
            let n = idx.pairs.len();
            idx.pairs.entry(o.pair).or_insert(n);
            let n = idx.raters.len();
            idx.raters.entry(o.rater).or_insert(n);
        }
        idx
    }

    /// First answers (a, b or tie) of the raters `keep` accepts.
    pub(super) fn ratings(&self, obs: &[Obs], keep: impl Fn(&Uuid) -> bool) -> Vec<Rating> {
        obs.iter()
            .filter(|o| o.kind != "repeat" && keep(&o.rater))
            .filter_map(|o| {
                Some(Rating {
                    item: self.pairs[&o.pair],
                    rater: self.raters[&o.rater],
                    category: category(&o.choice)?,
                })
            })
            .collect()
    }
}

/// Agreement statistics of a set of ratings.
pub fn agreement(ratings: &[Rating]) -> Agreement {
    let mut per_item = HashMap::<usize, usize>::new();
    for r in ratings {
        *per_item.entry(r.item).or_default() += 1;
    }
    Agreement {
        pairs: per_item.values().filter(|&&n| n >= 2).count(),
        percent: stats::percent_agreement(ratings),
        fleiss_kappa: stats::fleiss_kappa(ratings, 3),
        krippendorff_alpha: stats::krippendorff_alpha_nominal(ratings, 3),
    }
}

/// Project agreement with the raters in `excluded` left out.
pub fn project_agreement(obs: &[Obs], excluded: &HashSet<Uuid>) -> Agreement {
    let idx = Index::new(obs);
    agreement(&idx.ratings(obs, |r| !excluded.contains(r)))
}

/// Whether each (item, rater) answer agrees with the leave-one-out majority of the other
/// raters; absent where the others have no single most common answer.
pub(super) fn loo_flags(ratings: &[Rating]) -> HashMap<(usize, usize), bool> {
    let mut items = BTreeMap::<usize, BTreeMap<usize, usize>>::new();
    for r in ratings {
        items.entry(r.item).or_default().insert(r.rater, r.category);
    }
    let mut out = HashMap::new();
    for (&item, answers) in &items {
        for (&rater, &own) in answers {
            let mut tally = [0usize; 3];
            answers
                .iter()
                .filter(|(r, _)| **r != rater)
                .for_each(|(_, &c)| tally[c] += 1);
            let best = *tally.iter().max().unwrap_or(&0);
            if best > 0 && tally.iter().filter(|&&n| n == best).count() == 1 {
                out.insert((item, rater), tally[own] == best);
            }
        }
    }
    out
}

/// Counts of (left, right) among displayed answers, and of longer-text choices.
fn sides<'a>(obs: impl Iterator<Item = &'a Obs> + Clone) -> ((usize, usize), (usize, usize)) {
    let left = obs.clone().filter(|o| o.displayed == "left").count();
    let right = obs.clone().filter(|o| o.displayed == "right").count();
    let (mut longer, mut n) = (0, 0);
    for o in obs {
        if let (Some(la), Some(lb), Some(c)) = (o.len_a, o.len_b, category(&o.choice))
            && la != lb
            && c < 2
        {
            n += 1;
            longer += usize::from((c == 0) == (la > lb));
        }
    }
    ((left, right), (longer, n))
}

fn share_of<'a>(obs: impl Iterator<Item = &'a Obs> + Clone, choice: &str) -> Proportion {
    let n = obs.clone().count();
    Proportion::new(obs.filter(|o| o.choice == choice).count(), n)
}

/// Gold answers (repeats left out; can't-tell is no answer): (correct, answered).
fn gold_counts<'a>(obs: impl Iterator<Item = &'a Obs>) -> Proportion {
    let (mut k, mut n) = (0, 0);
    for o in obs.filter(|o| o.kind != "repeat" && o.choice != "cant_tell") {
        if let Some(g) = &o.gold {
            n += 1;
            k += usize::from(*g == o.choice);
        }
    }
    Proportion::new(k, n)
}

/// Repeats against the answer they repeat (can't-tell on either side left out).
fn consistency<'a>(obs: impl Iterator<Item = &'a Obs>, first: &HashMap<Uuid, &Obs>) -> Proportion {
    let (mut k, mut n) = (0, 0);
    for o in obs.filter(|o| o.kind == "repeat") {
        if let Some(orig) = o.repeat_of.and_then(|a| first.get(&a))
            && o.choice != "cant_tell"
            && orig.choice != "cant_tell"
        {
            n += 1;
            k += usize::from(orig.choice == o.choice);
        }
    }
    Proportion::new(k, n)
}

fn timing_of<'a>(obs: impl Iterator<Item = &'a Obs> + Clone) -> Timing {
    let d: Vec<_> = obs.clone().map(|o| o.duration_ms).collect();
    let c: Vec<_> = obs.map(|o| o.before_clip_end).collect();
    detectors::timing(&d, &c, FAST_MS)
}

/// The whole report, from a project's judgments (in time order) and its raters. `excluded`
/// overrides who counts as excluded (the exclusion preview adds one).
pub fn analyse(obs: &[Obs], raters: &[RaterInfo], excluded: &HashSet<Uuid>) -> ProjectQuality {
    let idx = Index::new(obs);
    let counted = |r: &Uuid| !excluded.contains(r);
    let kept: Vec<&Obs> = obs.iter().filter(|o| counted(&o.rater)).collect();
    let first_answers = || kept.iter().copied().filter(|o| o.kind != "repeat");
    let by_assignment: HashMap<Uuid, &Obs> = obs.iter().map(|o| (o.assignment, o)).collect();

    let project_ratings = idx.ratings(obs, counted);
    let everyone = idx.ratings(obs, |_| true);
    let loo = stats::loo_majority_agreement(&everyone);
    let flags_by = loo_flags(&everyone);
    let ds = stats::dawid_skene(&everyone, 3, 100, 1e-6);

    let ((left, right), (longer, with_length)) = sides(first_answers());
    let project_length =
        (with_length > 0).then(|| detectors::length_bias(longer, with_length, 0.5));
    let length_level = project_length.and_then(|t| t.share.share).unwrap_or(0.5);
    let names: HashMap<Uuid, &RaterInfo> = raters.iter().map(|r| (r.id, r)).collect();
    let name = |id: &Uuid| {
        names
            .get(id)
            .map_or_else(|| id.to_string(), |r| r.name.clone())
    };

    let mut rater_rows = vec![];
    let mut ids: Vec<Uuid> = idx.raters.keys().copied().collect();
    ids.sort_by_key(|id| name(id));
    let mut by_rater = HashMap::<Uuid, Vec<&Obs>>::new();
    for o in obs {
        by_rater.entry(o.rater).or_default().push(o);
    }
    for id in &ids {
        let ri = idx.raters[id];
        let mine = &by_rater[id];
        let own = || mine.iter().copied();
        let own_first = || own().filter(|o| o.kind != "repeat");
        let ((l, r), (lg, ln)) = sides(own_first());
        let series: Vec<(OffsetDateTime, Option<bool>)> = own_first()
            .map(|o| {
                let flag = category(&o.choice)
                    .and_then(|_| flags_by.get(&(idx.pairs[&o.pair], ri)).copied());
                (o.at, flag)
            })
            .collect();
        let (session_drift, day_drift) = drifts(&series);
        let (k, n) = loo.get(&ri).copied().unwrap_or((0, 0));
        let info = names.get(id);
        let mut row = RaterQuality {
            id: *id,
            name: name(id),
            excluded: excluded.contains(id),
            paused: info.is_some_and(|r| r.paused),
            judgments: own_first().count(),
            majority_agreement: Proportion::new(k, n),
            gold_accuracy: gold_counts(own()),
            self_consistency: consistency(own(), &by_assignment),
            position: detectors::position_bias(l, r),
            length: (ln > 0).then(|| detectors::length_bias(lg, ln, length_level)),
            ties: share_of(own_first(), "tie"),
            cant_tell: share_of(own_first(), "cant_tell"),
            timing: timing_of(own_first()),
            session_drift,
            day_drift,
            reliability: ds.as_ref().and_then(|d| d.rater_accuracy.get(&ri).copied()),
            flags: vec![],
        };
        row.flags = flags(&row);
        rater_rows.push(row);
    }

    // Rater pairs from the pairs they share: each item adds its answers to every pair of its
    // raters, so the cost follows items x overlap^2, not raters^2 x ratings.
    let position: HashMap<usize, usize> = ids
        .iter()
        .enumerate()
        .map(|(p, id)| (idx.raters[id], p))
        .collect();
    let mut items = BTreeMap::<usize, BTreeMap<usize, usize>>::new();
    for r in &everyone {
        items.entry(r.item).or_default().insert(r.rater, r.category);
    }
    let mut shared = BTreeMap::<(usize, usize), Vec<Rating>>::new();
    for (&item, answers) in &items {
        let mut here: Vec<(usize, usize)> = answers.iter().map(|(&r, &c)| (r, c)).collect();
        here.sort_by_key(|(r, _)| position[r]);
        for (i, &(ra, ca)) in here.iter().enumerate() {
            for &(rb, cb) in &here[i + 1..] {
                let v = shared.entry((position[&ra], position[&rb])).or_default();
                v.push(Rating {
                    item,
                    rater: ra,
                    category: ca,
                });
                v.push(Rating {
                    item,
                    rater: rb,
                    category: cb,
                });
            }
        }
    }
    let rater_pairs = shared
        .into_iter()
        .map(|((pa, pb), two)| {
            let (ra, rb) = (idx.raters[&ids[pa]], idx.raters[&ids[pb]]);
            let n = two.len() / 2;
            let same = two
                .chunks(2)
                .filter(|c| c[0].category == c[1].category)
                .count();
            PairAgreement {
                a: name(&ids[pa]),
                b: name(&ids[pb]),
                shared: n,
                agreement: Some(same as f64 / n as f64),
                kappa: stats::cohen_kappa(&two, ra, rb, 3, MIN_PAIR_OVERLAP),
            }
        })
        .collect();

    let mut tallies = BTreeMap::<Uuid, [usize; 3]>::new();
    let mut seen = HashSet::new();
    // Pairs by their newest counted answer, newest first.
    let mut newest_first = vec![];
    // The last first answer of each rater on each pair (as the statistics count it).
    for o in first_answers().collect::<Vec<_>>().into_iter().rev() {
        if let Some(c) = category(&o.choice)
            && seen.insert((o.pair, o.rater))
        {
            let t = tallies.entry(o.pair).or_insert_with(|| {
                newest_first.push(o.pair);
                [0; 3]
            });
            t[c] += 1;
        }
    }
    let majority_pairs = newest_first
        .iter()
        .map(|p| (p, tallies[p]))
        .filter(|(_, [a, b, tie])| a.max(b) * 2 > a + b + tie && a + b + tie >= 2)
        .take(model_check::CHECKED_PAIRS)
        .map(|(&pair, [a, b, tie])| SplitPair { pair, a, b, tie })
        .collect();
    let split_pairs = tallies
        .into_iter()
        .filter(|(_, t)| t.iter().filter(|&&n| n > 0).count() > 1)
        .map(|(pair, t)| SplitPair {
            pair,
            a: t[0],
            b: t[1],
            tie: t[2],
        })
        .collect();
    let gold_failures = kept
        .iter()
        .filter(|o| o.kind != "repeat" && o.choice != "cant_tell")
        .filter(|o| o.gold.as_ref().is_some_and(|g| *g != o.choice))
        .map(|o| GoldFailure {
            pair: o.pair,
            assignment: o.assignment,
            rater: name(&o.rater),
            gold: o.gold.clone().unwrap_or_default(),
            choice: o.choice.clone(),
        })
        .collect();

    ProjectQuality {
        judgments: first_answers().count(),
        agreement: agreement(&project_ratings),
        position: detectors::position_bias(left, right),
        length: project_length,
        ties: share_of(first_answers(), "tie"),
        cant_tell: share_of(first_answers(), "cant_tell"),
        gold_accuracy: gold_counts(kept.iter().copied()),
        self_consistency: consistency(kept.iter().copied(), &by_assignment),
        timing: timing_of(first_answers()),
        class_priors: ds.map(|d| d.priors).unwrap_or_default(),
        raters: rater_rows,
        rater_pairs,
        split_pairs,
        gold_failures,
        majority_pairs,
    }
}

/// A project's judgments in time order, with pair and rollout facts, and its raters.
pub async fn load(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> sqlx::Result<(Vec<Obs>, Vec<RaterInfo>)> {
    let obs = sqlx::query_as(
        "select j.assignment_id as assignment, a.repeat_of, j.rater_id as rater,
                j.comparison_id as pair, j.choice, j.displayed_choice as displayed, j.kind,
                j.duration_ms, j.answered_before_clip_end as before_clip_end, j.created_at as at,
                c.gold, length(ra.body) as len_a, length(rb.body) as len_b
         from judgments j
         join assignments a on a.id = j.assignment_id
         join comparisons c on c.id = j.comparison_id
         join rollouts ra on ra.id = c.rollout_a
         join rollouts rb on rb.id = c.rollout_b
         where j.project_id = $1
         order by j.created_at, j.id",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    let raters = sqlx::query_as(
        "select u.id, u.name, m.excluded_at is not null as excluded, m.paused_at is not null as paused
         from users u join project_members m on m.user_id = u.id and m.project_id = $1
         union all
         select u.id, u.name, false, false from users u
         where u.id in (select distinct rater_id from judgments where project_id = $1)
           and not exists (select 1 from project_members m where m.user_id = u.id and m.project_id = $1)",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok((obs, raters))
}

/// The report as the pages and the API show it now.
pub async fn report(pool: &PgPool, project_id: Uuid) -> sqlx::Result<ProjectQuality> {
    let (obs, raters) = load(&mut *pool.acquire().await?, project_id).await?;
    let excluded = raters.iter().filter(|r| r.excluded).map(|r| r.id).collect();
    Ok(analyse(&obs, &raters, &excluded))
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
