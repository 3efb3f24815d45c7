//! The pure part of pair generation: which pairs within groups to ask next,
//! given what has been generated so far. No database here, so the coverage
//! rule is tested directly.
//!
//! Rules, in order: pairs only within a group; never the same unordered pair
//! twice; coverage first (the rollout that has appeared least is paired next,
//! with the least-used partner, so every rollout appears once before any
//! appears twice, and so on); then policies balanced (a partner from another
//! policy is preferred, and among those the policy pairing asked least).
//! Remaining ties are broken at random.

use std::collections::{HashMap, HashSet};

use rand::{Rng, seq::SliceRandom};

use super::score;

/// One rollout as the planner sees it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index of its group; pairs never cross groups.
    pub group: usize,
    pub policy: Option<String>,
    /// Pairs it is already in.
    pub count: u32,
}

/// The pair of node indices as a set (smaller first).
fn key(i: usize, j: usize) -> (usize, usize) {
    (i.min(j), i.max(j))
}

/// The policies of a pair as a set, for balancing.
fn policy_key<'a>(a: &'a Option<String>, b: &'a Option<String>) -> (&'a str, &'a str) {
    let (a, b) = (a.as_deref().unwrap_or(""), b.as_deref().unwrap_or(""));
    (a.min(b), a.max(b))
}

/// Up to `need` new pairs, in the order they should be asked. `taken` holds
/// the pairs that exist (as [`key`]s) and gains the new ones; each node's
/// `count` is updated.
pub fn coverage_pairs(
    nodes: &mut [Node],
    taken: &mut HashSet<(usize, usize)>,
    need: usize,
    rng: &mut impl Rng,
) -> Vec<(usize, usize)> {
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    // A random visiting order breaks ties at random everywhere below.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.shuffle(rng);
    for &i in &order {
        groups.entry(nodes[i].group).or_default().push(i);
    }
    let mut policy_uses: HashMap<(String, String), u32> = HashMap::new();
    for &(i, j) in taken.iter() {
        let (p, q) = policy_key(&nodes[i].policy, &nodes[j].policy);
        *policy_uses.entry((p.into(), q.into())).or_default() += 1;
    }
    // Nodes with no partner left (their group is exhausted for them).
    let mut done = vec![false; nodes.len()];
    let mut out = Vec::with_capacity(need);
    while out.len() < need {
        let Some(&i) = order
            .iter()
            .filter(|&&i| !done[i])
            .min_by_key(|&&i| nodes[i].count)
        else {
            break;
        };
        let partner = groups[&nodes[i].group]
            .iter()
            .copied()
            .filter(|&j| j != i && !taken.contains(&key(i, j)))
            .min_by_key(|&j| {
                let same = nodes[i].policy.is_some() && nodes[i].policy == nodes[j].policy;
                let (p, q) = policy_key(&nodes[i].policy, &nodes[j].policy);
                let uses = policy_uses
                    .get(&(p.to_string(), q.to_string()))
                    .copied()
                    .unwrap_or(0);
                (nodes[j].count, same, uses)
            });
        let Some(j) = partner else {
            done[i] = true;
            continue;
        };
        taken.insert(key(i, j));
        nodes[i].count += 1;
        nodes[j].count += 1;
        let (p, q) = policy_key(&nodes[i].policy, &nodes[j].policy);
        *policy_uses.entry((p.into(), q.into())).or_default() += 1;
        out.push((i, j));
    }
    out
}

/// How many coverage pairs pair every rollout that no pair holds yet: per
/// group of two or more, half its uncovered rollouts, rounded up.
pub fn uncovered_pairs_needed(nodes: &[Node]) -> usize {
    let mut groups: HashMap<usize, (usize, usize)> = HashMap::new();
    for n in nodes {
        let e = groups.entry(n.group).or_default();
        e.0 += 1;
        e.1 += usize::from(n.count == 0);
    }
    groups
        .values()
        .filter(|(size, _)| *size > 1)
        .map(|(_, uncovered)| uncovered.div_ceil(2))
        .sum()
}

