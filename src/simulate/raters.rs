//! Simulated raters: who answers left or right, and how noisily.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a simulated rater pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The rollout shown on the left is better.
    Left,
    /// The rollout shown on the right is better.
    Right,
}

impl Side {
    /// `left` or `right`, as the judgment API takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// How a rater decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// By the true reward, with Bradley–Terry noise, random answers and position bias.
    BradleyTerry,
    /// Presses "left" whatever is shown: the worst case a bias detector must catch.
    AlwaysLeft,
}

/// A simulated rater's parameters.
///
/// A Bradley–Terry rater prefers left with probability
/// `b + (1 − b)·((1 − ε)·σ((r_left − r_right) / T) + ε/2)`, where `T` is the Boltzmann
/// temperature (0: always the higher true reward, a true tie split evenly), `ε` the share of
/// answers given at random and `b` the position bias, the share of pairs answered "left"
/// without looking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RaterConfig {
    /// Bradley–Terry, or always left.
    pub behaviour: Behaviour,
    /// Boltzmann temperature `T`, in units of the task's true reward (≥ 0).
    pub temperature: f64,
    /// `ε`: share of answers drawn at random, in [0, 1].
    pub random_rate: f64,
    /// `b`: extra probability of answering "left", in [0, 1].
    pub position_bias: f64,
}

impl RaterConfig {
    /// A Bradley–Terry rater at this temperature, with no random answers and no bias.
    pub fn bradley_terry(temperature: f64) -> Self {
        Self {
            behaviour: Behaviour::BradleyTerry,
            temperature: temperature.max(0.0),
            random_rate: 0.0,
            position_bias: 0.0,
        }
    }

    /// A rater who always answers "left".
    pub fn always_left() -> Self {
        Self {
            behaviour: Behaviour::AlwaysLeft,
            ..Self::bradley_terry(0.0)
        }
    }

    /// The same rater answering `rate` of the pairs at random.
    pub fn with_random_rate(self, rate: f64) -> Self {
        Self {
            random_rate: rate.clamp(0.0, 1.0),
            ..self
        }
    }

    /// The same rater answering "left" without looking `bias` of the time.
    pub fn with_position_bias(self, bias: f64) -> Self {
        Self {
            position_bias: bias.clamp(0.0, 1.0),
            ..self
        }
    }

    /// The probability of answering "left" when the rollouts' true rewards are these.
    pub fn p_left(&self, left: f64, right: f64) -> f64 {
        if self.behaviour == Behaviour::AlwaysLeft {
            return 1.0;
        }
        let diff = left - right;
        let informed = if diff == 0.0 {
            0.5
        } else if self.temperature == 0.0 {
            f64::from(u8::from(diff > 0.0))
        } else {
            1.0 / (1.0 + (-diff / self.temperature).exp())
        };
        let noisy = (1.0 - self.random_rate) * informed + self.random_rate / 2.0;
        self.position_bias + (1.0 - self.position_bias) * noisy
    }
}

/// A mixed panel of `n` raters, as `backflip simulate` uses: (profile name, parameters).
///
/// Profiles cycle careful → noisy → always-left → left-biased, so three raters already
/// include one whose answers a position-bias check must flag.
pub fn panel(n: usize, temperature: f64) -> Vec<(&'static str, RaterConfig)> {
    let profiles = [
        ("careful", RaterConfig::bradley_terry(temperature / 2.0)),
        (
            "noisy",
            RaterConfig::bradley_terry(temperature * 2.0).with_random_rate(0.2),
        ),
        ("always-left", RaterConfig::always_left()),
        (
            "left-biased",
            RaterConfig::bradley_terry(temperature).with_position_bias(0.3),
        ),
    ];
    (0..n).map(|i| profiles[i % profiles.len()]).collect()
}

/// A simulated rater: its parameters and its own reproducible generator.
#[derive(Debug, Clone)]
pub struct Rater {
    /// Its parameters.
    pub config: RaterConfig,
    rng: StdRng,
}

impl Rater {
    /// A rater whose answers are reproducible for `seed`.
    pub fn new(config: RaterConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The answer about a pair whose shown rollouts have these true rewards.
    pub fn choose(&mut self, left: f64, right: f64) -> Side {
        if self.rng.random_bool(self.config.p_left(left, right)) {
            Side::Left
        } else {
            Side::Right
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Share of "left" over `n` pairs with true rewards drawn in [−2, 2].
    fn left_share(config: RaterConfig, n: usize) -> f64 {
        let mut rater = Rater::new(config, 42);
        let mut pairs = StdRng::seed_from_u64(7);
        let lefts = (0..n)
            .filter(|_| {
                let (l, r) = (pairs.random_range(-2.0..2.0), pairs.random_range(-2.0..2.0));
                rater.choose(l, r) == Side::Left
            })
            .count();
        lefts as f64 / n as f64
    }

    #[test]
    fn always_left_says_left_always() {
        let mut rater = Rater::new(RaterConfig::always_left(), 1);
        assert!((0..1000).all(|i| rater.choose(0.0, f64::from(i)) == Side::Left));
    }

    #[test]
    fn a_noiseless_rater_picks_the_higher_true_reward() {
        let mut rater = Rater::new(RaterConfig::bradley_terry(0.0), 2);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let (l, r): (f64, f64) = (rng.random(), rng.random());
            let expected = if l > r { Side::Left } else { Side::Right };
            assert_eq!(rater.choose(l, r), expected, "{l} vs {r}");
        }
    }

    #[test]
    fn temperature_and_random_answers_add_the_configured_errors() {
        // σ(1 / 1) = 0.731: at T = 1, a pair one unit apart is answered right 73% of the time.
        let mut rater = Rater::new(RaterConfig::bradley_terry(1.0), 4);
        let right = (0..20_000).filter(|_| rater.choose(1.0, 0.0) == Side::Left);
        let share = right.count() as f64 / 20_000.0;
        assert!((share - 0.731).abs() < 0.015, "{share}");
        // ε = 0.4 with no other noise: wrong on half the random answers, 20% in all.
        let mut rater = Rater::new(RaterConfig::bradley_terry(0.0).with_random_rate(0.4), 5);
        let wrong = (0..20_000).filter(|_| rater.choose(0.0, 1.0) == Side::Left);
        let share = wrong.count() as f64 / 20_000.0;
        assert!((share - 0.2).abs() < 0.015, "{share}");
    }

    #[test]
    fn position_bias_shifts_the_left_share() {
        let fair = left_share(RaterConfig::bradley_terry(1.0), 20_000);
        let biased = left_share(
            RaterConfig::bradley_terry(1.0).with_position_bias(0.2),
            20_000,
        );
        assert!((fair - 0.5).abs() < 0.02, "fair rater: {fair}");
        // b + (1 − b)·½ = 0.6 on pairs with no side favoured on average.
        assert!((biased - 0.6).abs() < 0.02, "biased rater: {biased}");
    }

    #[test]
    fn the_panel_cycles_profiles() {
        let p = panel(5, 1.0);
        let names: Vec<_> = p.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["careful", "noisy", "always-left", "left-biased", "careful"]
        );
        assert_eq!(p[2].1.behaviour, Behaviour::AlwaysLeft);
    }
}
