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
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::data::{Example, bootstrap_indices};
use super::inference::Ensemble;
use super::metrics::Metrics;
use super::model::{RewardModel, init_model};
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
    /// L2 regularisation as decoupled weight decay (AdamW): each step shrinks every weight by
    /// `learning_rate · l2 · w`, on top of the Adam update. 0 turns it off.
    ///
    /// Decoupled on purpose: with the L2 term added to the gradient (plain Adam), Adam's
    /// per-weight normalisation shrinks a weight that no example touches — a hashed bucket no
    /// training text hits — by about the full learning rate every step, so after a few dozen
    /// steps every member scores novel text alike and ensemble disagreement can no longer
    /// flag it (measured by `tests::disagreement`).
    #[config(default = 0.01)]
    pub l2: f64,
    /// Early stopping: every `eval_every` steps each member measures its loss on pairs it does
    /// not train on (its bootstrap resample's out-of-bag pairs; with one member, a fifth of the
    /// training pairs set aside), keeps the weights of the best evaluation, and stops once
    /// `patience` evaluations in a row brought no improvement. 0 turns early stopping off and
    /// every member runs all `steps` — the default: on the simulated tasks early stopping left
    /// accuracy unchanged while halving how much the members disagree, the signal active
    /// selection of pairs relies on (`docs/reward-model-notes.md`). A run that wants it (e.g.
    /// to save time on few labels) sets 25.
    #[config(default = 0)]
    pub eval_every: usize,
    /// Evaluations without improvement before a member stops.
    #[config(default = 4)]
    pub patience: usize,
    /// No member stops before this many steps, however flat its curve (a clip model's loss
    /// can sit on a plateau before it drops).
    #[config(default = 100)]
    pub min_steps: usize,
    /// Niceness of the training threads (Linux; 0–19): above 0, request handling gets the
    /// CPU first when both want it. Ignored where it cannot be set.
    #[config(default = 10)]
    pub nice: i32,
    /// Most out-of-bag pairs an evaluation reads, chosen once per member: bounds its cost
    /// (a clip pair costs two CNN passes over every frame).
    #[config(default = 256)]
    pub eval_pairs: usize,
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
    /// Steps each member ran (fewer than `steps` when it stopped early).
    pub member_steps: Vec<usize>,
    /// Step whose weights each member kept (its best evaluation; its last step without
    /// early stopping).
    pub kept_steps: Vec<usize>,
    /// Pairs processed: Σ steps run × batch size.
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
        .start_handler({
            let nice = config.nice;
            move |_| lower_priority(nice)
        })
        .build()
        .map_err(|e| MlError::InvalidConfig(format!("thread pool: {e}")))?;
    pool.install(|| {
        let started = Instant::now();
        let device = super::device().autodiff();
        let mut members = Vec::with_capacity(config.ensemble_size);
        let mut final_losses = Vec::with_capacity(config.ensemble_size);
        let (mut member_steps, mut kept_steps) = (Vec::new(), Vec::new());
        for m in 0..config.ensemble_size {
            let trained = train_member::<M>(
                model_config,
                config,
                m,
                train,
                &device,
                &mut progress,
                cancel,
            )?;
            members.push(trained.model);
            final_losses.push(trained.last_loss);
            member_steps.push(trained.steps);
            kept_steps.push(trained.kept_step);
        }
        let elapsed = started.elapsed();
        let ensemble =
            Ensemble::from_members(model_config.clone(), config.random_answer_rate, members);
        let pairs: Vec<_> = held_out.iter().map(|e| (&e.left, &e.right)).collect();
        let metrics = Metrics::compute(&ensemble.preferences(&pairs)?, held_out);
        let pairs_seen = member_steps.iter().sum::<usize>() * config.batch_size;
        let report = TrainReport {
            metrics,
            final_losses,
            member_steps,
            kept_steps,
            pairs_seen,
            elapsed,
        };
        Ok((ensemble, report))
    })
}

