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
}
