//! Rater quality: agreement statistics, reliability and bias measures.

pub mod stats;
