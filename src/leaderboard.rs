//! Policy leaderboard: rank the policies (checkpoints) that produced the rollouts by
//! Bradley–Terry strength fitted to the human judgments, with bootstrap confidence intervals
//! and the win matrix, as Chatbot Arena ranks models.
//!
//! A judgment between rollouts of policies *i* and *j* counts as a win for the preferred one,
//! a tie as half a win for each; can't-tell answers, a rater's swapped repeats of a pair,
//! pairs of one policy against itself, rollouts without a policy and excluded raters'
//! judgments are left out.
//!
//! Model: `P(i beats j) = σ(s_i − s_j)`. Strengths are fitted by Hunter's (2004) MM
//! algorithm with a weak prior — each policy also plays one virtual game, drawn, against a
//! reference of strength 0 — so a policy that never lost (or never won) still gets a finite
//! strength. Reported strengths are centred on their mean; `elo` is the same number on the
//! Elo scale (`1000 + 400·s / ln 10`). Intervals are the 2.5th and 97.5th percentiles over
//! bootstrap resamples of the judgments (with a fixed seed, so a page shows the same
//! numbers on every load).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// One usable judgment between two policies (indices into the policy list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Game {
    pub a: usize,
    pub b: usize,
    /// 1 when `a` was preferred, 0 when `b` was, ½ for a tie.
    pub score_a: f64,
}

/// A policy's place on the board.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Standing {
    pub policy: String,
    /// Bradley–Terry strength (log-odds scale), centred on the mean of all policies.
    pub strength: f64,
    /// 95% bootstrap interval of `strength`.
    pub low: f64,
    pub high: f64,
    /// `strength` on the Elo scale: 1000 + 400·strength / ln 10.
    pub elo: f64,
    /// Judgments the policy took part in, and its share of points in them (ties ½).
    pub games: usize,
    pub win_rate: f64,
}

/// Head-to-head record of `policy` (row) against `opponent` (column).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeadToHead {
    pub policy: String,
    pub opponent: String,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
}

/// The board: standings (strongest first) and every pair of policies that met.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Leaderboard {
    pub standings: Vec<Standing>,
    pub matrix: Vec<HeadToHead>,
    /// Judgments used.
    pub judgments: usize,
    /// Bootstrap resamples behind the intervals.
    pub resamples: usize,
    /// How the numbers are computed, for the page and API readers.
    pub method: &'static str,
}

/// What [`Leaderboard::method`] says.
pub const METHOD: &str = "Bradley–Terry strengths (log-odds; P(i beats j) = σ(s_i − s_j)) fitted \
    by MM with one virtual draw per policy against a reference of strength 0, centred on their \
    mean; ties count ½; can't-tell, same-policy pairs and excluded raters are left out; 95% \
    intervals from bootstrap resamples of the judgments.";

/// Fits strengths (not centred) for `n` policies.
pub fn fit(n: usize, games: &[Game]) -> Vec<f64> {
    // Points and games per policy pair, in one pass.
    let mut points = vec![0.0; n];
    let mut meetings = vec![0.0; n * n];
    for g in games {
        points[g.a] += g.score_a;
        points[g.b] += 1.0 - g.score_a;
        meetings[g.a * n + g.b] += 1.0;
        meetings[g.b * n + g.a] += 1.0;
    }
    let mut pi = vec![1.0f64; n];
    for _ in 0..10_000 {
        let mut change = 0.0f64;
        let next: Vec<f64> = (0..n)
            .map(|i| {
                // The virtual draw against the reference (π = 1): ½ point in 1 game.
                let mut denominator = 1.0 / (pi[i] + 1.0);
                for j in 0..n {
                    let m = meetings[i * n + j];
                    if m > 0.0 {
                        denominator += m / (pi[i] + pi[j]);
                    }
                }
                (points[i] + 0.5) / denominator
            })
            .collect();
        for (p, q) in pi.iter_mut().zip(next) {
            change = change.max((p.ln() - q.ln()).abs());
            *p = q;
        }
        if change < 1e-10 {
            break;
        }
    }
    pi.iter().map(|p| p.ln()).collect()
}

fn centred(mut s: Vec<f64>) -> Vec<f64> {
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    s.iter_mut().for_each(|x| *x -= mean);
    s
}

