//! Agreement statistics for preference labels: how far raters agree, how good each rater is,
//! and whether answers lean to one side.
//!
//! Shared conventions: ratings are grouped by item, and a rater who answered the same item more
//! than once counts once, with their last answer (a revised answer replaces the earlier one).
//! Functions taking `n_categories` return `None` when a category is out of range, because
//! silently dropping such ratings would bias the statistic.

use std::collections::{BTreeMap, HashMap};

/// A rater's answer to one item (pair), as a category index (e.g. 0 = a, 1 = b, 2 = tie).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// The item (comparison pair) answered.
    pub item: usize,
    /// Who answered.
    pub rater: usize,
    /// The answer, below the `n_categories` passed to the statistics.
    pub category: usize,
}

/// item -> (rater -> category); later ratings replace earlier ones.
type Table = BTreeMap<usize, BTreeMap<usize, usize>>;

fn table(ratings: &[Rating]) -> Table {
    let mut t = Table::new();
    for r in ratings {
        t.entry(r.item).or_default().insert(r.rater, r.category);
    }
    t
}

fn in_range(ratings: &[Rating], n_categories: usize) -> bool {
    ratings.iter().all(|r| r.category < n_categories)
}

/// How many of an item's answers fall in each category.
fn counts(answers: &BTreeMap<usize, usize>, n_categories: usize) -> Vec<usize> {
    let mut c = vec![0; n_categories];
    for &a in answers.values() {
        c[a] += 1;
    }
    c
}

/// Pairwise percent agreement: agreeing pairs of answers on the same item divided by all such
/// pairs, pooled over items with at least two answers (an item with m answers weighs m(m-1)/2
/// pairs). `None` if no item has two answers.
pub fn percent_agreement(ratings: &[Rating]) -> Option<f64> {
    let (mut agree, mut pairs) = (0usize, 0usize);
    for answers in table(ratings).values() {
        let m = answers.len();
        let mut tally = BTreeMap::<usize, usize>::new();
        for &a in answers.values() {
            *tally.entry(a).or_default() += 1;
        }
        pairs += m * m.saturating_sub(1) / 2;
        agree += tally.values().map(|&n| n * (n - 1) / 2).sum::<usize>();
    }
    (pairs > 0).then(|| agree as f64 / pairs as f64)
}

/// Cohen's kappa (p_o - p_e) / (1 - p_e) for raters `r1` and `r2` over the items both answered,
/// with p_e from each rater's own category shares. `None` if they share fewer than
/// `min_overlap` items (or none), if `r1 == r2`, or if p_e = 1 (both always gave one answer).
pub fn cohen_kappa(
    ratings: &[Rating],
    r1: usize,
    r2: usize,
    n_categories: usize,
    min_overlap: usize,
) -> Option<f64> {
    if r1 == r2 || !in_range(ratings, n_categories) {
        return None;
    }
    let (mut rows, mut cols) = (vec![0usize; n_categories], vec![0usize; n_categories]);
    let (mut n, mut agree) = (0usize, 0usize);
    for answers in table(ratings).values() {
        if let (Some(&a), Some(&b)) = (answers.get(&r1), answers.get(&r2)) {
            rows[a] += 1;
            cols[b] += 1;
            n += 1;
            agree += usize::from(a == b);
        }
    }
    // Integer test of p_e == 1, so rounding can't turn "undefined" into a huge number.
    let chance: u128 = rows
        .iter()
        .zip(&cols)
        .map(|(&r, &c)| r as u128 * c as u128)
        .sum();
    if n == 0 || n < min_overlap || chance == (n as u128).pow(2) {
        return None;
    }
    let (p_o, p_e) = (agree as f64 / n as f64, chance as f64 / (n as f64).powi(2));
    Some((p_o - p_e) / (1.0 - p_e))
}