/// A pool of up to `size` distinct new pairs drawn uniformly within groups
/// (for scoring by the ensemble). `taken` is not changed.
pub fn random_pool(
    nodes: &[Node],
    taken: &HashSet<(usize, usize)>,
    size: usize,
    rng: &mut impl Rng,
) -> Vec<(usize, usize)> {
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        groups.entry(n.group).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    // Rejection sampling with a bounded number of tries: small or exhausted
    // groups simply yield fewer pairs.
    for _ in 0..size.saturating_mul(4) {
        if out.len() >= size || groups.is_empty() {
            break;
        }
        let g = &groups[rng.random_range(0..groups.len())];
        let (x, y) = (
            g[rng.random_range(0..g.len())],
            g[rng.random_range(0..g.len())],
        );
        let k = key(x, y);
        if x != y && !taken.contains(&k) && seen.insert(k) {
            out.push((x, y));
        }
    }
    out
}

/// An active (scored) top-up half done: the coverage pairs it starts with and
/// the pool of candidates that must be scored before it can be finished.
pub struct Draft {
    /// Coverage pairs, already taken, asked before everything else.
    pub pairs: Vec<(usize, usize)>,
    /// Candidates for the scored share, in no order; score them and call [`finish`].
    pub pool: Vec<(usize, usize)>,
    n_scored: usize,
    n_random: usize,
}

/// Candidates scored per pair asked: the pool is ten times larger than needed.
pub const POOL_FACTOR: usize = 10;

/// Step one of an `uncertainty` (`random_share` 0) or `mixed` top-up of `need`
/// pairs: pair the rollouts nothing holds yet (coverage first), then draw a
/// pool [`POOL_FACTOR`] times the scored share.
pub fn draft(
    nodes: &mut [Node],
    taken: &mut HashSet<(usize, usize)>,
    need: usize,
    random_share: f32,
    rng: &mut impl Rng,
) -> Draft {
    let uncovered = uncovered_pairs_needed(nodes);
    let pairs = coverage_pairs(nodes, taken, need.min(uncovered), rng);
    let rest = need - pairs.len();
    let n_random = (rest as f32 * random_share.clamp(0.0, 1.0)).round() as usize;
    let n_scored = rest - n_random;
    let pool = random_pool(nodes, taken, n_scored * POOL_FACTOR, rng);
    Draft {
        pairs,
        pool,
        n_scored,
        n_random,
    }
}

