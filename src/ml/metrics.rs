//! Held-out metrics of a reward model: accuracy, log-loss and a calibration table.

use serde::{Deserialize, Serialize};

use super::data::Example;

/// Number of equal-width probability bins in [`Metrics::calibration`].
pub const CALIBRATION_BINS: usize = 5;

/// How well predicted preference probabilities match held-out rater answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Held-out pairs evaluated, ties included.
    pub pairs: usize,
    /// Share of non-tie pairs where the model's favourite is the rater's; `None` if all ties.
    pub accuracy: Option<f64>,
    /// Weighted mean cross-entropy between predicted P(left ≻ right) and the target (nats).
    pub log_loss: f64,
    /// Predicted probability against observed frequency, [`CALIBRATION_BINS`] bins over [0, 1].
    pub calibration: Vec<CalibrationBin>,
}

/// One calibration bin: pairs whose predicted P(left ≻ right) fell in `[lower, upper)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin.
    pub lower: f64,
    /// Upper edge (the last bin includes 1.0).
    pub upper: f64,
    /// Pairs in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin (`None` when empty).
    pub mean_predicted: Option<f64>,
    /// Mean target in the bin — how often left was actually preferred, ties counting ½.
    pub observed: Option<f64>,
}

impl Metrics {
    /// Metrics of predicted `probabilities` (P(left ≻ right), one per example) on `examples`.
    ///
    /// Returns `None` for an empty set: "no held-out data" is not the same as "accuracy 0".
    pub fn compute<I>(probabilities: &[f32], examples: &[Example<I>]) -> Option<Self> {
        assert_eq!(
            probabilities.len(),
            examples.len(),
            "one probability per example"
        );
        if examples.is_empty() {
            return None;
        }
        let (mut correct, mut decided) = (0usize, 0usize);
        let (mut loss, mut weight) = (0f64, 0f64);
        let mut bins = vec![(0usize, 0f64, 0f64); CALIBRATION_BINS];
        for (&p, ex) in probabilities.iter().zip(examples) {
            // Clamped so a saturated prediction costs a large but finite loss.
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            let t = f64::from(ex.target);
            if !ex.is_tie() {
                decided += 1;
                correct += usize::from((p > 0.5) == (t > 0.5));
            }
            let w = f64::from(ex.weight);
            loss -= w * (t * p.ln() + (1.0 - t) * (1.0 - p).ln());
            weight += w;
            let b = ((p * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
            bins[b].0 += 1;
            bins[b].1 += p;
            bins[b].2 += t;
        }
        let calibration = bins
            .into_iter()
            .enumerate()
            .map(|(i, (count, sum_p, sum_t))| CalibrationBin {
                lower: i as f64 / CALIBRATION_BINS as f64,
                upper: (i + 1) as f64 / CALIBRATION_BINS as f64,
                count,
                mean_predicted: (count > 0).then(|| sum_p / count as f64),
                observed: (count > 0).then(|| sum_t / count as f64),
            })
            .collect();
        Some(Self {
            pairs: examples.len(),
            accuracy: (decided > 0).then(|| correct as f64 / decided as f64),
            log_loss: if weight > 0.0 { loss / weight } else { 0.0 },
            calibration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::data::Preference;

    #[test]
    fn metrics_count_ties_in_loss_but_not_accuracy() {
        let ex = vec![
            Example::new((), (), Preference::Left),
            Example::new((), (), Preference::Right),
            Example::new((), (), Preference::Tie),
            Example::new((), (), Preference::Left),
        ];
        let m = Metrics::compute(&[0.9, 0.2, 0.5, 0.3], &ex).unwrap();
        assert_eq!(m.accuracy, Some(2.0 / 3.0));
        let expected = -(0.9f64.ln() + 0.8f64.ln() + 0.5f64.ln() + 0.3f64.ln()) / 4.0;
        assert!((m.log_loss - expected).abs() < 1e-6);
        assert_eq!(m.calibration.iter().map(|b| b.count).sum::<usize>(), 4);
        assert_eq!(m.calibration[4].observed, Some(1.0));
        assert!(Metrics::compute::<()>(&[], &[]).is_none());
    }
}
