//! Reliability weights for reward-model training (the project setting
//! `reliability_weighting`, off by default): each judgment weighs its rater's Dawid–Skene
//! reliability, rescaled so that a rater no better than always giving the most common answer
//! weighs almost nothing and a perfect one weighs 1.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::report::{self, ProjectQuality};

/// The least weight a rater gets: their answers still count a little, so a project whose
/// raters all look like chance still trains.
pub const MIN_WEIGHT: f32 = 0.05;

/// (reliability - chance) / (1 - chance), within [MIN_WEIGHT, 1]; chance is the largest class
/// share (the reliability of a rater who always gives the most common answer).
pub fn reliability_weight(reliability: f64, chance: f64) -> f32 {
    if !reliability.is_finite() || !(0.0..1.0).contains(&chance) {
        return 1.0;
    }
    (((reliability - chance) / (1.0 - chance)) as f32).clamp(MIN_WEIGHT, 1.0)
}

/// Weights by rater; raters the model has not seen weigh 1.
#[derive(Debug, Clone, Default)]
pub struct Weights(HashMap<Uuid, f32>);

impl Weights {
    pub fn get(&self, rater: &Uuid) -> f32 {
        self.0.get(rater).copied().unwrap_or(1.0)
    }

    /// Weights computed elsewhere (the export fits the same model without the full report).
    pub fn from_map(weights: HashMap<Uuid, f32>) -> Self {
        Weights(weights)
    }

    /// Every rater's weight from the report's reliabilities and class shares.
    pub fn from_report(q: &ProjectQuality) -> Self {
        let chance = q.class_priors.iter().copied().fold(0.0, f64::max);
        Weights(
            q.raters
                .iter()
                .filter_map(|r| Some((r.id, reliability_weight(r.reliability?, chance))))
                .collect(),
        )
    }
}

/// The project's weights when it trains with reliability weighting; None when it does not.
pub async fn for_training(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Option<Weights>> {
    let on: bool = sqlx::query_scalar("select reliability_weighting from projects where id = $1")
        .bind(project_id)
        .fetch_one(pool)
        .await?;
    if !on {
        return Ok(None);
    }
    let q = report::report(pool, project_id).await?;
    Ok(Some(Weights::from_report(&q)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_rescale_reliability_above_chance() {
        // Classes 50/50: a coin-flipping or always-left rater (reliability 0.5) weighs the
        // floor, a rater right 9 times in 10 weighs (0.9 - 0.5) / 0.5 = 0.8.
        assert_eq!(reliability_weight(0.5, 0.5), MIN_WEIGHT);
        assert!((reliability_weight(0.9, 0.5) - 0.8).abs() < 1e-6);
        assert_eq!(reliability_weight(1.0, 0.5), 1.0);
        assert_eq!(reliability_weight(0.2, 0.5), MIN_WEIGHT);
        assert_eq!(
            reliability_weight(f64::NAN, 0.5),
            1.0,
            "unknown: unweighted"
        );
        assert_eq!(Weights::default().get(&Uuid::nil()), 1.0);
    }
}
