//! Rater quality: agreement statistics, reliability and bias measures, the project's quality
//! report, and the lead's actions (gold, pause, exclusion).

pub mod actions;
pub mod behind;
pub mod bench;
mod checks;
pub mod detectors;
pub mod figures;
pub mod model_check;
pub mod report;
pub mod series;
pub mod stats;
pub mod store;
pub mod weights;
