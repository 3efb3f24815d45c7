//! Integration tests of the labeling spine, against a real PostgreSQL.
//! One binary with modules, so it links once.

mod common;

mod api;
mod browser;
mod cli;
mod clips;
mod concurrency;
mod contract;
mod crash;
mod export;
mod jobs;
mod leaderboard;
mod pages;
mod quality;
mod quality_store;
mod rater;
mod reward;
mod roles;
mod select;
mod simulate;
