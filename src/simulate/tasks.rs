//! Simulated tasks: rollouts with a hidden true reward.

use std::borrow::Cow;
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Words in a [`TextTask`]'s vocabulary; a quarter carry positive weight, a quarter negative.
const VOCABULARY: usize = 64;
const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do", "fu", "ga", "ha", "ji", "po", "ze",
];

/// Sentences of made-up words, some of which carry a hidden weight.
///
/// A sentence's true reward is the sum of its words' weights: positive words in [0.5, 1.5],
/// negative ones in [−1.5, −0.5], the other half 0. The model never sees the weights, only the
/// hashed text features, so it must learn them from preferences. Deterministic for a seed.
#[derive(Debug, Clone)]
pub struct TextTask {
    words: Vec<(String, f64)>,
    weight: HashMap<String, f64>,
}

impl TextTask {
    /// The task (its vocabulary and hidden weights) for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut words: Vec<(String, f64)> = Vec::with_capacity(VOCABULARY);
        while words.len() < VOCABULARY {
            let syllables = rng.random_range(2..=3);
            let word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect();
            if words.iter().any(|(w, _)| *w == word) {
                continue; // a repeated word would get two weights
            }
            let weight = match words.len() % 4 {
                0 => rng.random_range(0.5..1.5),
                1 => -rng.random_range(0.5..1.5),
                _ => 0.0,
            };
            words.push((word, weight));
        }
        let weight = words.iter().cloned().collect();
        Self { words, weight }
    }

    /// A sentence of 6–12 words.
    pub fn sentence(&self, rng: &mut impl Rng) -> String {
        let len = rng.random_range(6..=12);
        (0..len)
            .map(|_| self.words[rng.random_range(0..self.words.len())].0.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The hidden true reward of a text: the sum of its known words' weights.
    pub fn reward(&self, text: &str) -> f64 {
        text.split_whitespace()
            .filter_map(|w| self.weight.get(w))
            .sum()
    }
}

/// Side of the GIF canvas, in pixels.
pub const GIF_SIDE: u16 = 64;
/// Frames per clip: few, so clip training stays fast (the service reads at most 25).
pub const GIF_FRAMES: usize = 16;
/// Distance the agent covers per frame at full speed, in pixels; the unit of the GIF reward.
pub const GIF_STEP: f64 = 2.5;

/// Clips of an agent (a bright disc) heading for a goal (a ring) on a 64×64 canvas.
///
/// Each clip draws a skill in [0, 1]: 1 walks straight to the goal, 0 wanders at random.
/// The true reward is the progress over the clip — distance to the goal at the first frame
/// minus at the last — in units of [`GIF_STEP`], so a perfect clip scores up to 15.
#[derive(Debug, Clone, Copy, Default)]
pub struct GifTask;

/// One rendered clip and its hidden true reward.
#[derive(Debug, Clone)]
pub struct GifRollout {
    /// A real GIF file that [`crate::clips::decode_gif`] accepts.
    pub gif: Vec<u8>,
    /// Progress towards the goal over the clip, in [`GIF_STEP`]s.
    pub reward: f64,
}

impl GifTask {
    /// The clip for `seed` (deterministic).
    pub fn rollout(&self, seed: u64) -> GifRollout {
        let mut rng = StdRng::seed_from_u64(seed);
        let skill: f64 = rng.random_range(0.0..1.0);
        // Goal on the right, agent on the left, as in the demo clips: every clip is a journey.
        let goal = (rng.random_range(40.0..56.0), rng.random_range(8.0..56.0));
        let mut pos: (f64, f64) = (rng.random_range(8.0..24.0), rng.random_range(8.0..56.0));
        let mut heading = rng.random_range(0.0..std::f64::consts::TAU);
        let distance = |p: (f64, f64)| (goal.0 - p.0).hypot(goal.1 - p.1);
        let start = distance(pos);
        // Background, goal ring, agent, grid dots: lumas far apart so grayscale keeps them.
        let palette = [16, 20, 36, 40, 170, 70, 255, 220, 120, 44, 50, 72];
        // Writing to a Vec cannot fail, and the frames always match their declared size.
        let mut enc = gif::Encoder::new(Vec::new(), GIF_SIDE, GIF_SIDE, &palette).expect("header");
        enc.set_repeat(gif::Repeat::Infinite).expect("repeat");
        let side = usize::from(GIF_SIDE);
        for t in 0..GIF_FRAMES {
            if t > 0 {
                heading += rng.random_range(-0.8..0.8);
                let d = distance(pos).max(1e-6);
                let toward = ((goal.0 - pos.0) / d, (goal.1 - pos.1) / d);
                // A skilled agent stops on the goal instead of overshooting it.
                let speed = GIF_STEP.min(d.max(GIF_STEP * (1.0 - skill)));
                let dir = (
                    skill * toward.0 + (1.0 - skill) * heading.cos(),
                    skill * toward.1 + (1.0 - skill) * heading.sin(),
                );
                pos.0 = (pos.0 + speed * dir.0).clamp(4.0, 60.0);
                pos.1 = (pos.1 + speed * dir.1).clamp(4.0, 60.0);
            }
            let px: Vec<u8> = (0..side * side)
                .map(|i| {
                    let (x, y) = ((i % side) as f64 + 0.5, (i / side) as f64 + 0.5);
                    if (x - pos.0).hypot(y - pos.1) <= 3.5 {
                        2
                    } else if ((x - goal.0).hypot(y - goal.1) - 4.5).abs() <= 1.0 {
                        1
                    } else {
                        3 * u8::from(i % 16 == 0 && (i / side) % 16 == 0)
                    }
                })
                .collect();
            let frame = gif::Frame {
                width: GIF_SIDE,
                height: GIF_SIDE,
                delay: 8,
                buffer: Cow::Owned(px),
                ..Default::default()
            };
            enc.write_frame(&frame).expect("frame");
        }
        GifRollout {
            gif: enc.into_inner().expect("trailer"),
            reward: (start - distance(pos)) / GIF_STEP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clips::{ClipLimits, decode_gif};

    #[test]
    fn text_task_is_deterministic_and_rewards_sum_word_weights() {
        let (a, b) = (TextTask::new(5), TextTask::new(5));
        let mut rng = StdRng::seed_from_u64(1);
        let s = a.sentence(&mut rng);
        assert_eq!(s, b.sentence(&mut StdRng::seed_from_u64(1)));
        let n = s.split(' ').count();
        assert!((6..=12).contains(&n), "{s}");
        let expected: f64 = s.split(' ').map(|w| a.weight[w]).sum();
        assert_eq!(a.reward(&s), expected);
        let positive = a.words.iter().filter(|(_, w)| *w > 0.0).count();
        assert_eq!(positive, VOCABULARY / 4);
        assert_ne!(
            a.words,
            TextTask::new(6).words,
            "another seed, another task"
        );
    }

    #[test]
    fn gif_task_renders_decodable_clips_whose_reward_tracks_skill() {
        let task = GifTask;
        let r = task.rollout(3);
        assert_eq!(r.gif, task.rollout(3).gif, "deterministic");
        let decoded = decode_gif(&r.gif, &ClipLimits::default()).unwrap();
        assert_eq!(decoded.frame_count as usize, GIF_FRAMES);
        assert_eq!(decoded.frames.len(), GIF_FRAMES * 64 * 64);
        let rewards: Vec<f64> = (0..200).map(|s| task.rollout(s).reward).collect();
        assert!(rewards.iter().all(|r| (-16.0..=15.5).contains(r)));
        let spread = rewards.iter().cloned().fold(f64::MIN, f64::max)
            - rewards.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 8.0, "rewards vary: {spread}");
    }
}
