//! Does reliability weighting help? Simulated raters of mixed quality (the `backflip
//! simulate` panel: careful, noisy, always-left, left-biased) label text pairs of the
//! simulated task, two raters a pair, sides drawn at random as `next` does; the reward model
//! trains once unweighted and once with the weights the service would use (Dawid–Skene
//! reliabilities of the same judgments, through `report::analyse` and `Weights`), and both
//! are scored against the hidden true reward on the same fresh pairs. No database.
//!
//! Run: `cargo test --lib quality::bench -- --ignored --nocapture` (see docs/benchmarks.md).

use std::{collections::HashSet, sync::atomic::AtomicBool};

use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use super::{
    report::{self, Obs, RaterInfo},
    weights::Weights,
};
use crate::{
    ml::{
        self, Example, MlpReward, MlpRewardConfig, TEXT_FEATURE_DIM, TrainingConfig,
        data::Preference, features::text_features,
    },
    simulate::{Rater, Side, TextTask, derive_seed, raters::panel},
};

/// The task and test pairs of `bench reward`, so the figures compare.
const TASK_SEED: u64 = 0x5eed;
/// Raters per pair.
const OVERLAP: usize = 2;

/// One comparison: judgments, seed, both accuracies against the true reward, and the weights.
#[derive(Debug, Clone)]
pub struct Row {
    pub judgments: usize,
    pub seed: u64,
    pub unweighted: f64,
    pub weighted: f64,
    /// (profile, weight) per rater.
    pub weights: Vec<(&'static str, f32)>,
}

pub fn run(judgment_counts: &[usize], seeds: u64, steps: usize) -> anyhow::Result<Vec<Row>> {
    let task = TextTask::new(TASK_SEED);
    let mut rng = StdRng::seed_from_u64(derive_seed(TASK_SEED, 1));
    let test: Vec<Example<Vec<f32>>> = (0..1000)
        .map(|_| {
            let (a, b) = (task.sentence(&mut rng), task.sentence(&mut rng));
            let truth = match task.reward(&a).total_cmp(&task.reward(&b)) {
                std::cmp::Ordering::Greater => Preference::Left,
                std::cmp::Ordering::Less => Preference::Right,
                std::cmp::Ordering::Equal => Preference::Tie,
            };
            Example::new(text_features(&a), text_features(&b), truth)
        })
        .collect();
    let profiles = panel(4, 1.0);
    let infos: Vec<RaterInfo> = profiles
        .iter()
        .enumerate()
        .map(|(i, (name, _))| RaterInfo {
            id: Uuid::from_u128(i as u128 + 1),
            name: (*name).into(),
            excluded: false,
            paused: false,
        })
        .collect();
    let never = AtomicBool::new(false);
    let mut rows = vec![];
    for seed in 0..seeds {
        for &n in judgment_counts {
            let mut rng = StdRng::seed_from_u64(derive_seed(seed, 2));
            let mut raters: Vec<Rater> = profiles
                .iter()
                .enumerate()
                .map(|(i, (_, c))| Rater::new(*c, derive_seed(seed, 10 + i as u64)))
                .collect();
            let (mut examples, mut obs) = (vec![], vec![]);
            let t0 = time::OffsetDateTime::UNIX_EPOCH;
            for k in 0..n {
                let pair = k / OVERLAP;
                if k % OVERLAP == 0 {
                    let (a, b) = (task.sentence(&mut rng), task.sentence(&mut rng));
                    examples.push((a, b));
                }
                let (a, b) = examples.last().expect("a pair").clone();
                let who = (pair + k % OVERLAP) % raters.len();
                let left_is_a = rng.random_bool(0.5);
                let (ra, rb) = (task.reward(&a), task.reward(&b));
                let (rl, rr) = if left_is_a { (ra, rb) } else { (rb, ra) };
                let side = raters[who].choose(rl, rr);
                let chose_a = (side == Side::Left) == left_is_a;
                obs.push(Obs {
                    assignment: Uuid::from_u128(k as u128 + 1_000_000),
                    repeat_of: None,
                    rater: infos[who].id,
                    pair: Uuid::from_u128(pair as u128 + 1_000),
                    choice: if chose_a { "a" } else { "b" }.into(),
                    displayed: side.as_str().into(),
                    kind: "regular".into(),
                    duration_ms: None,
                    before_clip_end: None,
                    at: t0 + time::Duration::seconds(k as i64),
                    gold: None,
                    len_a: None,
                    len_b: None,
                });
            }
            let q = report::analyse(&obs, &infos, &HashSet::new());
            let weights = Weights::from_report(&q);
            let train = |weighted: bool| -> Vec<Example<Vec<f32>>> {
                obs.iter()
                    .map(|o| {
                        let (a, b) = &examples[o.pair.as_u128() as usize - 1_000];
                        let pref = if o.choice == "a" {
                            Preference::Left
                        } else {
                            Preference::Right
                        };
                        let mut e = Example::new(text_features(a), text_features(b), pref);
                        if weighted {
                            e.weight = weights.get(&o.rater);
                        }
                        e
                    })
                    .collect()
            };
            let cfg = TrainingConfig::new().with_steps(steps).with_seed(seed);
            let model = MlpRewardConfig::new(TEXT_FEATURE_DIM);
            let accuracy = |data: Vec<Example<Vec<f32>>>| -> anyhow::Result<f64> {
                let (_, report) =
                    ml::train_ensemble::<MlpReward>(&model, &cfg, &data, &test, |_| {}, &never)?;
                Ok(report.metrics.and_then(|m| m.accuracy).unwrap_or(f64::NAN))
            };
            rows.push(Row {
                judgments: n,
                seed,
                unweighted: accuracy(train(false))?,
                weighted: accuracy(train(true))?,
                weights: profiles
                    .iter()
                    .zip(&infos)
                    .map(|((name, _), info)| (*name, weights.get(&info.id)))
                    .collect(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_weighs_the_always_left_rater_down() {
        let rows = run(&[200], 1, 5).unwrap();
        assert_eq!(rows.len(), 1);
        let w: std::collections::HashMap<_, _> = rows[0].weights.iter().copied().collect();
        assert!(w["always-left"] < w["careful"], "{w:?}");
        assert!((0.0..=1.0).contains(&rows[0].unweighted));
    }

    /// The measurement recorded in docs/benchmarks.md.
    #[test]
    #[ignore = "a benchmark: minutes of training"]
    fn weighting_benchmark() {
        let rows = run(&[200, 600, 1200], 3, 300).unwrap();
        println!(
            "| judgments | seed | unweighted | weighted | weights (careful, noisy, always-left, left-biased) |"
        );
        println!("|---|---|---|---|---|");
        for r in &rows {
            let w: Vec<String> = r.weights.iter().map(|(_, w)| format!("{w:.2}")).collect();
            println!(
                "| {} | {} | {:.3} | {:.3} | {} |",
                r.judgments,
                r.seed,
                r.unweighted,
                r.weighted,
                w.join(", ")
            );
        }
    }
}
