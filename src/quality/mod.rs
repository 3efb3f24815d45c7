//! Rater quality: agreement statistics, reliability and bias measures, the project's quality
//! report, and the lead's actions (gold, pause, exclusion).

pub mod actions;
pub mod bench;
pub mod detectors;
pub mod model_check;
pub mod report;
pub mod series;
pub mod stats;
pub mod weights;