/// The board for `policies` (names by index) from `games`, with `resamples` bootstrap fits.
pub fn build(policies: &[String], games: &[Game], resamples: usize, seed: u64) -> Leaderboard {
    let n = policies.len();
    let strength = centred(fit(n, games));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); n];
    let mut sample = Vec::with_capacity(games.len());
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..games.len()).map(|_| games[rng.random_range(0..games.len())]));
        for (i, s) in centred(fit(n, &sample)).into_iter().enumerate() {
            draws[i].push(s);
        }
    }
    let mut record: BTreeMap<(usize, usize), [usize; 3]> = BTreeMap::new();
    let (mut played, mut scored) = (vec![0usize; n], vec![0.0f64; n]);
    for g in games {
        for (me, them, score) in [(g.a, g.b, g.score_a), (g.b, g.a, 1.0 - g.score_a)] {
            let r = record.entry((me, them)).or_default();
            r[if score == 1.0 {
                0
            } else if score == 0.0 {
                2
            } else {
                1
            }] += 1;
            played[me] += 1;
            scored[me] += score;
        }
    }
    let mut standings: Vec<Standing> = (0..n)
        .map(|i| {
            let (low, high) = percentiles(&mut draws[i]).unwrap_or((strength[i], strength[i]));
            Standing {
                policy: policies[i].clone(),
                strength: strength[i],
                low,
                high,
                elo: 1000.0 + 400.0 * strength[i] / std::f64::consts::LN_10,
                games: played[i],
                win_rate: if played[i] == 0 {
                    0.0
                } else {
                    scored[i] / played[i] as f64
                },
            }
        })
        .collect();
    standings.sort_by(|a, b| b.strength.total_cmp(&a.strength));
    let matrix = record
        .into_iter()
        .map(|((me, them), [wins, ties, losses])| HeadToHead {
            policy: policies[me].clone(),
            opponent: policies[them].clone(),
            wins,
            ties,
            losses,
        })
        .collect();
    Leaderboard {
        standings,
        matrix,
        judgments: games.len(),
        resamples,
        method: METHOD,
    }
}

/// 2.5th and 97.5th percentiles (nearest rank); None for no draws.
fn percentiles(v: &mut [f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.025), at(0.975)))
}

/// Bootstrap resamples the page and API use.
pub const RESAMPLES: usize = 200;

