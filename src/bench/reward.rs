//! `backflip bench reward`: labels-to-accuracy of the reward model on a simulated task.
//!
//! For each label count and seed: that many pairs labelled by a simulated Bradley–Terry
//! rater, an ensemble trained directly with [`crate::ml::train_ensemble`] (no HTTP, no
//! database) with the configurations the service's training job uses, and its accuracy
//! against the *hidden true reward* on one fixed set of fresh pairs.

use std::sync::atomic::AtomicBool;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::clips::{ClipLimits, decode_gif};
use crate::ml::{
    self, Clip, ClipReward, Example, MlpReward, MlpRewardConfig, RewardModel, TEXT_FEATURE_DIM,
    TrainingConfig, data::Preference, features::text_features,
};
use crate::reward::data::training_clip;
use crate::simulate::{GifTask, Rater, RaterConfig, Side, TaskKind, TextTask, derive_seed};

/// Settings of one labels-to-accuracy sweep.
#[derive(clap::Args, Debug, Clone)]
pub struct RewardOpts {
    /// Which task: text pairs, or GIF clips of an agent heading for a goal.
    #[arg(long, value_enum)]
    pub task: TaskKind,
    /// Label counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "100,200,500,1000")]
    pub labels: Vec<usize>,
    /// Seeds (label draws and initialisations) per label count.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Optimiser steps per ensemble member (the service's default: 300).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Boltzmann temperature of the simulated rater, in units of the task's true reward.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Fresh pairs, labelled by the true reward, that accuracy is measured on
    /// (default: 1000 for text, 200 for GIF).
    #[arg(long)]
    pub test_pairs: Option<usize>,
    /// Threads of each training run (the service trains with 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// L2 penalty instead of the service's (e.g. 0 to compare without).
    #[arg(long)]
    pub l2: Option<f64>,
    /// Early-stopping evaluation interval instead of the service's (0: no early stopping).
    #[arg(long)]
    pub eval_every: Option<usize>,
}

impl RewardOpts {
    /// The service's configuration with this command's overrides.
    fn tune(&self, cfg: TrainingConfig) -> TrainingConfig {
        let cfg = cfg.with_threads(self.threads);
        let cfg = match self.l2 {
            Some(l2) => cfg.with_l2(l2),
            None => cfg,
        };
        match self.eval_every {
            Some(e) => cfg.with_eval_every(e),
            None => cfg,
        }
    }
}

/// The smallest true-reward gap of a "clear" test pair, in the task's reward units (one
/// word weight's worth for text, one full-speed move for GIF).
pub const CLEAR_GAP: f64 = 1.0;

/// One line of the table: a label count over all seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Labelled pairs trained on.
    pub labels: usize,
    /// How often the simulated rater's labels agree with the true reward (pairs of unequal
    /// true reward), mean over seeds: what one label is worth, for reading the accuracy.
    pub rater_accuracy: f64,
    /// Accuracy on the test pairs whose true rewards differ by at least [`CLEAR_GAP`], mean
    /// over seeds.
    pub clear_accuracy: f64,
    /// Accuracy against the true reward, mean over seeds.
    pub mean_accuracy: f64,
    /// Lowest accuracy of a seed.
    pub min_accuracy: f64,
    /// Highest accuracy of a seed.
    pub max_accuracy: f64,
    /// Pairs processed per second of optimisation (members × steps × batch / time).
    pub pairs_per_second: f64,
    /// Seconds of optimisation per run, mean over seeds.
    pub seconds: f64,
    /// Steps a member ran (fewer than asked when it stopped early), mean over members and seeds.
    pub steps_run: f64,
}

/// Seed of the task itself and of the test pairs: fixed, so every row is measured on the
/// same hidden reward and the same fresh pairs.
pub(crate) const TASK_SEED: u64 = 0x5eed;

/// Runs the sweep; one [`Row`] per label count, in the order given.
pub fn run(opts: &RewardOpts) -> anyhow::Result<Vec<Row>> {
    let max = opts.labels.iter().copied().max().unwrap_or(0);
    let steps = opts.steps.unwrap_or(300);
    match opts.task {
        TaskKind::Text => {
            let task = TextTask::new(TASK_SEED);
            let pair = |rng: &mut StdRng| {
                let (a, b) = (task.sentence(rng), task.sentence(rng));
                let (ra, rb) = (task.reward(&a), task.reward(&b));
                (text_features(&a), text_features(&b), ra, rb)
            };
            let cfg = opts.tune(crate::reward::job::vector_training().with_steps(steps));
            sweep::<MlpReward>(
                opts,
                &MlpRewardConfig::new(TEXT_FEATURE_DIM),
                cfg,
                max,
                1000,
                pair,
            )
        }
        TaskKind::Gif => {
            let pair = |rng: &mut StdRng| {
                let (a, b) = (gif_clip(rng), gif_clip(rng));
                (a.0, b.0, a.1, b.1)
            };
            let cfg = opts.tune(crate::reward::job::clip_training().with_steps(steps));
            let model = crate::reward::job::clip_model();
            sweep::<ClipReward>(opts, &model, cfg, max, 200, pair)
        }
    }
}

