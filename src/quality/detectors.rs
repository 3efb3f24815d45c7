//! Bias and attention detectors: each returns a share with its 95% Wilson interval and, where
//! the question is "different from a reference level?", an exact or normal-approximation test.
//! Pure functions; the report module gathers their inputs from the database.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::stats::{binomial_test_half, wilson_interval};

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// `k` out of `n`, with the 95% Wilson score interval. `share` is None when `n` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Proportion {
    pub k: usize,
    pub n: usize,
    pub share: Option<f64>,
    pub low: f64,
    pub high: f64,
}

impl Proportion {
    pub fn new(k: usize, n: usize) -> Self {
        let (low, high) = wilson_interval(k, n, Z95);
        Proportion {
            k: k.min(n),
            n,
            share: (n > 0).then(|| k.min(n) as f64 / n as f64),
            low,
            high,
        }
    }

    /// "0.62 (0.55–0.69, 31/50)", or "–" with no data.
    pub fn describe(&self) -> String {
        match self.share {
            Some(s) => format!(
                "{s:.2} ({:.2}–{:.2}, {}/{})",
                self.low, self.high, self.k, self.n
            ),
            None => "–".into(),
        }
    }
}

/// A share tested against a reference level (two-sided p-value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tested {
    #[serde(flatten)]
    pub share: Proportion,
    /// The level the share is tested against.
    pub reference: f64,
    pub p_value: f64,
}

/// Position bias: the share of "left" among left/right answers (ties and can't-tell are not a
/// side), tested against 1/2 with the exact binomial test.
pub fn position_bias(left: usize, right: usize) -> Tested {
    Tested {
        share: Proportion::new(left, left + right),
        reference: 0.5,
        p_value: binomial_test_half(left, left + right),
    }
}

/// Length bias: the share of answers that chose the longer rollout (pairs of equal length and
/// tie/can't-tell answers left out), tested against `reference` (the project's level for a
/// rater, 1/2 for the project) with the exact binomial test.
pub fn length_bias(longer: usize, n: usize, reference: f64) -> Tested {
    Tested {
        share: Proportion::new(longer, n),
        reference,
        p_value: binomial_test(longer, n, reference),
    }
}

/// Exact two-sided binomial test of `k` successes in `n` trials against success probability
/// `p0`: the total probability of outcomes no more likely than `k` (the "minimum likelihood"
/// method, as R's `binom.test`). 1 when `n` is 0.
pub fn binomial_test(k: usize, n: usize, p0: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let k = k.min(n);
    if p0 <= 0.0 || p0 >= 1.0 {
        let certain = if p0 <= 0.0 { 0 } else { n };
        return if k == certain { 1.0 } else { 0.0 };
    }
    // ln(i!) for every i up to n, once: the test then costs O(n), not O(n^2).
    let mut ln_fact = vec![0.0f64; n + 1];
    for i in 2..=n {
        ln_fact[i] = ln_fact[i - 1] + (i as f64).ln();
    }
    let (lp, lq) = (p0.ln(), (1.0 - p0).ln());
    let ln_pmf =
        |i: usize| ln_fact[n] - ln_fact[i] - ln_fact[n - i] + i as f64 * lp + (n - i) as f64 * lq;
    let own = ln_pmf(k);
    // Relative tolerance as in R, so outcomes exactly as likely as k are counted despite rounding.
    let limit = own + (1.0 + 1e-7f64).ln();
    let p: f64 = (0..=n)
        .map(ln_pmf)
        .filter(|&l| l <= limit)
        .map(f64::exp)
        .sum();
    p.min(1.0)
}

/// The median of the values, None when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Answer times: the median and the share faster than a floor (judgments without a recorded
/// time left out), and the share answered before the clips had played once (clip judgments
/// that recorded it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timing {
    pub median_ms: Option<f64>,
    pub floor_ms: i32,
    pub too_fast: Proportion,
    pub before_clip_end: Proportion,
}

pub fn timing(durations: &[Option<i32>], before_end: &[Option<bool>], floor_ms: i32) -> Timing {
    let times: Vec<f64> = durations.iter().flatten().map(|&d| f64::from(d)).collect();
    let fast = durations
        .iter()
        .flatten()
        .filter(|&&d| d < floor_ms)
        .count();
    let early = before_end.iter().flatten().filter(|&&b| b).count();
    Timing {
        median_ms: median(&times),
        floor_ms,
        too_fast: Proportion::new(fast, times.len()),
        before_clip_end: Proportion::new(early, before_end.iter().flatten().count()),
    }
}

/// A change between an earlier and a later set of judgments (of a session, or of the days a
/// rater worked), tested with the pooled two-proportion z test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Drift {
    pub early: Proportion,
    pub late: Proportion,
    /// None when either side is empty or the pooled share is 0 or 1 (no variance to test).
    pub p_value: Option<f64>,
}

