//! `backflip bench select`: how many labels each pair-selection strategy needs.
//!
//! For a simulated task, a fixed pool of rollouts in groups (as a rollouts-only import
//! holds them) is labelled round by round by a simulated Bradley–Terry rater. Each round
//! the strategy picks the next pairs with the service's own planner
//! ([`crate::selection::plan`]: coverage first; `random` pairs the least-used rollouts;
//! `uncertainty` and `mixed` score a pool ten times larger with the current ensemble's
//! disagreement), the rater answers them, and the ensemble is retrained on everything so
//! far with the training job's configuration. At each checkpoint the ensemble's accuracy
//! against the *hidden true reward* is measured on fixed fresh pairs, as in
//! `backflip bench reward`. No database and no HTTP.

use std::{collections::HashSet, sync::atomic::AtomicBool};

use rand::{SeedableRng, rngs::StdRng};

use crate::{
    ml::{
        self, ClipReward, Ensemble, Example, MlpReward, MlpRewardConfig, RewardModel,
        TEXT_FEATURE_DIM, TrainingConfig, data::Preference, features::text_features,
    },
    selection::plan::{self, Node},
    simulate::{Rater, RaterConfig, Side, TaskKind, TextTask, derive_seed},
};

use super::reward::{TASK_SEED, gif_clip, truth_test_set};

/// Settings of one label-efficiency run.
#[derive(clap::Args, Debug, Clone)]
pub struct SelectOpts {
    /// Which task: text pairs, or GIF clips of an agent heading for a goal.
    #[arg(long, value_enum)]
    pub task: TaskKind,
    /// Strategies to compare (the service's: random, uncertainty, mixed).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,uncertainty,mixed"
    )]
    pub strategies: Vec<String>,
    /// Label counts at which accuracy is measured.
    #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000,1500")]
    pub labels: Vec<usize>,
    /// Seeds (rollout pool, rater, initialisations) per strategy.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// First seed: runs seeds first-seed .. first-seed + seeds (to split a long run over
    /// processes; each prints its per-seed accuracies on stderr as it goes).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Groups of rollouts in the pool (pairs never cross groups).
    #[arg(long, default_value_t = 16)]
    pub groups: usize,
    /// Rollouts per group (25 gives 300 possible pairs a group).
    #[arg(long, default_value_t = 25)]
    pub group_size: usize,
    /// Smallest round: pairs asked between two retrainings (the service retrains every 50
    /// judgments by default).
    #[arg(long, default_value_t = 50)]
    pub min_round: usize,
    /// Rounds grow with the labels so far: a round is this share of them, at least
    /// `--min-round` (0 gives fixed rounds of `--min-round`).
    #[arg(long, default_value_t = 0.25)]
    pub round_share: f64,
    /// For `mixed`: the share of each round drawn at random (the service's default: 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub random_share: f32,
    /// Boltzmann temperature of the simulated rater, in units of the task's true reward.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Optimiser steps per ensemble member (the service's default: 300).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Fresh pairs, labelled by the true reward, that accuracy is measured on
    /// (default: 1000 for text, 200 for GIF).
    #[arg(long)]
    pub test_pairs: Option<usize>,
    /// Write the curves as an SVG chart to this file.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}

/// Accuracy at one checkpoint over all seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub labels: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// One strategy's accuracy against labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub strategy: String,
    pub points: Vec<Point>,
    /// Trainings run per seed (one per round).
    pub trainings: usize,
    /// Seconds of the whole run per seed, mean.
    pub seconds: f64,
}