/// Step two: with the pool's disagreement scores (in pool order), the pairs to
/// insert and their queue priorities — coverage pairs on top, then the most
/// disputed pairs by score, with the random share (drawn like the `random`
/// strategy's pairs) interleaved at the median scored priority.
pub fn finish(
    draft: Draft,
    scores: &[f32],
    nodes: &mut [Node],
    taken: &mut HashSet<(usize, usize)>,
    rng: &mut impl Rng,
) -> (Vec<(usize, usize)>, Vec<i32>) {
    let Draft {
        mut pairs,
        pool,
        n_scored,
        n_random,
    } = draft;
    let mut priorities = vec![score::COVERAGE; pairs.len()];
    let mut ranked: Vec<(f32, (usize, usize))> = scores.iter().copied().zip(pool).collect();
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut scored = Vec::new();
    for (d, (i, j)) in ranked.into_iter().take(n_scored) {
        taken.insert(key(i, j));
        nodes[i].count += 1;
        nodes[j].count += 1;
        pairs.push((i, j));
        scored.push(score::priority(d));
    }
    let median = scored.get(scored.len() / 2).copied().unwrap_or(0);
    priorities.extend(scored);
    let random = coverage_pairs(nodes, taken, n_random, rng);
    priorities.extend(std::iter::repeat_n(median, random.len()));
    pairs.extend(random);
    (pairs, priorities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn nodes(groups: &[usize], policies: usize) -> Vec<Node> {
        let mut out = Vec::new();
        for (g, &n) in groups.iter().enumerate() {
            for i in 0..n {
                out.push(Node {
                    group: g,
                    policy: Some(format!("p{}", i % policies)),
                    count: 0,
                });
            }
        }
        out
    }

    #[test]
    fn coverage_comes_first_and_pairs_stay_in_groups() {
        for n in [2, 3, 7, 10, 50] {
            let mut nodes = nodes(&[n, n + 1], 3);
            let mut taken = HashSet::new();
            let mut rng = StdRng::seed_from_u64(n as u64);
            let all = n * (n - 1) / 2 + (n + 1) * n / 2;
            let pairs = coverage_pairs(&mut nodes, &mut taken, all + 5, &mut rng);
            assert_eq!(pairs.len(), all, "every pair once, then nothing");
            assert_eq!(taken.len(), all);
            for &(i, j) in &pairs {
                assert_eq!(nodes[i].group, nodes[j].group);
            }
            // Across both groups: the first ⌈total/2⌉ pairs cover everyone.
            let total = 2 * n + 1;
            let covered: HashSet<usize> = pairs[..total.div_ceil(2)]
                .iter()
                .flat_map(|&(i, j)| [i, j])
                .collect();
            assert_eq!(covered.len(), total, "n = {n}");
        }
    }

    #[test]
    fn every_rollout_appears_once_before_any_appears_twice() {
        let mut nodes = nodes(&[12, 5], 2);
        let mut taken = HashSet::new();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..30 {
            coverage_pairs(&mut nodes, &mut taken, 1, &mut rng);
            let min = nodes.iter().map(|n| n.count).min().unwrap();
            let max = nodes.iter().map(|n| n.count).max().unwrap();
            // The odd group's last rollout must pair with a covered one.
            assert!(min > 0 || max <= 2, "{min}..{max}");
            assert!(min > 0 || nodes.iter().filter(|n| n.count == 2).count() <= 1);
        }
    }

    #[test]
    fn policies_are_mixed_where_possible() {
        // Two policies, six rollouts each: the first six pairs cover everyone,
        // each pairing a p0 rollout with a p1 rollout.
        let mut nodes = nodes(&[12], 2);
        let mut taken = HashSet::new();
        let pairs = coverage_pairs(&mut nodes, &mut taken, 6, &mut StdRng::seed_from_u64(3));
        for (i, j) in pairs {
            assert_ne!(nodes[i].policy, nodes[j].policy);
        }
    }

    #[test]
    fn the_random_pool_is_new_distinct_and_within_groups() {
        let nodes = nodes(&[5, 1, 8], 1);
        let taken: HashSet<_> = [(0, 1), (0, 2)].into();
        let pool = random_pool(&nodes, &taken, 30, &mut StdRng::seed_from_u64(9));
        assert!(pool.len() > 20);
        let keys: HashSet<_> = pool.iter().map(|&(i, j)| key(i, j)).collect();
        assert_eq!(keys.len(), pool.len());
        for (i, j) in pool {
            assert_eq!(nodes[i].group, nodes[j].group);
            assert!(!taken.contains(&key(i, j)));
        }
    }

    #[test]
    fn a_scored_top_up_covers_first_then_asks_the_most_disputed() {
        let mut nodes = nodes(&[6, 6], 1);
        let mut taken = HashSet::new();
        let mut rng = StdRng::seed_from_u64(5);
        // Nothing covered yet: 6 coverage pairs, then 4 scored from a pool of 40.
        let draft = draft(&mut nodes, &mut taken, 10, 0.0, &mut rng);
        assert_eq!(draft.pairs.len(), 6);
        assert!(nodes.iter().all(|n| n.count == 1));
        assert!(draft.pool.len() > 20 && draft.pool.len() <= 40);
        let pool = draft.pool.clone();
        // Score the pool so that its last four pairs are the most disputed.
        let scores: Vec<f32> = (0..pool.len()).map(|k| k as f32 / 1000.0).collect();
        let (pairs, priorities) = finish(draft, &scores, &mut nodes, &mut taken, &mut rng);
        assert_eq!(pairs.len(), 10);
        assert!(priorities[..6].iter().all(|&p| p == score::COVERAGE));
        let best: Vec<_> = pool.iter().rev().take(4).copied().collect();
        assert_eq!(pairs[6..], best[..]);
        assert!(priorities[6..].windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(taken.len(), 10);
    }

    #[test]
    fn a_mixed_top_up_keeps_its_random_share() {
        let mut nodes = nodes(&[10, 10], 2);
        let mut taken = HashSet::new();
        let mut rng = StdRng::seed_from_u64(6);
        coverage_pairs(&mut nodes, &mut taken, 10, &mut rng);
        let draft = draft(&mut nodes, &mut taken, 10, 0.3, &mut rng);
        assert!(draft.pairs.is_empty(), "everyone is covered");
        assert!(draft.pool.len() <= 70, "a pool for the 7 scored pairs");
        let scores = vec![0.1; draft.pool.len()];
        let (pairs, priorities) = finish(draft, &scores, &mut nodes, &mut taken, &mut rng);
        assert_eq!(pairs.len(), 10);
        // The 3 random pairs sit at the median scored priority.
        assert!(priorities.iter().all(|&p| p == score::priority(0.1)));
        assert_eq!(taken.len(), 20);
    }
}
