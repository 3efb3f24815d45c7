//! Training an ensemble of reward models on preference pairs.
//!
//! Loss: the Bradley–Terry model with a chance that the rater answered at random (Christiano et
//! al. 2017): `P(a ≻ b) = (1 − ε)·σ(r_a − r_b) + ε/2` with `ε = 0.1` by default, and the loss is
//! the weighted cross-entropy between that probability and the target (1, 0 or ½ for a tie).
//! The ε term bounds the loss of a pair the model is sure about, so one careless label cannot
//! dominate a batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::config::Config;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::data::{Example, bootstrap_indices};
use super::inference::Ensemble;
use super::metrics::Metrics;
use super::model::RewardModel;
use super::{MlError, Result};

/// Hyper-parameters of one training run (all members of the ensemble).
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// Ensemble members, each trained on its own bootstrap resample (1 = no resampling).
    #[config(default = 3)]
    pub ensemble_size: usize,
    /// Optimiser steps per member.
    #[config(default = 300)]
    pub steps: usize,
    /// Pairs per step (use 2–8 for clips: larger batches are no faster per clip).
    #[config(default = 64)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// ε, the probability that a rater answered at random.
    #[config(default = 0.1)]
    pub random_answer_rate: f32,
    /// Seed of member initialisation, resampling and batch order.
    #[config(default = 0)]
    pub seed: u64,
    /// Threads of the dedicated pool training runs in (1 keeps a busy server responsive).
    #[config(default = 1)]
    pub threads: usize,
}

/// Reported after every optimiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Steps done so far, over all members (1-based).
    pub step: usize,
    /// Steps of the whole run: `ensemble_size × steps`.
    pub total: usize,
    /// Loss of the batch of this step.
    pub loss: f32,
}

/// What a finished training run measured.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Metrics on the held-out pairs, `None` when there were none.
    pub metrics: Option<Metrics>,
    /// Last batch loss of each member.
    pub final_losses: Vec<f32>,
    /// Pairs processed: members × steps × batch size.
    pub pairs_seen: usize,
    /// Wall time of the optimisation (metrics excluded).
    pub elapsed: Duration,
}

/// Trains `config.ensemble_size` members of `M` on `train`, then measures them on `held_out`.
///
/// Runs inside a rayon pool of `config.threads` threads built for this call, so the tensor
/// kernels never borrow the global pool that request handling uses; call it from a dedicated
/// thread, not an async task. `progress` is called on the pool thread after every step; raising
/// `cancel` stops the run before the next step with [`MlError::Cancelled`].
pub fn train_ensemble<M: RewardModel>(
    model_config: &M::Config,
    config: &TrainingConfig,
    train: &[Example<M::Input>],
    held_out: &[Example<M::Input>],
    mut progress: impl FnMut(Progress) + Send,
    cancel: &AtomicBool,
) -> Result<(Ensemble<M>, TrainReport)> {
    validate::<M>(model_config, config, train, held_out)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .thread_name(|i| format!("reward-train-{i}"))
        .build()
        .map_err(|e| MlError::InvalidConfig(format!("thread pool: {e}")))?;
    pool.install(|| {
        let started = Instant::now();
        let device = super::device().autodiff();
        let mut members = Vec::with_capacity(config.ensemble_size);
        let mut final_losses = Vec::with_capacity(config.ensemble_size);
        for m in 0..config.ensemble_size {
            let (member, loss) = train_member::<M>(
                model_config,
                config,
                m,
                train,
                &device,
                &mut progress,
                cancel,
            )?;
            members.push(member);
            final_losses.push(loss);
        }
        let elapsed = started.elapsed();
        let ensemble =
            Ensemble::from_members(model_config.clone(), config.random_answer_rate, members);
        let pairs: Vec<_> = held_out.iter().map(|e| (&e.left, &e.right)).collect();
        let metrics = Metrics::compute(&ensemble.preferences(&pairs)?, held_out);
        let pairs_seen = config.ensemble_size * config.steps * config.batch_size;
        let report = TrainReport {
            metrics,
            final_losses,
            pairs_seen,
            elapsed,
        };
        Ok((ensemble, report))
    })
}