/// Fleiss' kappa (P̄ - P̄_e) / (1 - P̄_e) with pooled category shares. Classical Fleiss needs the
/// same number of answers n per item, so only items with exactly n answers are used, n being
/// the most common count among items with two or more (ties go to the larger n); the other
/// items are left out. `None` if there is no such item or all used answers are one category.
pub fn fleiss_kappa(ratings: &[Rating], n_categories: usize) -> Option<f64> {
    if !in_range(ratings, n_categories) {
        return None;
    }
    let t = table(ratings);
    let mut freq = BTreeMap::<usize, usize>::new();
    for answers in t.values().filter(|a| a.len() >= 2) {
        *freq.entry(answers.len()).or_default() += 1;
    }
    let n = freq
        .iter()
        .max_by_key(|&(m, f)| (*f, *m))
        .map(|(m, _)| *m)?;
    let rows: Vec<Vec<usize>> = t
        .values()
        .filter(|a| a.len() == n)
        .map(|a| counts(a, n_categories))
        .collect();
    let mut totals = vec![0usize; n_categories];
    let mut p_bar = 0.0;
    for row in &rows {
        for (t, x) in totals.iter_mut().zip(row) {
            *t += x;
        }
        let squares: usize = row.iter().map(|x| x * x).sum();
        p_bar += (squares - n) as f64 / (n * (n - 1)) as f64;
    }
    p_bar /= rows.len() as f64;
    let total = n * rows.len();
    if totals.contains(&total) {
        return None;
    }
    let p_e: f64 = totals
        .iter()
        .map(|&x| (x as f64 / total as f64).powi(2))
        .sum();
    Some((p_bar - p_e) / (1.0 - p_e))
}

