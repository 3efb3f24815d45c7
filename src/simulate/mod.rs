//! Simulated tasks with a hidden true reward, and simulated raters who answer by it.
//!
//! Everything here is deterministic for a seed, so tests, `backflip bench reward` and
//! `backflip simulate` can measure the whole loop — labels in, reward model out — against
//! a ground truth no real project has: how good each rollout *really* is.
//!
//! - [`tasks`]: a text task (words carry hidden weights) and a GIF task (an agent heading
//!   for a goal; the reward is its progress), each giving rollouts with their true reward.
//! - [`raters`]: Bradley–Terry raters with a temperature, random answers and position bias,
//!   and an "always left" rater.
//! - [`project`]: a simulated project in the database, labelled through the real HTTP API.

mod client;
pub mod project;
pub mod raters;
mod setup;
pub mod tasks;

pub use project::{SimOpts, SimReport};
pub use raters::{Behaviour, Rater, RaterConfig, Side};
pub use tasks::{GifRollout, GifTask, TextTask};

/// Which simulated task to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Sentences whose words carry hidden weights.
    Text,
    /// GIF clips of an agent moving towards a goal.
    Gif,
}

impl TaskKind {
    /// `text` or `gif`: the project's media kind and the suffix of its slug.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Text => "text",
            TaskKind::Gif => "gif",
        }
    }
}

/// A seed derived from a base seed and a stream number (SplitMix64's finaliser), so that
/// e.g. each rater or each clip gets an independent, reproducible generator.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