fn validate<M: RewardModel>(
    model_config: &M::Config,
    config: &TrainingConfig,
    train: &[Example<M::Input>],
    held_out: &[Example<M::Input>],
) -> Result<()> {
    if train.is_empty() {
        return Err(MlError::NoExamples);
    }
    let bad = |what: &str| Err(MlError::InvalidConfig(what.into()));
    if config.ensemble_size == 0 || config.batch_size == 0 || config.threads == 0 {
        return bad("ensemble_size, batch_size and threads must be at least 1");
    }
    if !(0.0..1.0).contains(&config.random_answer_rate) {
        return bad("random_answer_rate must be in [0, 1)");
    }
    for ex in train.iter().chain(held_out) {
        M::check_input(model_config, &ex.left)?;
        M::check_input(model_config, &ex.right)?;
        if !(0.0..=1.0).contains(&ex.target) || !(0.0..=f32::MAX).contains(&ex.weight) {
            return bad("targets must be in [0, 1] and weights finite and non-negative");
        }
    }
    Ok(())
}

/// Trains member `m`; returns it on the plain device with its last batch loss.
fn train_member<M: RewardModel>(
    model_config: &M::Config,
    config: &TrainingConfig,
    m: usize,
    train: &[Example<M::Input>],
    device: &Device,
    progress: &mut impl FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<(M, f32)> {
    // Distinct, well-spread seeds per member (the golden-ratio increment of SplitMix64).
    let seed = config
        .seed
        .wrapping_add((m as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Flex seeds one process-wide generator: concurrent trainings make initialisation
    // non-reproducible, never incorrect.
    device.seed(seed);
    let mut model = M::init(model_config, device);
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = if config.ensemble_size > 1 {
        bootstrap_indices(train.len(), &mut rng)
    } else {
        (0..train.len()).collect()
    };
    let total = config.ensemble_size * config.steps;
    let (mut cursor, mut last_loss) = (order.len(), f32::NAN);
    for step in 0..config.steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(MlError::Cancelled);
        }
        // Shuffled passes over the resample: each pair is seen once per pass.
        let batch: Vec<&Example<M::Input>> = (0..config.batch_size)
            .map(|_| {
                if cursor == order.len() {
                    order.shuffle(&mut rng);
                    cursor = 0;
                }
                cursor += 1;
                &train[order[cursor - 1]]
            })
            .collect();
        let loss = batch_loss(&model, &batch, config.random_answer_rate, device);
        last_loss = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(config.learning_rate, model, grads);
        progress(Progress {
            step: m * config.steps + step + 1,
            total,
            loss: last_loss,
        });
    }
    Ok((model.valid(), last_loss))
}

/// Weighted Bradley–Terry cross-entropy of one batch, shape `[1]`.
fn batch_loss<M: RewardModel>(
    model: &M,
    batch: &[&Example<M::Input>],
    eps: f32,
    device: &Device,
) -> Tensor<1> {
    let b = batch.len();
    // Both sides in one forward pass: [left_0..left_b, right_0..right_b].
    let inputs: Vec<&M::Input> = batch
        .iter()
        .map(|e| &e.left)
        .chain(batch.iter().map(|e| &e.right))
        .collect();
    let rewards = model.rewards(&inputs, device); // [2b]
    let diff = rewards.clone().narrow(0, 0, b) - rewards.narrow(0, b, b); // [b]
    // Each side's probability from its own sigmoid, so 1 − p never cancels catastrophically.
    let p_left = sigmoid(diff.clone())
        .mul_scalar(1.0 - eps)
        .add_scalar(eps / 2.0);
    let p_right = sigmoid(diff.neg())
        .mul_scalar(1.0 - eps)
        .add_scalar(eps / 2.0);
    let column = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [b]), device);
    let target = column(batch.iter().map(|e| e.target).collect());
    let weight: Vec<f32> = batch.iter().map(|e| e.weight).collect();
    let weight_sum = weight.iter().sum::<f32>().max(f32::EPSILON);
    let ce = (target.clone() * p_left.log() + target.neg().add_scalar(1.0) * p_right.log()).neg(); // [b]
    (ce * column(weight)).sum().div_scalar(weight_sum)
}
