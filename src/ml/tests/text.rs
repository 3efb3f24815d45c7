//! Text: a hidden linear reward over word counts, learned from hashed features.

use std::sync::OnceLock;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::{NEVER, rate, true_accuracy};
use crate::ml::data::{Example, split_held_out};
use crate::ml::features::{TEXT_FEATURE_DIM, text_features};
use crate::ml::{ClipReward, Ensemble, MlpReward, MlpRewardConfig, TrainReport, TrainingConfig};

const GOOD: [&str; 12] = [
    "helpful", "clear", "accurate", "kind", "concise", "correct", "thorough", "polite", "precise",
    "honest", "useful", "careful",
];
const BAD: [&str; 12] = [
    "rude",
    "wrong",
    "vague",
    "sloppy",
    "harmful",
    "confusing",
    "lazy",
    "false",
    "rambling",
    "careless",
    "misleading",
    "hostile",
];
const NEUTRAL: [&str; 24] = [
    "the", "a", "answer", "response", "is", "was", "very", "quite", "and", "but", "it", "this",
    "reply", "text", "seems", "overall", "somewhat", "really", "of", "with", "for", "user",
    "question", "here",
];

/// Words with hidden weights: good words in [0.5, 1.5], bad in [-1.5, -0.5], the rest 0.
pub(super) struct TextTask {
    vocabulary: Vec<(&'static str, f64)>,
}

impl TextTask {
    pub(super) fn new(rng: &mut impl Rng) -> Self {
        let mut vocabulary = Vec::new();
        vocabulary.extend(GOOD.iter().map(|&w| (w, rng.random_range(0.5..1.5))));
        vocabulary.extend(BAD.iter().map(|&w| (w, -rng.random_range(0.5..1.5))));
        vocabulary.extend(NEUTRAL.iter().map(|&w| (w, 0.0)));
        Self { vocabulary }
    }

    /// A sentence of 6–12 words and its true reward (the sum of its words' weights).
    pub(super) fn sentence(&self, rng: &mut impl Rng) -> (String, f64) {
        let len = rng.random_range(6..=12);
        let words: Vec<_> = (0..len)
            .map(|_| *self.vocabulary.choose(rng).unwrap())
            .collect();
        let text = words.iter().map(|(w, _)| *w).collect::<Vec<_>>().join(" ");
        (text, words.iter().map(|(_, weight)| weight).sum())
    }

    /// A featurised pair and its true reward difference, left − right.
    pub(super) fn pair(&self, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>, f64) {
        let (a, ra) = self.sentence(rng);
        let (b, rb) = self.sentence(rng);
        (text_features(&a), text_features(&b), ra - rb)
    }

    /// `n` pairs labelled by a Bradley–Terry rater (β = 1) who calls 5% of pairs ties.
    pub(super) fn labelled(&self, n: usize, rng: &mut impl Rng) -> Vec<Example<Vec<f32>>> {
        (0..n)
            .map(|_| {
                let (a, b, diff) = self.pair(rng);
                rate(a, b, diff, 1.0, 0.05, rng)
            })
            .collect()
    }
}

/// The configuration every text test trains with: the defaults, 32 pairs a step.
pub(super) fn text_configs() -> (MlpRewardConfig, TrainingConfig) {
    let model = MlpRewardConfig::new(TEXT_FEATURE_DIM);
    (model, TrainingConfig::new().with_batch_size(32))
}

struct Trained {
    task: TextTask,
    ensemble: Ensemble<MlpReward>,
    report: TrainReport,
}

/// One ensemble trained on 500 labelled pairs, shared so the 2-core machine trains it once.
fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(1);
        let task = TextTask::new(&mut rng);
        let labelled: Vec<(usize, _)> = task
            .labelled(500, &mut rng)
            .into_iter()
            .enumerate()
            .collect();
        let (train, held_out) = split_held_out(labelled, |(id, _)| id.to_le_bytes());
        let strip = |v: Vec<(usize, Example<Vec<f32>>)>| v.into_iter().map(|(_, e)| e).collect();
        let (train, held_out): (Vec<_>, Vec<_>) = (strip(train), strip(held_out));
        let (model, config) = text_configs();
        let (ensemble, report) =
            crate::ml::train_ensemble(&model, &config, &train, &held_out, |_| {}, &NEVER).unwrap();
        eprintln!(
            "text: {} train / {} held-out pairs; {} pairs seen in {:.2?} ({:.0} pairs/s)",
            train.len(),
            held_out.len(),
            report.pairs_seen,
            report.elapsed,
            report.pairs_seen as f64 / report.elapsed.as_secs_f64(),
        );
        eprintln!(
            "text: held-out metrics against the raters: {:?}",
            report.metrics
        );
        Trained {
            task,
            ensemble,
            report,
        }
    })
}

#[test]
fn text_model_recovers_hidden_reward() {
    let t = trained();
    let mut rng = StdRng::seed_from_u64(2);
    let pairs: Vec<_> = (0..1000).map(|_| t.task.pair(&mut rng)).collect();
    let refs: Vec<_> = pairs.iter().map(|(a, b, _)| (a, b)).collect();
    let started = Instant::now();
    let p = t.ensemble.preferences(&refs).unwrap();
    eprintln!(
        "text: scored 1000 pairs with 3 members in {:.2?}",
        started.elapsed()
    );
    let diffs: Vec<f64> = pairs.iter().map(|(_, _, d)| *d).collect();
    let accuracy = true_accuracy(&p, &diffs);
    eprintln!("text: accuracy against the true reward on fresh pairs: {accuracy:.3}");
    // Measured 0.83–0.86 over five task seeds (NOTES.md); 0.8 leaves a margin below that.
    assert!(accuracy >= 0.8, "accuracy {accuracy}");
    let held_out = t.report.metrics.as_ref().expect("held-out pairs exist");
    // Raters answer with noise, so agreement with them is lower than with the true reward.
    assert!(held_out.accuracy.unwrap() > 0.7, "{held_out:?}");
    assert!(
        held_out.log_loss < std::f64::consts::LN_2,
        "better than a coin: {held_out:?}"
    );
}

#[test]
fn saved_ensemble_scores_identically() {
    let t = trained();
    let saved = t.ensemble.save().unwrap();
    assert_eq!(saved.members.len(), 3);
    let loaded = Ensemble::<MlpReward>::load(&saved).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let inputs: Vec<Vec<f32>> = (0..50)
        .map(|_| text_features(&t.task.sentence(&mut rng).0))
        .collect();
    let refs: Vec<_> = inputs.iter().collect();
    let before = t.ensemble.member_rewards(&refs).unwrap();
    assert_eq!(before, loaded.member_rewards(&refs).unwrap());
    assert_eq!(loaded.config().d_hidden, t.ensemble.config().d_hidden);
    // Weights of one architecture never load into another, nor with a member missing.
    assert!(Ensemble::<ClipReward>::load(&saved).is_err());
    let mut truncated = saved.clone();
    truncated.members.pop();
    assert!(Ensemble::<MlpReward>::load(&truncated).is_err());
}
