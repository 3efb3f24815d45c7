//! Cancellation, progress reporting and input validation of the training loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::NEVER;
use crate::ml::data::{Example, Preference};
use crate::ml::{MlError, MlpReward, MlpRewardConfig, Progress, TrainingConfig, train_ensemble};

/// A tiny separable task on 8-dimensional embeddings: reward = first coordinate.
fn tiny_examples(n: usize) -> Vec<Example<Vec<f32>>> {
    (0..n)
        .map(|i| {
            let x = (i as f32 / n as f32) - 0.5;
            let left = vec![x, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
            let right = vec![-x, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0];
            let pref = if x > 0.0 {
                Preference::Left
            } else {
                Preference::Right
            };
            Example::new(left, right, pref)
        })
        .collect()
}

#[test]
fn progress_counts_every_step_of_every_member() {
    let data = tiny_examples(32);
    let config = TrainingConfig::new()
        .with_ensemble_size(2)
        .with_steps(5)
        .with_batch_size(8);
    let mut seen = Vec::new();
    let mut threads = Vec::new();
    let on_progress = |p: Progress| {
        seen.push(p);
        let name = std::thread::current().name().map(str::to_owned);
        threads.push((name, rayon::current_num_threads()));
    };
    let model = MlpRewardConfig::new(8).with_d_hidden(8);
    let (ensemble, report) =
        train_ensemble::<MlpReward>(&model, &config, &data, &[], on_progress, &NEVER).unwrap();
    // The loop ran in its own one-thread pool, not the test thread or the global pool.
    assert!(
        threads
            .iter()
            .all(|t| *t == (Some("reward-train-0".into()), 1)),
        "{threads:?}"
    );
    assert_eq!(
        seen.iter().map(|p| p.step).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|p| p.total == 10 && p.loss.is_finite()));
    assert_eq!(ensemble.size(), 2);
    assert_eq!(report.pairs_seen, 2 * 5 * 8);
    assert!(report.metrics.is_none(), "no held-out pairs, no metrics");
}

#[test]
fn cancelling_from_the_callback_stops_at_the_next_step() {
    let data = tiny_examples(32);
    let config = TrainingConfig::new().with_steps(1000).with_batch_size(8);
    let cancel = AtomicBool::new(false);
    let mut last = 0;
    let on_progress = |p: Progress| {
        last = p.step;
        if p.step == 5 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let model = MlpRewardConfig::new(8);
    let result = train_ensemble::<MlpReward>(&model, &config, &data, &[], on_progress, &cancel);
    assert!(matches!(result, Err(MlError::Cancelled)));
    assert_eq!(last, 5);
}

#[test]
fn cancelling_from_another_thread_is_prompt() {
    let cancel = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let flag = Arc::clone(&cancel);
    let worker = std::thread::spawn(move || {
        let data = tiny_examples(64);
        let config = TrainingConfig::new()
            .with_steps(10_000_000)
            .with_batch_size(16);
        let model = MlpRewardConfig::new(8);
        let on_progress = |p: Progress| {
            if p.step == 1 {
                started_tx.send(()).unwrap();
            }
        };
        let result = train_ensemble::<MlpReward>(&model, &config, &data, &[], on_progress, &flag);
        (result.map(|_| ()), Instant::now())
    });
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("training started");
    std::thread::sleep(Duration::from_millis(50));
    let raised = Instant::now();
    cancel.store(true, Ordering::Relaxed);
    let (result, stopped) = worker.join().unwrap();
    assert!(matches!(result, Err(MlError::Cancelled)));
    let latency = stopped.duration_since(raised);
    eprintln!("control: cancellation latency {latency:.2?}");
    assert!(latency < Duration::from_millis(500), "took {latency:?}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = MlpRewardConfig::new(8);
    let config = TrainingConfig::new();
    let empty: Vec<Example<Vec<f32>>> = Vec::new();
    let r = train_ensemble::<MlpReward>(&model, &config, &empty, &[], |_| {}, &NEVER);
    assert!(matches!(r, Err(MlError::NoExamples)));
    let short = vec![Example::new(vec![0.0; 3], vec![0.0; 8], Preference::Tie)];
    let r = train_ensemble::<MlpReward>(&model, &config, &short, &[], |_| {}, &NEVER);
    assert!(matches!(r, Err(MlError::InputShape { .. })));
    let data = tiny_examples(4);
    let r =
        train_ensemble::<MlpReward>(&model, &config.with_threads(0), &data, &[], |_| {}, &NEVER);
    assert!(matches!(r, Err(MlError::InvalidConfig(_))));
}

#[test]
fn early_stopping_stops_a_flat_run_and_keeps_its_best_weights() {
    let data = tiny_examples(64);
    let model = MlpRewardConfig::new(8).with_d_hidden(8);
    let config = TrainingConfig::new()
        .with_ensemble_size(2)
        .with_steps(3000)
        .with_batch_size(8)
        .with_learning_rate(1e-2)
        .with_eval_every(10)
        .with_patience(3)
        .with_min_steps(20);
    let mut last = 0;
    let (_, report) =
        train_ensemble::<MlpReward>(&model, &config, &data, &data, |p| last = p.step, &NEVER)
            .unwrap();
    eprintln!(
        "control: early stopping ran {:?} steps, kept {:?}",
        report.member_steps, report.kept_steps
    );
    // A separable task is learned long before 3000 steps; each member stopped three
    // evaluations after its best one and kept that one's weights.
    for (&ran, &kept) in report.member_steps.iter().zip(&report.kept_steps) {
        assert!(ran < 3000, "ran {ran}");
        assert_eq!(
            ran - kept,
            30,
            "stops `patience` evaluations after the best"
        );
        assert_eq!(kept % 10, 0);
    }
    assert_eq!(
        last,
        2 * 3000,
        "progress reaches its total when members stop early"
    );
    assert_eq!(
        report.pairs_seen,
        report.member_steps.iter().sum::<usize>() * 8
    );
    let accuracy = report.metrics.unwrap().accuracy.unwrap();
    assert!(
        accuracy > 0.95,
        "kept weights still solve the task: {accuracy}"
    );

    // Off: every step runs.
    let (_, report) = train_ensemble::<MlpReward>(
        &model,
        &config.clone().with_steps(200).with_eval_every(0),
        &data,
        &[],
        |_| {},
        &NEVER,
    )
    .unwrap();
    assert_eq!(
        (report.member_steps, report.kept_steps),
        (vec![200; 2], vec![200; 2])
    );

    for bad in [
        config.clone().with_patience(0),
        config.clone().with_nice(20),
        config.clone().with_l2(-1.0),
    ] {
        let r = train_ensemble::<MlpReward>(&model, &bad, &data, &[], |_| {}, &NEVER);
        assert!(matches!(r, Err(MlError::InvalidConfig(_))), "{bad:?}");
    }
}
