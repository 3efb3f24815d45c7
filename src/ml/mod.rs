//! Reward models learned from pairwise preference labels.
//!
//! The pipeline, one file a step:
//!
//! - [`features`]: text → fixed-size hashed feature vector (no downloaded vocabulary), or a
//!   rollout's own embedding passed through.
//! - [`model`]: the networks — an MLP over feature vectors and a per-frame CNN over GIF clips —
//!   behind the [`model::RewardModel`] trait that training and inference are generic over.
//! - [`data`]: labelled pairs, bootstrap resampling, the deterministic held-out split.
//! - [`training`]: Bradley–Terry loss with a "rater answered at random" term, an ensemble of
//!   bootstrapped members, a hand-written loop with progress and cancellation, held-out metrics.
//! - [`inference`]: ensemble rewards, preference probabilities, disagreement for active
//!   selection, and save/load (burnpack bytes plus a JSON manifest).
//!
//! Everything runs on Burn's pure-Rust `flex` CPU backend. Training runs inside its own rayon
//! pool (see [`training::TrainingConfig::threads`]) so it never competes with request handling
//! on the global pool.

pub mod data;
pub mod features;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod training;

#[cfg(test)]
mod tests;

pub use data::{Clip, Example};
pub use features::{FeatureSource, TEXT_FEATURE_DIM};
pub use inference::{Ensemble, SavedEnsemble};
pub use metrics::Metrics;
pub use model::{ClipReward, ClipRewardConfig, MlpReward, MlpRewardConfig, RewardModel};
pub use training::{Progress, TrainReport, TrainingConfig, train_ensemble};

/// Errors from building inputs, training, scoring and loading reward models.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// An input does not have the shape the model was built for.
    #[error("input shape mismatch: expected {expected}, got {got}")]
    InputShape {
        /// What the model expects, in words (e.g. "4098 features").
        expected: String,
        /// What it was given.
        got: String,
    },
    /// Training was asked to run on no examples.
    #[error("no training examples")]
    NoExamples,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The cancellation flag was raised; no model was produced.
    #[error("training cancelled")]
    Cancelled,
    /// Saved weights or their manifest could not be read back.
    #[error("cannot load saved model: {0}")]
    Load(String),
    /// Weights could not be serialised.
    #[error("cannot save model: {0}")]
    Save(String),
}

/// Result type of this module.
pub type Result<T, E = MlError> = std::result::Result<T, E>;

/// The device every model lives on: Burn's pure-Rust `flex` CPU backend.
///
/// Training wraps it with `.autodiff()`; inference uses it as is.
pub fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