/// A fresh GIF rollout decoded and subsampled exactly as an uploaded clip is for training.
pub(crate) fn gif_clip(rng: &mut StdRng) -> (Clip, f64) {
    let r = GifTask.rollout(rand::Rng::random(rng));
    let decoded = decode_gif(&r.gif, &ClipLimits::default()).expect("our own GIFs decode");
    let clip = training_clip(decoded.frame_count as usize, &decoded.frames).expect("64×64 frames");
    (clip, r.reward)
}

/// `n` fresh pairs (from `pair`, which draws two inputs with their true rewards) labelled by
/// the true reward itself: accuracy on them is agreement with the truth (pairs of equal true
/// reward are ties, left out of accuracy). Drawn from a fixed seed, so every run is measured
/// on the same pairs.
pub(crate) fn truth_test_set<I>(
    n: usize,
    pair: &mut impl FnMut(&mut StdRng) -> (I, I, f64, f64),
) -> Vec<Example<I>> {
    let mut rng = StdRng::seed_from_u64(derive_seed(TASK_SEED, 1));
    (0..n)
        .map(|_| {
            let (a, b, ra, rb) = pair(&mut rng);
            let truth = match ra.total_cmp(&rb) {
                std::cmp::Ordering::Greater => Preference::Left,
                std::cmp::Ordering::Less => Preference::Right,
                std::cmp::Ordering::Equal => Preference::Tie,
            };
            Example::new(a, b, truth)
        })
        .collect()
}

/// The sweep over label counts and seeds for one model type; `pair` draws a fresh pair of
/// inputs with their true rewards.
fn sweep<M: RewardModel>(
    opts: &RewardOpts,
    model: &M::Config,
    cfg: TrainingConfig,
    max_labels: usize,
    default_test: usize,
    mut pair: impl FnMut(&mut StdRng) -> (M::Input, M::Input, f64, f64),
) -> anyhow::Result<Vec<Row>>
where
    M::Input: Clone,
{
    let mut gaps = Vec::new();
    let test = truth_test_set(opts.test_pairs.unwrap_or(default_test), &mut |rng| {
        let (a, b, ra, rb) = pair(rng);
        gaps.push((ra - rb).abs());
        (a, b, ra, rb)
    });
    let clear: Vec<usize> = (0..test.len()).filter(|&i| gaps[i] >= CLEAR_GAP).collect();
    let shown: Vec<(&M::Input, &M::Input)> = test.iter().map(|e| (&e.left, &e.right)).collect();
    let never = AtomicBool::new(false);
    let mut runs: Vec<Vec<[f64; 6]>> = vec![Vec::new(); opts.labels.len()];
    for seed in 0..opts.seeds {
        // Labels of one seed are drawn once; smaller counts take a prefix, so the curve
        // compares nested data sets rather than unrelated draws.
        let mut rng = StdRng::seed_from_u64(derive_seed(seed, 2));
        let mut rater = Rater::new(
            RaterConfig::bradley_terry(opts.temperature),
            derive_seed(seed, 3),
        );
        // Per label: does it agree with the true reward (None when the rewards are equal)?
        let mut agrees = Vec::with_capacity(max_labels);
        let labelled: Vec<Example<M::Input>> = (0..max_labels)
            .map(|_| {
                let (a, b, ra, rb) = pair(&mut rng);
                let side = rater.choose(ra, rb);
                agrees.push((ra != rb).then_some((side == Side::Left) == (ra > rb)));
                let answer = match side {
                    Side::Left => Preference::Left,
                    Side::Right => Preference::Right,
                };
                Example::new(a, b, answer)
            })
            .collect();
        for (i, &n) in opts.labels.iter().enumerate() {
            let cfg = cfg.clone().with_seed(seed);
            // The test pairs are scored once, here, for both accuracies (so not
            // handed to `train_ensemble` to score as its held-out set).
            let (ensemble, report) =
                ml::train_ensemble::<M>(model, &cfg, &labelled[..n], &[], |_| {}, &never)?;
            let p = ensemble.preferences(&shown)?;
            let accuracy = ml::Metrics::compute(&p, &test)
                .and_then(|m| m.accuracy)
                .unwrap_or(f64::NAN);
            let right = clear
                .iter()
                .filter(|&&i| (p[i] > 0.5) == (test[i].target > 0.5))
                .count();
            let clear_accuracy = right as f64 / clear.len().max(1) as f64;
            let secs = report.elapsed.as_secs_f64();
            let steps = report.member_steps.iter().sum::<usize>() as f64
                / report.member_steps.len().max(1) as f64;
            let judged: Vec<bool> = agrees[..n].iter().flatten().copied().collect();
            let rater = judged.iter().filter(|&&a| a).count() as f64 / judged.len() as f64;
            runs[i].push([
                accuracy,
                report.pairs_seen as f64 / secs,
                secs,
                steps,
                rater,
                clear_accuracy,
            ]);
        }
    }
    Ok(opts
        .labels
        .iter()
        .zip(runs)
        .map(|(&labels, r)| {
            let mean = |k: usize| r.iter().map(|x| x[k]).sum::<f64>() / r.len() as f64;
            Row {
                labels,
                rater_accuracy: mean(4),
                clear_accuracy: mean(5),
                mean_accuracy: mean(0),
                min_accuracy: r.iter().map(|x| x[0]).fold(f64::INFINITY, f64::min),
                max_accuracy: r.iter().map(|x| x[0]).fold(f64::NEG_INFINITY, f64::max),
                pairs_per_second: mean(1),
                seconds: mean(2),
                steps_run: mean(3),
            }
        })
        .collect())
}

