//! Training examples, bootstrap resampling and the held-out split.

use rand::Rng;
use sha2::{Digest, Sha256};

use super::{MlError, Result};

/// Side of the square grayscale frames a [`Clip`] holds.
pub const CLIP_SIDE: usize = 64;

/// Share of pairs held out for evaluation: 1/e.
///
/// That is the share of examples a bootstrap sample of the same size leaves out, so held-out
/// metrics are computed on roughly as much data as each ensemble member never saw anyway.
pub const HELD_OUT_FRACTION: f64 = 0.367_879_441_171_442_33;

/// A rater's answer about a pair, in canonical (left, right) terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// The left rollout is better.
    Left,
    /// The right rollout is better.
    Right,
    /// Equally good.
    Tie,
}

impl Preference {
    /// Training target: the probability that left is preferred (1, 0 or ½).
    pub fn target(self) -> f32 {
        match self {
            Preference::Left => 1.0,
            Preference::Right => 0.0,
            Preference::Tie => 0.5,
        }
    }
}

/// One labelled comparison: two inputs, the target P(left ≻ right) and a loss weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Example<I> {
    /// The rollout shown (canonically) on the left.
    pub left: I,
    /// The rollout shown on the right.
    pub right: I,
    /// 1.0 when left was preferred, 0.0 when right was, 0.5 for a tie.
    pub target: f32,
    /// Weight in the loss, e.g. a rater reliability estimate; 1.0 by default.
    pub weight: f32,
}

impl<I> Example<I> {
    /// A pair labelled with `preference`, with weight 1.
    pub fn new(left: I, right: I, preference: Preference) -> Self {
        Self {
            left,
            right,
            target: preference.target(),
            weight: 1.0,
        }
    }

    /// The same example with another loss weight.
    pub fn with_weight(self, weight: f32) -> Self {
        Self { weight, ..self }
    }

    /// Whether the rater called it a tie (excluded from accuracy).
    pub fn is_tie(&self) -> bool {
        self.target == 0.5
    }
}

/// A decoded GIF clip: `frames` grayscale frames of `CLIP_SIDE × CLIP_SIDE` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    frames: usize,
    pixels: Vec<u8>,
}

impl Clip {
    /// Wraps `pixels` (frame after frame, rows top to bottom); checks the length.
    pub fn new(frames: usize, pixels: Vec<u8>) -> Result<Self> {
        let expected = frames * CLIP_SIDE * CLIP_SIDE;
        if frames == 0 || pixels.len() != expected {
            return Err(MlError::InputShape {
                expected: format!(
                    "{frames} (≥ 1) frames of {CLIP_SIDE}×{CLIP_SIDE} = {expected} bytes"
                ),
                got: format!("{} bytes", pixels.len()),
            });
        }
        Ok(Self { frames, pixels })
    }

    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The raw bytes, frame-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Frame `t` as `CLIP_SIDE²` bytes.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = CLIP_SIDE * CLIP_SIDE;
        &self.pixels[t * n..(t + 1) * n]
    }
}

/// `n` indices drawn uniformly with replacement from `0..n`: one bootstrap resample.
pub fn bootstrap_indices(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Whether the item with this stable key (e.g. a comparison id) belongs to the held-out set.
///
/// Decided by the first 8 bytes of SHA-256 of the key, so a pair stays on the same side in
/// every retrain and on every machine: metrics of successive model versions stay comparable
/// and a held-out pair never leaks into training later.
pub fn is_held_out(key: &[u8]) -> bool {
    let digest = Sha256::digest(key);
    let head = u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"));
    (head as f64) < HELD_OUT_FRACTION * (u64::MAX as f64)
}

/// Splits `items` into (train, held out) with [`is_held_out`] on each item's key.
pub fn split_held_out<T, K: AsRef<[u8]>>(items: Vec<T>, key: impl Fn(&T) -> K) -> (Vec<T>, Vec<T>) {
    items
        .into_iter()
        .partition(|item| !is_held_out(key(item).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn held_out_split_is_stable_and_near_one_over_e() {
        let ids: Vec<u64> = (0..20_000).collect();
        let (train, held) = split_held_out(ids.clone(), |id| id.to_le_bytes());
        let share = held.len() as f64 / ids.len() as f64;
        assert!((share - HELD_OUT_FRACTION).abs() < 0.015, "share {share}");
        assert_eq!(train.len() + held.len(), ids.len());
        let (_, again) = split_held_out(ids, |id| id.to_le_bytes());
        assert_eq!(held, again);
    }

    #[test]
    fn bootstrap_leaves_out_about_one_over_e() {
        let mut rng = StdRng::seed_from_u64(7);
        let idx = bootstrap_indices(10_000, &mut rng);
        let mut seen = vec![false; 10_000];
        idx.iter().for_each(|&i| seen[i] = true);
        let left_out = seen.iter().filter(|s| !**s).count() as f64 / 10_000.0;
        assert!(
            (left_out - HELD_OUT_FRACTION).abs() < 0.02,
            "left out {left_out}"
        );
    }

    #[test]
    fn clip_checks_its_length() {
        assert!(Clip::new(2, vec![0; 2 * CLIP_SIDE * CLIP_SIDE]).is_ok());
        assert!(Clip::new(2, vec![0; 10]).is_err());
        assert!(Clip::new(0, vec![]).is_err());
    }
}