/// The project's board from its judgments.
pub async fn for_project(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Leaderboard> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select ra.policy, rb.policy, j.choice
         from judgments j
         join comparisons c on c.id = j.comparison_id
         join rollouts ra on ra.id = c.rollout_a
         join rollouts rb on rb.id = c.rollout_b
         left join project_members m on m.project_id = j.project_id and m.user_id = j.rater_id
         where j.project_id = $1 and j.choice <> 'cant_tell' and m.excluded_at is null
           and j.kind <> 'repeat'
           and ra.policy is not null and rb.policy is not null and ra.policy <> rb.policy",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    let mut names: Vec<String> = rows
        .iter()
        .flat_map(|(a, b, _)| [a.clone(), b.clone()])
        .collect();
    names.sort();
    names.dedup();
    let index = |p: &str| names.binary_search_by(|n| n.as_str().cmp(p)).unwrap_or(0);
    let games: Vec<Game> = rows
        .iter()
        .map(|(a, b, choice)| Game {
            a: index(a),
            b: index(b),
            score_a: match choice.as_str() {
                "a" => 1.0,
                "b" => 0.0,
                _ => 0.5,
            },
        })
        .collect();
    // Fixed seed from the project: the same data always shows the same intervals.
    let seed = u64::from_le_bytes(project_id.as_bytes()[..8].try_into().expect("16 bytes"));
    Ok(
        tokio::task::spawn_blocking(move || build(&names, &games, RESAMPLES, seed))
            .await
            .expect("leaderboard fit does not panic"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn games(spec: &[(usize, usize, f64, usize)]) -> Vec<Game> {
        spec.iter()
            .flat_map(|&(a, b, score_a, times)| std::iter::repeat_n(Game { a, b, score_a }, times))
            .collect()
    }

    /// Two policies, 3 wins to 1: the prior adds a draw against 0 for each, so the fixed point
    /// solves (3 + ½)/π₀ = 4/(π₀+π₁) + 1/(π₀+1) and (1 + ½)/π₁ = 4/(π₀+π₁) + 1/(π₁+1).
    #[test]
    fn two_policies_match_the_hand_worked_fixed_point() {
        let s = fit(2, &games(&[(0, 1, 1.0, 3), (0, 1, 0.0, 1)]));
        let (p0, p1) = (s[0].exp(), s[1].exp());
        let lhs0 = 3.5 / p0 - 4.0 / (p0 + p1) - 1.0 / (p0 + 1.0);
        let lhs1 = 1.5 / p1 - 4.0 / (p0 + p1) - 1.0 / (p1 + 1.0);
        assert!(lhs0.abs() < 1e-9 && lhs1.abs() < 1e-9, "{lhs0} {lhs1}");
        // Without the prior the MLE would be ln 3 apart; the prior shrinks it.
        let gap = s[0] - s[1];
        assert!(gap > 0.5 && gap < 3f64.ln(), "{gap}");
    }

    /// With many games the prior fades and strengths approach the plain MLE: for a
    /// 75% win rate, ln 3 apart.
    #[test]
    fn many_games_recover_the_maximum_likelihood_gap() {
        let s = fit(2, &games(&[(0, 1, 1.0, 3000), (0, 1, 0.0, 1000)]));
        assert!((s[0] - s[1] - 3f64.ln()).abs() < 0.01, "{s:?}");
    }

    /// Three policies of known strength, simulated games: the ranking and the gaps come back,
    /// the intervals cover the truth, ties count half, and an unbeaten policy stays finite.
    #[test]
    fn simulated_tournament_recovers_strengths_with_honest_intervals() {
        let truth: [f64; 3] = [1.0, 0.0, -1.0];
        let mut rng = StdRng::seed_from_u64(9);
        let mut g = Vec::new();
        for _ in 0..3000 {
            let (a, b) = (rng.random_range(0..3), rng.random_range(0..3));
            if a == b {
                continue;
            }
            let p = 1.0 / (1.0 + (truth[b] - truth[a]).exp());
            // No ties here: a tie drawn at random whatever the strengths is not the
            // Bradley–Terry model, and would pull every strength towards 0.
            let score_a = if rng.random_bool(p) { 1.0 } else { 0.0 };
            g.push(Game { a, b, score_a });
        }
        let names: Vec<String> = ["strong", "middle", "weak"].map(String::from).to_vec();
        let board = build(&names, &g, 100, 1);
        let order: Vec<&str> = board.standings.iter().map(|s| s.policy.as_str()).collect();
        assert_eq!(order, ["strong", "middle", "weak"]);
        for s in &board.standings {
            let t = truth[names.iter().position(|n| *n == s.policy).unwrap()];
            assert!(s.low <= s.strength && s.strength <= s.high, "{s:?}");
            assert!(s.low - 0.05 <= t && t <= s.high + 0.05, "{s:?} truth {t}");
        }
        let h2h = board
            .matrix
            .iter()
            .find(|h| h.policy == "strong" && h.opponent == "weak")
            .unwrap();
        let back = board
            .matrix
            .iter()
            .find(|h| h.policy == "weak" && h.opponent == "strong")
            .unwrap();
        assert_eq!(
            (h2h.wins, h2h.ties, h2h.losses),
            (back.losses, back.ties, back.wins)
        );

        // A tie is half a point to each side, and recorded as a tie both ways.
        let names: Vec<String> = ["x", "y"].map(String::from).to_vec();
        let board = build(&names, &games(&[(0, 1, 1.0, 2), (0, 1, 0.5, 2)]), 10, 0);
        assert_eq!(board.standings[0].policy, "x");
        assert_eq!(board.standings[0].win_rate, 0.75);
        assert_eq!(board.standings[1].win_rate, 0.25);
        let xy = &board.matrix[0];
        assert_eq!((xy.wins, xy.ties, xy.losses), (2, 2, 0));

        let unbeaten = fit(2, &games(&[(0, 1, 1.0, 5)]));
        assert!(unbeaten.iter().all(|s| s.is_finite()) && unbeaten[0] > unbeaten[1]);
        assert!(build(&[], &[], 10, 0).standings.is_empty());
    }
}