/// Sets the calling thread's niceness (on Linux `setpriority` on a thread id applies to that
/// thread only). A failure only costs responsiveness, so it is logged, not returned.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0
        && let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
    {
        tracing::debug!("training thread keeps its priority: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
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
    if !(0.0..1.0).contains(&config.l2) {
        return bad("l2 must be in [0, 1)");
    }
    if !(0..=19).contains(&config.nice) {
        return bad("nice must be in 0..=19");
    }
    if config.eval_every > 0 && (config.patience == 0 || config.eval_pairs == 0) {
        return bad("with early stopping on, patience and eval_pairs must be at least 1");
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

/// One trained member and what its run did.
struct Member<M> {
    /// The kept weights, on the plain device.
    model: M,
    last_loss: f32,
    /// Steps run.
    steps: usize,
    /// Step whose weights were kept.
    kept_step: usize,
}

/// Trains member `m`, with early stopping on pairs it does not train on when configured.
fn train_member<M: RewardModel>(
    model_config: &M::Config,
    config: &TrainingConfig,
    m: usize,
    train: &[Example<M::Input>],
    device: &Device,
    progress: &mut impl FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Member<M>> {
    // Distinct, well-spread seeds per member (the golden-ratio increment of SplitMix64).
    let seed = config
        .seed
        .wrapping_add((m as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut model = init_model::<M>(model_config, device, Some(seed));
    let mut optim = AdamWConfig::new()
        .with_weight_decay(config.l2 as f32)
        .init();
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut order, stopping) = resample(train.len(), config, &mut rng);
    let mut stopper = (config.eval_every > 0 && !stopping.is_empty()).then(|| Stopper::<M> {
        pairs: stopping
            .iter()
            .take(config.eval_pairs)
            .map(|&i| &train[i])
            .collect(),
        best: None,
        since_best: 0,
    });
    let total = config.ensemble_size * config.steps;
    let (mut cursor, mut last_loss) = (order.len(), f32::NAN);
    let mut steps = 0;
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
        steps = step + 1;
        progress(Progress {
            step: m * config.steps + steps,
            total,
            loss: last_loss,
        });
        if let Some(stopper) = stopper.as_mut()
            && (steps % config.eval_every == 0 || steps == config.steps)
            && stopper.evaluate(&model, steps, config)
            && steps >= config.min_steps
        {
            break;
        }
    }
    // Later steps the member ran count as done, so progress reaches its total.
    if steps < config.steps {
        progress(Progress {
            step: (m + 1) * config.steps,
            total,
            loss: last_loss,
        });
    }
    let (model, kept_step) = match stopper.and_then(|s| s.best) {
        Some((_, kept, step)) => (kept, step),
        None => (model.valid(), steps),
    };
    Ok(Member {
        model,
        last_loss,
        steps,
        kept_step,
    })
}

/// The pairs a member trains on (drawn with replacement) and the ones it stops on.
///
/// Several members: a bootstrap resample, stopping on its out-of-bag pairs (about 1/e of
/// them). One member: every pair once, less a fifth set aside for stopping when early
/// stopping is on and there are at least 10 pairs.
fn resample(n: usize, config: &TrainingConfig, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    if config.ensemble_size > 1 {
        let order = bootstrap_indices(n, rng);
        let mut drawn = vec![false; n];
        order.iter().for_each(|&i| drawn[i] = true);
        let mut out_of_bag: Vec<usize> = (0..n).filter(|&i| !drawn[i]).collect();
        out_of_bag.shuffle(rng);
        (order, out_of_bag)
    } else if config.eval_every > 0 && n >= 10 {
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(rng);
        let stopping = all.split_off(n - n / 5);
        (all, stopping)
    } else {
        ((0..n).collect(), Vec::new())
    }
}

/// Early-stopping state of one member.
struct Stopper<'a, M: RewardModel> {
    pairs: Vec<&'a Example<M::Input>>,
    /// Best loss so far, the weights that gave it (plain device) and their step.
    best: Option<(f32, M, usize)>,
    since_best: usize,
}

impl<M: RewardModel> Stopper<'_, M> {
    /// Measures `model`; true when it is time to stop.
    fn evaluate(&mut self, model: &M, step: usize, config: &TrainingConfig) -> bool {
        let plain = model.valid();
        let device = super::device();
        let chunk = (M::SCORE_BATCH / 2).max(1);
        let mut total = 0.0;
        for part in self.pairs.chunks(chunk) {
            let w: f32 = part.iter().map(|e| e.weight).sum();
            let loss = batch_loss(&plain, part, config.random_answer_rate, &device);
            total += loss.into_scalar::<f32>() * w.max(f32::EPSILON);
        }
        match &self.best {
            Some((best, ..)) if total >= *best => {
                self.since_best += 1;
                self.since_best >= config.patience
            }
            _ => {
                self.best = Some((total, plain, step));
                self.since_best = 0;
                false
            }
        }
    }
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