/// Runs every strategy over every seed; one [`Curve`] per strategy, in the order given.
pub fn run(opts: &SelectOpts) -> anyhow::Result<Vec<Curve>> {
    for s in &opts.strategies {
        anyhow::ensure!(
            crate::selection::STRATEGIES.contains(&s.as_str()),
            "unknown strategy {s:?}: one of {}",
            crate::selection::STRATEGIES.join(", ")
        );
    }
    anyhow::ensure!(
        opts.groups > 0 && opts.group_size > 1,
        "--groups must be at least 1 and --group-size at least 2"
    );
    anyhow::ensure!(opts.min_round > 0, "--min-round must be at least 1");
    let mut labels = opts.labels.clone();
    labels.sort_unstable();
    labels.dedup();
    let possible = opts.groups * opts.group_size * (opts.group_size - 1) / 2;
    anyhow::ensure!(
        labels.last().is_some_and(|&l| l <= possible),
        "the pool holds {possible} possible pairs: give label counts up to that (or more groups)"
    );
    let steps = opts.steps.unwrap_or(300);
    let rollouts = opts.groups * opts.group_size;
    match opts.task {
        TaskKind::Text => {
            let task = TextTask::new(TASK_SEED);
            let draw = |rng: &mut StdRng| {
                let s = task.sentence(rng);
                (text_features(&s), task.reward(&s))
            };
            let test = truth_test_set(opts.test_pairs.unwrap_or(1000), &mut |rng| {
                let ((a, ra), (b, rb)) = (draw(rng), draw(rng));
                (a, b, ra, rb)
            });
            let cfg = crate::reward::job::vector_training().with_steps(steps);
            compare::<MlpReward>(
                opts,
                &labels,
                &MlpRewardConfig::new(TEXT_FEATURE_DIM),
                &cfg,
                &test,
                |seed| {
                    let mut rng = StdRng::seed_from_u64(derive_seed(seed, 4));
                    (0..rollouts).map(|_| draw(&mut rng)).collect()
                },
            )
        }
        TaskKind::Gif => {
            let test = truth_test_set(opts.test_pairs.unwrap_or(200), &mut |rng| {
                let ((a, ra), (b, rb)) = (gif_clip(rng), gif_clip(rng));
                (a, b, ra, rb)
            });
            let cfg = crate::reward::job::clip_training().with_steps(steps);
            compare::<ClipReward>(
                opts,
                &labels,
                &crate::reward::job::clip_model(),
                &cfg,
                &test,
                |seed| {
                    let mut rng = StdRng::seed_from_u64(derive_seed(seed, 4));
                    (0..rollouts).map(|_| gif_clip(&mut rng)).collect()
                },
            )
        }
    }
}

/// Every strategy over every seed for one model type; `pool` draws a seed's rollouts with
/// their true rewards (the same pool for every strategy of that seed).
fn compare<M: RewardModel>(
    opts: &SelectOpts,
    labels: &[usize],
    model: &M::Config,
    cfg: &TrainingConfig,
    test: &[Example<M::Input>],
    pool: impl Fn(u64) -> Vec<(M::Input, f64)>,
) -> anyhow::Result<Vec<Curve>>
where
    M::Input: Clone,
{
    // accuracy[strategy][checkpoint][seed]
    let mut acc = vec![vec![Vec::new(); labels.len()]; opts.strategies.len()];
    let mut trainings = vec![0; opts.strategies.len()];
    let mut seconds = vec![0.0; opts.strategies.len()];
    for seed in opts.first_seed..opts.first_seed + opts.seeds {
        let rollouts = pool(seed);
        for (k, strategy) in opts.strategies.iter().enumerate() {
            let started = std::time::Instant::now();
            let run = Labelling::<M> {
                opts,
                strategy,
                model,
                cfg,
                test,
                rollouts: &rollouts,
                seed,
            }
            .run(labels)?;
            let line: Vec<String> = labels
                .iter()
                .zip(&run.accuracy)
                .map(|(l, a)| format!("{l}: {a:.3}"))
                .collect();
            for (c, a) in run.accuracy.into_iter().enumerate() {
                acc[k][c].push(a);
            }
            trainings[k] = run.trainings;
            seconds[k] += started.elapsed().as_secs_f64() / opts.seeds as f64;
            eprintln!(
                "bench select: {} seed {seed} done in {:.0} s; accuracy {}",
                strategy,
                started.elapsed().as_secs_f64(),
                line.join(", ")
            );
        }
    }
    Ok(opts
        .strategies
        .iter()
        .zip(acc)
        .zip(trainings.into_iter().zip(seconds))
        .map(|((strategy, per_checkpoint), (trainings, seconds))| Curve {
            strategy: strategy.clone(),
            points: labels
                .iter()
                .zip(per_checkpoint)
                .map(|(&labels, a)| Point {
                    labels,
                    mean: a.iter().sum::<f64>() / a.len().max(1) as f64,
                    min: a.iter().copied().fold(f64::INFINITY, f64::min),
                    max: a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                })
                .collect(),
            trainings,
            seconds,
        })
        .collect())
}

/// One strategy labelling one seed's pool.
struct Labelling<'a, M: RewardModel> {
    opts: &'a SelectOpts,
    strategy: &'a str,
    model: &'a M::Config,
    cfg: &'a TrainingConfig,
    test: &'a [Example<M::Input>],
    rollouts: &'a [(M::Input, f64)],
    seed: u64,
}

/// What one labelling run measured.
struct LabellingRun {
    /// Accuracy at each checkpoint (NaN where the pool ran out first).
    accuracy: Vec<f64>,
    trainings: usize,
}