pub fn drift(early: (usize, usize), late: (usize, usize)) -> Drift {
    Drift {
        early: Proportion::new(early.0, early.1),
        late: Proportion::new(late.0, late.1),
        p_value: two_proportion_test(early.0, early.1, late.0, late.1),
    }
}

/// Two-sided p-value of the pooled two-proportion z test of k1/n1 against k2/n2.
pub fn two_proportion_test(k1: usize, n1: usize, k2: usize, n2: usize) -> Option<f64> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (a, b) = (n1 as f64, n2 as f64);
    let pooled = (k1 + k2) as f64 / (a + b);
    let se = (pooled * (1.0 - pooled) * (1.0 / a + 1.0 / b)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (k1 as f64 / a - k2 as f64 / b) / se;
    Some(erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0))
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn near(got: f64, want: f64, eps: f64) {
        assert!((got - want).abs() <= eps, "got {got}, want {want}");
    }

    #[test]
    fn proportions_carry_their_interval() {
        let p = Proportion::new(8, 10);
        assert_eq!(p.share, Some(0.8));
        // Wilson 95% for 8/10, by hand: centre 0.7167, half-width 0.2266.
        near(p.low, 0.4902, 1e-4);
        near(p.high, 0.9433, 1e-4);
        assert_eq!(p.describe(), "0.80 (0.49–0.94, 8/10)");
        let none = Proportion::new(0, 0);
        assert_eq!((none.share, none.low, none.high), (None, 0.0, 1.0));
        assert_eq!(none.describe(), "–");
    }

    #[test]
    fn always_left_is_a_significant_position_bias() {
        // 10 of 10 on the left: p = 2 * 0.5^10 = 0.001953.
        let t = position_bias(10, 0);
        assert_eq!(t.share.share, Some(1.0));
        near(t.p_value, 0.001_953_125, 1e-9);
        // 5 of 10 is no evidence at all; no data is no evidence either.
        assert_eq!(position_bias(5, 5).p_value, 1.0);
        assert_eq!(position_bias(0, 0).p_value, 1.0);
    }

    #[test]
    fn binomial_test_matches_r() {
        // Worked out by summing the binomial pmf over outcomes at most as likely as k:
        // k = 7, n = 20, p = 0.3 gives 0.62950.
        near(binomial_test(7, 20, 0.3), 0.629_50, 1e-5);
        // 15 of 20 against 1/2: 2 * P(X <= 5) = 0.041389.
        near(binomial_test(15, 20, 0.5), 0.041_39, 1e-5);
        // Symmetric case agrees with the existing exact test against 1/2.
        near(binomial_test(3, 17, 0.5), binomial_test_half(3, 17), 1e-12);
        assert_eq!(binomial_test(0, 0, 0.4), 1.0);
        assert_eq!(binomial_test(3, 3, 1.0), 1.0);
        assert_eq!(binomial_test(2, 3, 1.0), 0.0);
    }

    #[test]
    fn length_bias_is_tested_against_the_projects_level() {
        // A rater at the project's own level shows nothing.
        let t = length_bias(62, 100, 0.62);
        assert!(t.p_value > 0.9, "{t:?}");
        // 18 of 20 against 0.62, by the same pmf sum: 0.0097073.
        near(length_bias(18, 20, 0.62).p_value, 0.009_707_3, 1e-6);
    }

    #[test]
    fn timing_skips_missing_values() {
        let d = [Some(400), None, Some(3000), Some(900), Some(5000)];
        let clip = [None, Some(true), Some(false), None, Some(true)];
        let t = timing(&d, &clip, 1000);
        // Median of 400, 900, 3000, 5000 is (900 + 3000) / 2.
        assert_eq!(t.median_ms, Some(1950.0));
        assert_eq!((t.too_fast.k, t.too_fast.n), (2, 4));
        assert_eq!((t.before_clip_end.k, t.before_clip_end.n), (2, 3));
        let empty = timing(&[None], &[None], 1000);
        assert_eq!(empty.median_ms, None);
        assert_eq!(empty.too_fast.n, 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn drift_uses_the_two_proportion_test() {
        // 40/50 against 25/50: pooled 0.65, se = sqrt(0.65*0.35*0.04) = 0.095394,
        // z = 0.3 / 0.095394 = 3.1449, two-sided p = 0.001662.
        let d = drift((40, 50), (25, 50));
        near(d.p_value.unwrap(), 0.001_662, 2e-5);
        assert_eq!(d.early.share, Some(0.8));
        // Same share: p = 1; nothing to compare: None.
        near(drift((10, 20), (5, 10)).p_value.unwrap(), 1.0, 1e-6);
        assert_eq!(drift((0, 0), (3, 4)).p_value, None);
        assert_eq!(drift((4, 4), (3, 3)).p_value, None, "no variance");
    }

    #[test]
    fn erfc_known_values() {
        near(erfc(0.0), 1.0, 1e-7);
        near(erfc(1.0), 0.157_299_207, 1e-7);
        near(erfc(-1.0), 1.842_700_793, 1e-7);
    }
}