/// Prints the table for `rows` (and the process's peak memory) on stdout.
pub fn print(opts: &RewardOpts, rows: &[Row]) {
    println!(
        "backflip bench reward --task {}: {} seed(s), rater temperature {}, at most {} steps, l2 {}, early stopping {}",
        opts.task.as_str(),
        opts.seeds,
        opts.temperature,
        opts.steps.unwrap_or(300),
        opts.l2.map_or("as the service".into(), |v| v.to_string()),
        match opts.eval_every {
            None => "as the service".to_string(),
            Some(0) => "off".to_string(),
            Some(e) => format!("every {e} steps"),
        }
    );
    println!(
        "accuracy: against the true reward on fresh pairs; clear: the same on pairs whose true \
         rewards differ by at least {CLEAR_GAP} unit; rater: share of the training labels that \
         agree with the true reward"
    );
    println!(
        "{:>7} {:>10} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "labels", "accuracy", "min–max", "clear", "pairs/s", "train s", "steps run", "rater"
    );
    for r in rows {
        println!(
            "{:>7} {:>10.3} {:>13} {:>9.3} {:>9.0} {:>9.1} {:>9.0} {:>9.3}",
            r.labels,
            r.mean_accuracy,
            format!("{:.3}–{:.3}", r.min_accuracy, r.max_accuracy),
            r.clear_accuracy,
            r.pairs_per_second,
            r.seconds,
            r.steps_run,
            r.rater_accuracy
        );
    }
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS: {:.0} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
}

/// The process's peak resident set size (VmHWM), in KiB, where /proc is available.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_text_sweep_gives_a_sane_table() {
        let opts = RewardOpts {
            task: TaskKind::Text,
            labels: vec![30, 60],
            seeds: 1,
            steps: Some(20),
            temperature: 1.0,
            test_pairs: Some(100),
            threads: 1,
            l2: None,
            eval_every: None,
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.iter().map(|r| r.labels).collect::<Vec<_>>(), [30, 60]);
        for r in &rows {
            assert!((0.0..=1.0).contains(&r.mean_accuracy), "{r:?}");
            assert!(r.min_accuracy <= r.mean_accuracy && r.mean_accuracy <= r.max_accuracy);
            assert!(r.pairs_per_second > 0.0 && r.seconds > 0.0, "{r:?}");
            // A temperature-1 rater on the text task is right well over half the time.
            assert!((0.6..1.0).contains(&r.rater_accuracy), "{r:?}");
            assert!((0.0..=1.0).contains(&r.clear_accuracy), "{r:?}");
        }
        assert!(peak_rss_kib().unwrap() > 0);
    }

    #[test]
    fn the_clip_model_learns_the_gif_task_from_500_simulated_labels() {
        // The service's clip network and training settings, 500 labels of a temperature-1
        // Bradley–Terry rater (right on ~92% of them), 200 fresh test pairs scored against the
        // hidden true reward. One seed, so the run is deterministic; `docs/benchmarks.md` has
        // the spread over seeds (`backflip bench reward --task gif`).
        let opts = RewardOpts {
            task: TaskKind::Gif,
            labels: vec![500],
            seeds: 1,
            steps: None,
            temperature: 1.0,
            test_pairs: Some(200),
            threads: 1,
            l2: None,
            eval_every: None,
        };
        let rows = run(&opts).unwrap();
        let r = &rows[0];
        eprintln!("gif, 500 labels: {r:?}");
        assert!(r.mean_accuracy >= 0.9, "{r:?}");
    }
}