impl<M: RewardModel> Labelling<'_, M>
where
    M::Input: Clone,
{
    fn run(&self, checkpoints: &[usize]) -> anyhow::Result<LabellingRun> {
        let o = self.opts;
        let mut nodes: Vec<Node> = (0..self.rollouts.len())
            .map(|i| Node {
                group: i / o.group_size,
                policy: None,
                count: 0,
            })
            .collect();
        let mut taken = HashSet::new();
        let mut rng = StdRng::seed_from_u64(derive_seed(self.seed, 5));
        let mut rater = Rater::new(
            RaterConfig::bradley_terry(o.temperature),
            derive_seed(self.seed, 3),
        );
        let active = self.strategy != "random";
        let share = if self.strategy == "mixed" {
            o.random_share
        } else {
            0.0
        };
        let never = AtomicBool::new(false);
        let mut labelled: Vec<Example<M::Input>> = Vec::new();
        let mut model: Option<Ensemble<M>> = None;
        let mut accuracy = vec![f64::NAN; checkpoints.len()];
        let mut trainings = 0;
        for (c, &checkpoint) in checkpoints.iter().enumerate() {
            while labelled.len() < checkpoint {
                let n = labelled.len();
                let round = ((n as f64 * o.round_share) as usize)
                    .max(o.min_round)
                    .min(checkpoint - n);
                let pairs = match (&model, active) {
                    (Some(m), true) => {
                        let draft = plan::draft(&mut nodes, &mut taken, round, share, &mut rng);
                        let inputs: Vec<(&M::Input, &M::Input)> = draft
                            .pool
                            .iter()
                            .map(|&(i, j)| (&self.rollouts[i].0, &self.rollouts[j].0))
                            .collect();
                        let scores = m.disagreement(&inputs)?;
                        plan::finish(draft, &scores, &mut nodes, &mut taken, &mut rng).0
                    }
                    // No model yet (or `random`): the service's random pairs.
                    _ => plan::coverage_pairs(&mut nodes, &mut taken, round, &mut rng),
                };
                if pairs.is_empty() {
                    break;
                }
                for (i, j) in pairs {
                    let ((a, ra), (b, rb)) = (&self.rollouts[i], &self.rollouts[j]);
                    let answer = match rater.choose(*ra, *rb) {
                        Side::Left => Preference::Left,
                        Side::Right => Preference::Right,
                    };
                    labelled.push(Example::new(a.clone(), b.clone(), answer));
                }
                // Only an active strategy needs the model between checkpoints.
                if active || labelled.len() >= checkpoint {
                    let cfg = self
                        .cfg
                        .clone()
                        .with_seed(derive_seed(self.seed, 6 + trainings as u64));
                    let (m, report) = ml::train_ensemble::<M>(
                        self.model,
                        &cfg,
                        &labelled,
                        self.test,
                        |_| {},
                        &never,
                    )?;
                    trainings += 1;
                    if labelled.len() >= checkpoint {
                        accuracy[c] = report.metrics.and_then(|m| m.accuracy).unwrap_or(f64::NAN);
                    }
                    model = Some(m);
                }
            }
        }
        Ok(LabellingRun {
            accuracy,
            trainings,
        })
    }
}

/// Labels the mean curve of `curve` needs to reach `target` accuracy, by linear
/// interpolation between checkpoints; None if it never does.
pub fn labels_to_reach(curve: &Curve, target: f64) -> Option<f64> {
    let mut prev: Option<&Point> = None;
    for p in &curve.points {
        if p.mean >= target {
            return Some(match prev {
                Some(q) if p.mean > q.mean => {
                    q.labels as f64
                        + (target - q.mean) / (p.mean - q.mean) * (p.labels - q.labels) as f64
                }
                _ => p.labels as f64,
            });
        }
        prev = Some(p);
    }
    None
}

/// Prints the table and the labels each strategy needs to match `random` at 1000 labels.
pub fn print(opts: &SelectOpts, curves: &[Curve]) {
    println!(
        "backflip bench select --task {}: {} seed(s), pool {} groups × {} rollouts, rounds max({}, {} × labels), mixed random share {}, rater temperature {}, {} steps",
        opts.task.as_str(),
        opts.seeds,
        opts.groups,
        opts.group_size,
        opts.min_round,
        opts.round_share,
        opts.random_share,
        opts.temperature,
        opts.steps.unwrap_or(300),
    );
    print!("{:>7}", "labels");
    for c in curves {
        print!(" {:>24}", c.strategy);
    }
    println!();
    let rows = curves.first().map_or(0, |c| c.points.len());
    for r in 0..rows {
        print!("{:>7}", curves[0].points[r].labels);
        for c in curves {
            let p = &c.points[r];
            print!(
                " {:>24}",
                format!("{:.3} ({:.3}–{:.3})", p.mean, p.min, p.max)
            );
        }
        println!();
    }
    for c in curves {
        println!(
            "{}: {} trainings per seed, {:.0} s per seed",
            c.strategy, c.trainings, c.seconds
        );
    }
    let baseline = curves
        .iter()
        .find(|c| c.strategy == "random")
        .and_then(|c| c.points.iter().find(|p| p.labels == 1000));
    if let Some(b) = baseline {
        println!("random at 1000 labels: {:.3}", b.mean);
        for c in curves.iter().filter(|c| c.strategy != "random") {
            match labels_to_reach(c, b.mean) {
                Some(n) => println!(
                    "{} reaches it at ~{n:.0} labels ({:.0}% of random's 1000)",
                    c.strategy,
                    n / 10.0
                ),
                None => println!(
                    "{} does not reach it within the labels measured",
                    c.strategy
                ),
            }
        }
    }
}