/// Krippendorff's alpha, nominal metric: 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k,
/// where o is the coincidence matrix (each ordered pair of answers within an item with m answers
/// adds 1/(m-1)) and n_c its marginals. Any number of raters per item; items with fewer than
/// two answers are not pairable and are ignored. `None` if no disagreement is possible (fewer
/// than two pairable values, or all in one category).
pub fn krippendorff_alpha_nominal(ratings: &[Rating], n_categories: usize) -> Option<f64> {
    if !in_range(ratings, n_categories) {
        return None;
    }
    let k = n_categories;
    let mut o = vec![vec![0.0f64; k]; k];
    for answers in table(ratings).values() {
        let m = answers.len();
        if m < 2 {
            continue;
        }
        let nu = counts(answers, k);
        for c in 0..k {
            for d in 0..k {
                // Ordered pairs of distinct answers: a value is never paired with itself.
                let pairs = if c == d {
                    nu[c] * nu[c].saturating_sub(1)
                } else {
                    nu[c] * nu[d]
                };
                o[c][d] += pairs as f64 / (m - 1) as f64;
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();
    let (mut observed, mut expected) = (0.0, 0.0);
    for c in 0..k {
        for d in (0..k).filter(|&d| d != c) {
            observed += o[c][d];
            expected += n_c[c] * n_c[d];
        }
    }
    (expected > 0.0).then(|| 1.0 - (n - 1.0) * observed / expected)
}

/// For each rater: (agreements, comparisons) with the leave-one-out majority, i.e. the single
/// most common answer among the other raters on the same item. Items where the others tie for
/// most common, or where the rater is alone, are skipped; every rater in the input is listed.
pub fn loo_majority_agreement(ratings: &[Rating]) -> BTreeMap<usize, (usize, usize)> {
    let mut out: BTreeMap<usize, (usize, usize)> =
        ratings.iter().map(|r| (r.rater, (0, 0))).collect();
    for answers in table(ratings).values() {
        let mut tally = BTreeMap::<usize, usize>::new();
        for &a in answers.values() {
            *tally.entry(a).or_default() += 1;
        }
        for (rater, &own) in answers {
            let others = |c: usize| tally[&c] - usize::from(c == own);
            let best = tally.keys().map(|&c| others(c)).max().unwrap_or(0);
            let mut leaders = tally.keys().filter(|&&c| others(c) == best);
            if let (Some(&leader), None, true) = (leaders.next(), leaders.next(), best > 0) {
                let entry = out.entry(*rater).or_default();
                entry.0 += usize::from(leader == own);
                entry.1 += 1;
            }
        }
    }
    out
}

/// Wilson score interval (centre ± half-width of the inverted normal score test) for
/// `successes` out of `trials` at normal quantile `z` (1.96 for 95%). (0, 1) when `trials` is
/// 0; `successes` above `trials` is treated as `trials`.
pub fn wilson_interval(successes: usize, trials: usize, z: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let s = successes.min(trials);
    let (n, p, z2) = (trials as f64, s as f64 / trials as f64, z * z);
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z.abs() / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 or n successes the bound is exactly 0 or 1; don't report rounding noise around it.
    let low = if s == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if s == trials {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (low, high)
}

/// Two-sided exact binomial test against p = 1/2: the probability, under fair coin flips, of a
/// count at least as far from trials/2 as `successes` (2 * P(X <= min(s, n - s)), capped at 1).
/// 1 when `trials` is 0; `successes` above `trials` is treated as `trials`.
pub fn binomial_test_half(successes: usize, trials: usize) -> f64 {
    let s = successes.min(trials);
    let m = s.min(trials - s);
    if 2 * m >= trials {
        return 1.0;
    }
    // Sum the lower tail downwards from its largest term pmf(m), as ratios to it, so that
    // nothing underflows when 2^-n does; the terms shrink geometrically, so stop early.
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in (1..=m).rev() {
        term *= k as f64 / (trials - k + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    let ln_pmf_m = ln_factorial(trials)
        - ln_factorial(m)
        - ln_factorial(trials - m)
        - trials as f64 * std::f64::consts::LN_2;
    (2.0 * (ln_pmf_m + sum.ln()).exp()).min(1.0)
}

/// ln(x!): exact sum for small x, Stirling's series beyond (error below 1e-13 from x = 32).
fn ln_factorial(x: usize) -> f64 {
    if x < 32 {
        return (2..=x).map(|i| (i as f64).ln()).sum();
    }
    let x = x as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
        + 1.0 / (1260.0 * x.powi(5))
}

/// Half a count added to every confusion cell and prior (add-half, Krichevsky–Trofimov
/// smoothing), so a rater seen a few times is not judged perfectly right or wrong.
const PSEUDO_COUNT: f64 = 0.5;

/// Dawid–Skene latent-class model: each item has a hidden true class (with prior `priors`) and
/// each rater answers class l for true class k with probability `confusion[rater][k][l]`.
/// `rater_accuracy` is `sum_k priors[k] * confusion[rater][k][k]`; a rater who always gives one
/// answer scores that class's prior, so compare accuracies with the largest prior.
#[derive(Debug, Clone)]
pub struct DawidSkene {
    /// Estimated share of items whose true class is each category.
    pub priors: Vec<f64>,
    /// Per rater: row = true class, column = answer, each row summing to 1.
    pub confusion: BTreeMap<usize, Vec<Vec<f64>>>,
    /// Item ids in increasing order, and for each (k at a time, see `posterior`) the
    /// probability of each true class given all answers.
    items: Vec<usize>,
    posteriors: Vec<f64>,
    /// Per rater: probability of answering the true class on a random item.
    pub rater_accuracy: BTreeMap<usize, f64>,
    /// EM iterations run (at least 1).
    pub iterations: usize,
    /// Observed-data log-likelihood at the returned parameters.
    pub log_likelihood: f64,
}

impl DawidSkene {
    /// An item's probability of each true class given all answers; None for an item with no
    /// answer.
    pub fn posterior(&self, item: usize) -> Option<&[f64]> {
        let k = self.priors.len();
        let i = self.items.binary_search(&item).ok()?;
        Some(&self.posteriors[i * k..(i + 1) * k])
    }

    /// Every item with its posterior, in item order.
    pub fn posteriors(&self) -> impl Iterator<Item = (usize, &[f64])> {
        let k = self.priors.len();
        self.items.iter().copied().zip(self.posteriors.chunks(k))
    }
}

/// Fits Dawid–Skene by EM, starting from each item's vote shares (soft majority vote), with half
/// a count added to every count (MAP steps under a Dirichlet(1.5) prior). Runs at least one
/// iteration and stops after `max_iter` or when the log-likelihood gains less than `tol`.
/// `None` if there are no ratings, no categories, or a category is out of range.
pub fn dawid_skene(
    ratings: &[Rating],
    n_categories: usize,
    max_iter: usize,
    tol: f64,
) -> Option<DawidSkene> {
    fit_dawid_skene(ratings, n_categories, max_iter, tol, |_| {}, true)
}

/// Dawid–Skene by EM from the vote shares as `start` leaves them; with `align`, the latent
/// classes are named afterwards as `align_classes` says.
fn fit_dawid_skene(
    ratings: &[Rating],
    n_categories: usize,
    max_iter: usize,
    tol: f64,
    start: impl Fn(&mut [f64]),
    align: bool,
) -> Option<DawidSkene> {
    let k = n_categories;
    if k == 0 || ratings.is_empty() || !in_range(ratings, k) {
        return None;
    }
    // Dense form for the EM loop: raters in id order get slots, each item's answers are
    // (slot, answer) runs between offsets, posteriors and confusion are flat arrays, and the
    // E-step reads logs of the confusion taken once per iteration (raters × k² of them, not
    // one per answer and class). Built by sorting references to the ratings (a stable sort,
    // so the last of a rater's answers to an item is the one kept), not a map per item: at a
    // million ratings the maps alone took ~90 MB.
    let mut order: Vec<&Rating> = ratings.iter().collect();
    order.sort_by_key(|r| (r.item, r.rater));
    order.dedup_by(|later, earlier| {
        let same = (later.item, later.rater) == (earlier.item, earlier.rater);
        if same {
            *earlier = *later;
        }
        same
    });
    let mut raters: Vec<usize> = order.iter().map(|r| r.rater).collect();
    raters.sort_unstable();
    raters.dedup();
    let slot: HashMap<usize, usize> = raters.iter().enumerate().map(|(s, &r)| (r, s)).collect();
    let mut answers: Vec<(usize, usize)> = Vec::with_capacity(order.len());
    let (mut item_ids, mut ends, mut post) = (vec![], vec![], vec![]);
    for run in order.chunk_by(|x, y| x.item == y.item) {
        answers.extend(run.iter().map(|r| (slot[&r.rater], r.category)));
        ends.push(answers.len());
        item_ids.push(run[0].item);
        let mut shares = vec![0.0; k];
        run.iter().for_each(|r| shares[r.category] += 1.0);
        post.extend(shares.iter().map(|c| c / run.len() as f64));
    }
    drop(order);
    post.chunks_mut(k).for_each(&start);
    let items = || {
        ends.iter()
            .scan(0, |start, &end| {
                let run = &answers[*start..end];
                *start = end;
                Some(run)
            })
            .enumerate()
    };
    let at = |s: usize, c: usize, l: usize| (s * k + c) * k + l;
    let (mut log_likelihood, mut iterations) = (f64::NEG_INFINITY, 0);
    let (mut priors, mut confusion) = loop {
        // M-step: expected counts under the current posteriors, plus the pseudo-count.
        let mut priors = vec![PSEUDO_COUNT; k];
        let mut confusion = vec![PSEUDO_COUNT; raters.len() * k * k];
        for (i, run) in items() {
            let p = &post[i * k..(i + 1) * k];
            for (c, &pc) in p.iter().enumerate() {
                priors[c] += pc;
                for &(s, l) in run {
                    confusion[at(s, c, l)] += pc;
                }
            }
        }
        normalise(&mut priors);
        confusion.chunks_mut(k).for_each(normalise);
        let log_conf: Vec<f64> = confusion.iter().map(|x| x.ln()).collect();
        let log_priors: Vec<f64> = priors.iter().map(|x| x.ln()).collect();
        // E-step, in log space: many raters on an item would underflow plain products.
        let mut ll = 0.0;
        let mut logs = vec![0.0; k];
        for (i, run) in items() {
            for (c, x) in logs.iter_mut().enumerate() {
                *x = log_priors[c] + run.iter().map(|&(s, l)| log_conf[at(s, c, l)]).sum::<f64>();
            }
            let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logs.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            post[i * k..(i + 1) * k]
                .iter_mut()
                .zip(&logs)
                .for_each(|(pc, x)| *pc = (x - lse).exp());
            ll += lse;
        }
        iterations += 1;
        let gain = ll - log_likelihood;
        log_likelihood = ll;
        if iterations >= max_iter || gain < tol {
            break (priors, confusion);
        }
    };
    if align {
        // Expected counts of (latent class, answer) over every answer.
        let mut matched = vec![0.0; k * k];
        for (i, run) in items() {
            for &(_, l) in run {
                for c in 0..k {
                    matched[c * k + l] += post[i * k + c];
                }
            }
        }
        if let Some(name) = align_classes(&matched, k) {
            let rename = |v: &[f64]| {
                let mut out = vec![0.0; k];
                v.iter().enumerate().for_each(|(c, &x)| out[name[c]] = x);
                out
            };
            priors = rename(&priors);
            post.chunks_mut(k).for_each(|p| {
                let renamed = rename(p);
                p.copy_from_slice(&renamed);
            });
            let old = confusion.clone();
            for s in 0..raters.len() {
                for (c, &to_class) in name.iter().enumerate() {
                    let (from, to) = (at(s, c, 0), at(s, to_class, 0));
                    confusion[to..to + k].copy_from_slice(&old[from..from + k]);
                }
            }
        }
    }
    let confusion: BTreeMap<usize, Vec<Vec<f64>>> = raters
        .iter()
        .enumerate()
        .map(|(s, &r)| {
            (
                r,
                confusion[s * k * k..(s + 1) * k * k]
                    .chunks(k)
                    .map(<[f64]>::to_vec)
                    .collect(),
            )
        })
        .collect();
    let rater_accuracy = confusion
        .iter()
        .map(|(&r, m)| (r, (0..k).map(|c| priors[c] * m[c][c]).sum()))
        .collect();
    Some(DawidSkene {
        priors,
        confusion,
        items: item_ids,
        posteriors: post,
        rater_accuracy,
        iterations,
        log_likelihood,
    })
}

/// Label switching: Dawid–Skene's likelihood is the same under any renaming of the latent
/// classes, so EM can settle on a fit where class "a" means true answer b and raters look
/// reliably wrong. The classes are named so that raters' answers match them most often:
/// `matched[c * k + l]` is the expected count of answers l on items of latent class c, and the
/// renaming `name` (class c becomes `name[c]`) maximises the sum of `matched[c][name[c]]`.
/// None when the classes are already named so (ties keep the current names), or k > 6.
fn align_classes(matched: &[f64], k: usize) -> Option<Vec<usize>> {
    fn permutations(prefix: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == k {
            out.push(prefix.clone());
            return;
        }
        for c in 0..k {
            if !prefix.contains(&c) {
                prefix.push(c);
                permutations(prefix, k, out);
                prefix.pop();
            }
        }
    }
    if k > 6 {
        return None;
    }
    let score = |name: &[usize]| (0..k).map(|c| matched[c * k + name[c]]).sum::<f64>();
    let identity: Vec<usize> = (0..k).collect();
    let mut all = vec![];
    permutations(&mut vec![], k, &mut all);
    let mut best = (score(&identity), identity.clone());
    for name in all {
        let s = score(&name);
        if s > best.0 + 1e-9 {
            best = (s, name);
        }
    }
    (best.1 != identity).then_some(best.1)
}

fn normalise(v: &mut [f64]) {
    let s: f64 = v.iter().sum();
    v.iter_mut().for_each(|x| *x /= s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(item: usize, rater: usize, category: usize) -> Rating {
        Rating {
            item,
            rater,
            category,
        }
    }

    /// Ratings from (item, rater, category) triples.
    fn rs(v: &[(usize, usize, usize)]) -> Vec<Rating> {
        v.iter().map(|&(i, j, c)| r(i, j, c)).collect()
    }

    /// Reliability data, one row per rater; 0 = missing, v > 0 = category v - 1.
    fn from_rows<const N: usize>(rows: &[[usize; N]]) -> Vec<Rating> {
        let cells = rows.iter().enumerate().flat_map(|(j, row)| {
            row.iter()
                .enumerate()
                .filter(|c| *c.1 > 0)
                .map(move |(i, &v)| r(i, j, v - 1))
        });
        cells.collect()
    }

    #[track_caller]
    fn near(got: Option<f64>, want: f64, eps: f64) {
        let got = got.expect("a value");
        assert!((got - want).abs() <= eps, "got {got}, want {want}");
    }

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders,
    /// 12 units, values 1..=5, missing data; published nominal alpha 0.743.
    fn krippendorff_2011() -> Vec<Rating> {
        from_rows(&[
            [1, 2, 3, 3, 2, 1, 4, 1, 2, 0, 0, 0],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, 0, 3],
            [0, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 0],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, 0],
        ])
    }

    /// Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters each,
    /// 5 categories, given as counts per category; published kappa 0.210.
    fn fleiss_1971() -> Vec<Rating> {
        let table = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let mut out = Vec::new();
        for (item, row) in table.iter().enumerate() {
            let cats = row
                .iter()
                .enumerate()
                .flat_map(|(c, &n)| std::iter::repeat_n(c, n));
            out.extend(cats.enumerate().map(|(rater, c)| r(item, rater, c)));
        }
        out
    }

    #[test]
    fn krippendorff_matches_published_examples() {
        let data = krippendorff_2011();
        let alpha = krippendorff_alpha_nominal(&data, 5);
        near(alpha, 113.0 / 152.0, 1e-12);
        near(alpha, 0.743, 5e-4);
        let reversed: Vec<Rating> = data.iter().rev().copied().collect();
        near(
            krippendorff_alpha_nominal(&reversed, 5),
            113.0 / 152.0,
            1e-12,
        );
        // Wikipedia's "Krippendorff's alpha" example: 3 coders, 15 units, nominal alpha 0.691.
        let wiki = from_rows(&[
            [0, 0, 0, 0, 0, 3, 4, 1, 2, 1, 1, 3, 3, 0, 3],
            [1, 0, 2, 1, 3, 3, 4, 3, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 2, 1, 3, 4, 4, 0, 2, 1, 1, 3, 3, 0, 4],
        ]);
        near(krippendorff_alpha_nominal(&wiki, 4), 56.0 / 81.0, 1e-12);
    }

    #[test]
    fn fleiss_matches_published_example_and_uses_modal_count() {
        let mut data = fleiss_1971();
        near(fleiss_kappa(&data, 5), 0.209_930_704_421_955, 1e-12);
        // Items with another number of answers are left out, so the value is unchanged.
        data.extend(rs(&[(10, 0, 0), (10, 1, 1), (10, 2, 1), (11, 0, 4)]));
        near(fleiss_kappa(&data, 5), 0.209_930_704_421_955, 1e-12);
        assert_eq!(fleiss_kappa(&rs(&[(0, 0, 1), (0, 1, 1)]), 3), None);
        assert_eq!(fleiss_kappa(&rs(&[(0, 0, 1)]), 3), None);
    }

    /// Two raters (0 and 1) answering items 0, 1, ... with the given pairs.
    fn pairs(v: &[(usize, usize)]) -> Vec<Rating> {
        let each = v.iter().enumerate();
        each.flat_map(|(i, &(a, b))| [r(i, 0, a), r(i, 1, b)])
            .collect()
    }

    #[test]
    fn cohen_matches_textbook_example_with_missing_data() {
        // Wikipedia's "Cohen's kappa" grant example: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
        let table = [
            vec![(0, 0); 20],
            vec![(0, 1); 5],
            vec![(1, 0); 10],
            vec![(1, 1); 15],
        ];
        let mut data = pairs(&table.concat());
        // Items only one of them rated, and a third rater, must not count.
        data.extend(rs(&[(100, 0, 1), (101, 1, 0), (0, 2, 1), (102, 2, 0)]));
        near(cohen_kappa(&data, 0, 1, 2, 50), 0.4, 1e-12);
        near(cohen_kappa(&data, 1, 0, 2, 1), 0.4, 1e-12);
        assert_eq!(cohen_kappa(&data, 0, 1, 2, 51), None);
        assert_eq!(cohen_kappa(&data, 0, 0, 2, 1), None);
        assert_eq!(cohen_kappa(&data, 0, 1, 1, 1), None); // category 1 out of range
        assert_eq!(
            cohen_kappa(&pairs(&[(0, 0), (1, 1), (2, 2)]), 0, 1, 3, 1),
            Some(1.0)
        );
        near(
            cohen_kappa(&pairs(&[(0, 0), (0, 1), (1, 0), (1, 1)]), 0, 1, 2, 1),
            0.0,
            1e-12,
        );
        near(
            cohen_kappa(&pairs(&[(0, 1), (1, 0)]), 0, 1, 2, 1),
            -1.0,
            1e-12,
        );
        // Both always answered "a": p_e = 1, kappa undefined even though they always agree.
        assert_eq!(cohen_kappa(&pairs(&[(0, 0), (0, 0)]), 0, 1, 3, 1), None);
    }

    #[test]
    fn percent_agreement_by_hand() {
        // Item 0: a, a, b (1 agreeing pair of 3). Item 1: b, b (1 of 1), rater 0 having first
        // said tie and then revised to b. Item 2: one answer, not pairable. Total 2 of 4.
        let data = rs(&[
            (0, 0, 0),
            (0, 1, 0),
            (0, 2, 1),
            (1, 0, 2),
            (1, 0, 1),
            (1, 1, 1),
        ]);
        let single = rs(&[(2, 3, 0)]);
        assert_eq!(
            percent_agreement(&[data.clone(), single.clone()].concat()),
            Some(0.5)
        );
        assert_eq!(percent_agreement(&single), None);
        assert_eq!(percent_agreement(&[]), None);
    }

    #[test]
    fn loo_majority_by_hand() {
        let data = rs(&[
            // Item 0: a, a, b. Raters 0 and 1 see a tie (a vs b): skipped. Rater 2 sees a, a.
            (0, 0, 0),
            (0, 1, 0),
            (0, 2, 1),
            // Item 1: a, a, a, tie. Raters 0..=2 see a majority of a; rater 3 too, and differs.
            (1, 0, 0),
            (1, 1, 0),
            (1, 2, 0),
            (1, 3, 2),
            // Item 2: b, tie. Each sees the other alone as the majority, and differs.
            (2, 0, 1),
            (2, 3, 2),
            // Item 3: rater 4 alone, never compared but still listed.
            (3, 4, 0),
        ]);
        let want = [
            (0, (1, 2)),
            (1, (1, 1)),
            (2, (1, 2)),
            (3, (0, 2)),
            (4, (0, 0)),
        ];
        assert_eq!(loo_majority_agreement(&data), BTreeMap::from(want));
    }

    #[test]
    fn wilson_known_values() {
        let (lo, hi) = wilson_interval(0, 10, 1.96);
        assert_eq!(lo, 0.0);
        near(Some(hi), 0.277_540, 1e-6);
        // Newcombe (1998), Stat Med 17:857, Table I, method 3 (score, no continuity correction).
        for (s, n, lo, hi) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson_interval(s, n, 1.96);
            near(Some(l), lo, 5e-5);
            near(Some(h), hi, 5e-5);
        }
        let (lo, hi) = wilson_interval(5, 10, 1.96);
        near(Some(lo + hi), 1.0, 1e-12);
        near(Some(lo), 0.236_590, 1e-6);
        assert_eq!(wilson_interval(10, 10, 1.96).1, 1.0);
        assert_eq!(wilson_interval(0, 0, 1.96), (0.0, 1.0));
    }

    #[test]
    fn binomial_test_known_values() {
        let p = |s, n| Some(binomial_test_half(s, n));
        near(p(9, 10), 22.0 / 1024.0, 1e-15);
        assert_eq!(p(1, 10), p(9, 10));
        near(p(60, 100), 0.056_887_933_640_980_79, 1e-13); // R: binom.test(60, 100): 0.05689
        near(p(7, 7), 1.0 / 64.0, 1e-15);
        near(p(0, 20), 2.0 / 1_048_576.0, 1e-18);
        // Large n: 2^-10000 underflows, the answer must not. Exact value by big-integer sum.
        near(
            p(4700, 10_000).map(|x| x / 2.076_033_695_920_724_7e-9),
            1.0,
            1e-9,
        );
        for (s, n) in [(5, 10), (3, 7), (0, 0)] {
            assert_eq!(p(s, n), Some(1.0));
        }
    }

    #[test]
    fn perfect_agreement_and_systematic_disagreement() {
        // Perfect agreement with missing data (1 to 4 answers per item): every coefficient is 1.
        let perfect: Vec<Rating> = (0..12)
            .flat_map(|i| (0..1 + i % 4).map(move |rater| r(i, rater, i % 3)))
            .collect();
        assert_eq!(krippendorff_alpha_nominal(&perfect, 3), Some(1.0));
        assert_eq!(percent_agreement(&perfect), Some(1.0));
        assert_eq!(fleiss_kappa(&perfect, 3), Some(1.0));
        // Two raters who always disagree: below zero (alpha = -(N-1)/N for N items).
        let opposed = pairs(&[(0, 1), (1, 0)].repeat(5));
        near(krippendorff_alpha_nominal(&opposed, 2), -0.9, 1e-12);
        near(fleiss_kappa(&opposed, 2), -1.0, 1e-12);
        // One category only: chance agreement is total, so the coefficients are undefined.
        let flat = pairs(&[(1, 1), (1, 1)]);
        assert_eq!(krippendorff_alpha_nominal(&flat, 2), None);
        assert_eq!(fleiss_kappa(&flat, 2), None);
    }

    #[test]
    fn relabelling_categories_changes_nothing() {
        let perm = [3, 0, 4, 1, 2];
        for data in [krippendorff_2011(), fleiss_1971()] {
            let moved: Vec<Rating> = data
                .iter()
                .map(|x| r(x.item, x.rater, perm[x.category]))
                .collect();
            let stats = |d: &[Rating]| {
                [
                    krippendorff_alpha_nominal(d, 5),
                    fleiss_kappa(d, 5),
                    cohen_kappa(d, 0, 1, 5, 1),
                    percent_agreement(d),
                ]
            };
            for (a, b) in stats(&data).into_iter().zip(stats(&moved)) {
                near(a, b.unwrap(), 1e-12);
            }
        }
    }

    /// xorshift64: enough randomness for a reproducible simulation.
    struct XorShift(u64);
    impl XorShift {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn dawid_skene_separates_good_raters_from_spammers() {
        // 300 items, true class b with probability 0.4; raters 0..5 are right 90% of the time,
        // raters 5..7 answer at random; each rater sees about 70% of the items.
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut truth, mut data) = (Vec::new(), Vec::new());
        for item in 0..300 {
            let t = usize::from(rng.unit() < 0.4);
            truth.push(t);
            for rater in 0..7 {
                let (seen, u) = (rng.unit() >= 0.3, rng.unit());
                let answer = if rater < 5 {
                    t ^ usize::from(u >= 0.9)
                } else {
                    usize::from(u < 0.5)
                };
                if seen {
                    data.push(r(item, rater, answer));
                }
            }
        }
        let ds = dawid_skene(&data, 2, 200, 1e-9).unwrap();
        assert!(ds.iterations > 1 && ds.log_likelihood.is_finite());
        near(Some(ds.priors.iter().sum()), 1.0, 1e-12);
        let acc = &ds.rater_accuracy;
        let worst_good = (0..5).map(|g| acc[&g]).fold(1.0, f64::min);
        let best_spam = (5..7).map(|s| acc[&s]).fold(0.0, f64::max);
        assert!(worst_good > 0.82 && best_spam < 0.62, "{acc:?}");
        assert!(worst_good - best_spam > 0.25, "{acc:?}");
        // Posterior labels vs majority vote (a tie counts as half right, as a coin flip would).
        let (mut ds_right, mut mv_right) = (0.0, 0.0);
        for (item, answers) in &table(&data) {
            let p = ds.posterior(*item).unwrap();
            ds_right += f64::from(u8::from(usize::from(p[1] > p[0]) == truth[*item]));
            let twice_b = 2 * answers.values().filter(|&&a| a == 1).count();
            mv_right += match twice_b.cmp(&answers.len()) {
                std::cmp::Ordering::Equal => 0.5,
                o => f64::from(u8::from(usize::from(o.is_gt()) == truth[*item])),
            };
        }
        assert!(ds_right >= mv_right, "DS {ds_right} vs majority {mv_right}");
        assert!(ds_right > 0.93 * 300.0, "{ds_right}");
    }

    #[test]
    fn dawid_skene_names_classes_by_the_raters_answers() {
        // Five raters right 85% of the time on 200 items. EM started from the vote shares
        // with the classes swapped converges to the mirror image of the usual fit (the
        // likelihood cannot tell them apart): every rater reliably wrong. The alignment names
        // the classes back, giving the usual fit.
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let mut data = Vec::new();
        for item in 0..200 {
            let t = usize::from(rng.unit() < 0.3);
            for rater in 0..5 {
                data.push(r(item, rater, t ^ usize::from(rng.unit() >= 0.85)));
            }
        }
        let usual = dawid_skene(&data, 2, 200, 1e-9).unwrap();
        let swap = |p: &mut [f64]| p.swap(0, 1);
        let switched = fit_dawid_skene(&data, 2, 200, 1e-9, swap, false).unwrap();
        for rater in 0..5 {
            assert!(usual.rater_accuracy[&rater] > 0.8, "{usual:?}");
            assert!(switched.rater_accuracy[&rater] < 0.2, "{switched:?}");
        }
        let aligned = fit_dawid_skene(&data, 2, 200, 1e-9, swap, true).unwrap();
        for rater in 0..5 {
            near(
                Some(aligned.rater_accuracy[&rater]),
                usual.rater_accuracy[&rater],
                1e-9,
            );
        }
        near(Some(aligned.priors[1]), usual.priors[1], 1e-9);
        near(Some(aligned.priors[1]), 0.3, 0.1);
        for (item, p) in usual.posteriors() {
            near(Some(aligned.posterior(item).unwrap()[1]), p[1], 1e-9);
        }
        near(Some(aligned.log_likelihood), usual.log_likelihood, 1e-9);
        // The renaming itself: three classes, answers mostly one class off.
        let matched = [1.0, 9.0, 0.0, 0.0, 1.0, 8.0, 7.0, 0.0, 1.0];
        assert_eq!(align_classes(&matched, 3), Some(vec![1, 2, 0]));
        assert_eq!(align_classes(&[5.0, 1.0, 1.0, 5.0], 2), None);
        assert_eq!(
            align_classes(&[1.0, 1.0, 1.0, 1.0], 2),
            None,
            "a tie keeps the names"
        );
    }

    #[test]
    fn dawid_skene_edge_cases() {
        assert!(dawid_skene(&[], 2, 10, 1e-6).is_none());
        assert!(dawid_skene(&[r(0, 0, 2)], 2, 10, 1e-6).is_none());
        // One answer from one rater: smoothed, never a 0/1 probability.
        let ds = dawid_skene(&[r(0, 0, 1)], 2, 0, 1e-6).unwrap();
        assert_eq!(ds.iterations, 1);
        let p = ds.posterior(0).unwrap();
        assert!(p[1] > p[0] && p[1] < 1.0);
        assert!(
            ds.confusion[&0]
                .iter()
                .flatten()
                .all(|&x| x > 0.0 && x < 1.0)
        );
    }
}
