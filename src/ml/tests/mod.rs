//! Tests that train models on synthetic tasks with a known true reward.
//!
//! Raters are simulated with Bradley–Terry noise on the true reward, and accuracy is measured
//! against the true reward on fresh pairs, so nothing here checks a hard-coded output.

mod clips;
mod control;
mod disagreement;
mod export;
mod text;

use std::sync::atomic::AtomicBool;

use rand::Rng;

use super::data::{Example, Preference};

/// A flag nobody raises.
static NEVER: AtomicBool = AtomicBool::new(false);

/// A simulated rater: prefers left with probability σ(β·(true_left − true_right)) and calls a
/// tie `tie_rate` of the time.
fn rate<I>(
    left: I,
    right: I,
    true_diff: f64,
    beta: f64,
    tie_rate: f64,
    rng: &mut impl Rng,
) -> Example<I> {
    let p_left = 1.0 / (1.0 + (-beta * true_diff).exp());
    let answer = if rng.random_bool(tie_rate) {
        Preference::Tie
    } else if rng.random_bool(p_left) {
        Preference::Left
    } else {
        Preference::Right
    };
    Example::new(left, right, answer)
}

/// Share of pairs whose predicted favourite (P > ½) is the true-reward favourite; exact true
/// ties are skipped.
fn true_accuracy(predicted: &[f32], true_diffs: &[f64]) -> f64 {
    let (mut right, mut n) = (0, 0);
    for (&p, &d) in predicted.iter().zip(true_diffs) {
        if d != 0.0 {
            n += 1;
            right += usize::from((p > 0.5) == (d > 0.0));
        }
    }
    right as f64 / n as f64
}