/// The curves as an SVG line chart: mean accuracy per strategy with min–max bars.
pub fn chart(opts: &SelectOpts, curves: &[Curve]) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let points = curves.iter().flat_map(|c| &c.points);
    let (y0, y1) = points
        .clone()
        .filter(|p| p.min.is_finite() && p.max.is_finite())
        .fold((1.0f64, 0.0f64), |(a, b), p| (a.min(p.min), b.max(p.max)));
    let x1 = points.map(|p| p.labels).max().unwrap_or(1) as f64;
    let colours = [
        RGBColor(120, 120, 120),
        RGBColor(36, 87, 197),
        RGBColor(214, 96, 40),
    ];
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} task: accuracy vs true reward ({} seeds, min–max)",
                    opts.task.as_str(),
                    opts.seeds
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..x1 * 1.04, (y0 - 0.02)..(y1 + 0.02).min(1.0))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("labels")
            .y_desc("accuracy")
            .light_line_style(RGBColor(235, 238, 242))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (k, c) in curves.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let xy: Vec<(f64, f64)> = c
                .points
                .iter()
                .filter(|p| p.mean.is_finite())
                .map(|p| (p.labels as f64, p.mean))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(c.strategy.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
            chart
                .draw_series(c.points.iter().filter(|p| p.mean.is_finite()).map(|p| {
                    let x = p.labels as f64;
                    PathElement::new([(x, p.min), (x, p.max)], colour)
                }))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(strategies: &[&str]) -> SelectOpts {
        SelectOpts {
            task: TaskKind::Text,
            strategies: strategies.iter().map(|s| s.to_string()).collect(),
            labels: vec![40, 80],
            seeds: 1,
            first_seed: 0,
            groups: 4,
            group_size: 10,
            min_round: 20,
            round_share: 0.0,
            random_share: 0.5,
            temperature: 1.0,
            steps: Some(10),
            test_pairs: Some(100),
            svg: None,
        }
    }

    #[test]
    fn a_tiny_comparison_gives_sane_curves_and_a_chart() {
        let opts = tiny(&["random", "uncertainty", "mixed"]);
        let curves = run(&opts).unwrap();
        assert_eq!(curves.len(), 3);
        for c in &curves {
            assert_eq!(
                c.points.iter().map(|p| p.labels).collect::<Vec<_>>(),
                [40, 80]
            );
            for p in &c.points {
                assert!((0.0..=1.0).contains(&p.mean), "{c:?}");
            }
        }
        // Random trains at the two checkpoints only; the active ones after every round.
        assert_eq!(curves[0].trainings, 2);
        assert_eq!(curves[1].trainings, 4);
        let svg = chart(&opts, &curves).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("uncertainty"),
            "{svg}"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut opts = tiny(&["greedy"]);
        assert!(
            run(&opts)
                .unwrap_err()
                .to_string()
                .contains("unknown strategy")
        );
        opts.strategies = vec!["random".into()];
        opts.labels = vec![1000];
        assert!(
            run(&opts)
                .unwrap_err()
                .to_string()
                .contains("possible pairs")
        );
    }

    #[test]
    fn labels_to_reach_interpolates() {
        let curve = Curve {
            strategy: "x".into(),
            points: [(100, 0.6), (200, 0.7), (500, 0.8)]
                .map(|(labels, mean)| Point {
                    labels,
                    mean,
                    min: mean,
                    max: mean,
                })
                .to_vec(),
            trainings: 0,
            seconds: 0.0,
        };
        assert_eq!(labels_to_reach(&curve, 0.55), Some(100.0));
        assert!((labels_to_reach(&curve, 0.75).unwrap() - 350.0).abs() < 1e-9);
        assert_eq!(labels_to_reach(&curve, 0.9), None);
    }
}
