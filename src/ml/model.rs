//! The reward networks: an MLP over feature vectors and a per-frame CNN over clips.
//!
//! Both map one rollout to one scalar reward. Training and inference only see the
//! [`RewardModel`] trait, so a new kind of rollout is a new implementation of it.

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::data::{CLIP_SIDE, Clip};
use super::{MlError, Result};

/// Flex draws every initialisation from one process-wide generator, and initialisation is a
/// model's only draw (no dropout). A seeded initialisation holds this lock from its seeding
/// until every weight is drawn, so it gets the weights its seed names however many run at once
/// in the process (the test harness runs several; `serve` can run several workers).
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `M::init` under `INIT`, seeding the generator with `seed` first when given. Burn draws a
/// parameter's values lazily, on its first use; a seeded model's are drawn here, under the
/// lock (an unseeded one is about to be overwritten by loaded weights, so it draws nothing).
pub fn init_model<M: RewardModel>(config: &M::Config, device: &Device, seed: Option<u64>) -> M {
    /// Touches every float parameter, which draws its lazy initial values.
    struct DrawNow;
    impl ModuleVisitor for DrawNow {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    let _only_us = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(seed) = seed {
        device.seed(seed);
    }
    let model = M::init(config, device);
    if seed.is_some() {
        model.visit(&mut DrawNow);
    }
    model
}

/// A network that scores rollouts; what training and inference are generic over.
pub trait RewardModel: Module + Sync + 'static {
    /// One rollout as the model reads it.
    type Input: Sync;
    /// The hyper-parameters, saved as JSON next to the weights.
    type Config: Config + Clone + Send + Sync;
    /// Names the architecture in a saved manifest, so weights never load into the wrong kind.
    const KIND: &'static str;
    /// Inputs per forward pass when scoring, bounding activation memory.
    const SCORE_BATCH: usize;

    /// Builds a freshly initialised model (initialisation draws from the device's seeded RNG).
    fn init(config: &Self::Config, device: &Device) -> Self;

    /// Checks that `input` fits a model built from `config`, before it reaches a tensor op
    /// (which would panic instead of returning an error).
    fn check_input(config: &Self::Config, input: &Self::Input) -> Result<()>;

    /// Rewards of `inputs`, shape `[inputs.len()]`, computed on `device` (autodiff in training).
    fn rewards(&self, inputs: &[&Self::Input], device: &Device) -> Tensor<1>;
}

/// Configuration of [`MlpReward`]: features → hidden (ReLU) → scalar.
#[derive(Config, Debug)]
pub struct MlpRewardConfig {
    /// Length of the feature vectors ([`TEXT_FEATURE_DIM`](super::TEXT_FEATURE_DIM) for text).
    pub d_input: usize,
    /// Width of the hidden layer. 64 matched 128 in accuracy on the synthetic text task at
    /// half the training time: with hundreds of labels, capacity is not the limit.
    #[config(default = 64)]
    pub d_hidden: usize,
}

/// A one-hidden-layer MLP reward model over feature vectors.
#[derive(Module, Debug)]
pub struct MlpReward {
    hidden: Linear,
    output: Linear,
}

impl MlpRewardConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> MlpReward {
        MlpReward {
            hidden: LinearConfig::new(self.d_input, self.d_hidden).init(device),
            output: LinearConfig::new(self.d_hidden, 1).init(device),
        }
    }
}

impl MlpReward {
    /// `[batch, d_input]` → `[batch]` rewards.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<1> {
        let h = relu(self.hidden.forward(x)); // [batch, d_hidden]
        self.output.forward(h).squeeze_dim::<1>(1) // [batch, 1] → [batch]
    }
}

impl RewardModel for MlpReward {
    type Input = Vec<f32>;
    type Config = MlpRewardConfig;
    const KIND: &'static str = "mlp";
    const SCORE_BATCH: usize = 1024;

    fn init(config: &MlpRewardConfig, device: &Device) -> Self {
        config.init(device)
    }

    fn check_input(config: &MlpRewardConfig, input: &Vec<f32>) -> Result<()> {
        if input.len() != config.d_input {
            return Err(MlError::InputShape {
                expected: format!("{} features", config.d_input),
                got: format!("{} features", input.len()),
            });
        }
        Ok(())
    }

    fn rewards(&self, inputs: &[&Vec<f32>], device: &Device) -> Tensor<1> {
        let d = inputs.first().map_or(0, |v| v.len());
        // Slice copies (memcpy) rather than an element iterator: this runs every step, and in
        // a debug build of the app an element-wise loop here cost more than the matmul.
        let mut flat = Vec::with_capacity(inputs.len() * d);
        inputs.iter().for_each(|v| flat.extend_from_slice(v));
        let x = Tensor::<2>::from_data(TensorData::new(flat, [inputs.len(), d]), device);
        self.forward(x)
    }
}

/// Configuration of [`ClipReward`], the per-frame CNN of Christiano et al. (2017).
///
/// Each step's input stacks the current frame with the `frame_stack - 1` frames before it as
/// channels (the paper stacks 4 Atari frames): a single frame cannot show which way something
/// moves. The first frames repeat frame 0 where they have no predecessor.
#[derive(Config, Debug)]
pub struct ClipRewardConfig {
    /// Frames seen per step, current one included (at least 1).
    #[config(default = 2)]
    pub frame_stack: usize,
    /// Output channels of the three stride-2 convolutions.
    #[config(default = "[8, 16, 16]")]
    pub channels: [usize; 3],
    /// CoordConv: append two channels holding each pixel's x and y in [−1, 1], so filters
    /// know where they are. Off in configs saved before this field existed.
    /// (An `Option` so manifests without the field load: absent means off.)
    pub coord: Option<bool>,
    /// Potential form: the network computes Φ(step) and the per-step reward is
    /// Φ(step t) − Φ(step t−1) (0 for the first step), so a clip's reward telescopes to
    /// Φ(last) − Φ(first). Off (plain per-step reward) in configs saved before this field.
    /// (An `Option` so manifests without the field load: absent means off.)
    pub potential: Option<bool>,
    /// Keypoint head, with this many hidden units: the last convolution keeps a 16×16 map
    /// (stride 1); a softmax over each channel's positions gives the expected x and y of its
    /// feature (spatial-softmax keypoints, Levine et al. 2016, "End-to-end training of deep
    /// visuomotor policies"); an MLP with one hidden ReLU layer maps the keypoints and the
    /// distances between every two of them to the output. The plain head is linear in local
    /// features, so its output is a sum over places in the image and cannot say how far one
    /// thing is from another; this one can. Absent (the plain head) in configs saved before
    /// this field.
    pub keypoints: Option<usize>,
}

/// Per-frame CNN reward summed over a clip: r(clip) = Σₜ r(frames t−k+1..=t).
#[derive(Module, Debug)]
pub struct ClipReward {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    /// Plain head: flattened map → 1. Keypoints: 2·c3 coordinates and c3² distances →
    /// hidden units.
    head: Linear,
    /// Keypoints only: hidden units → 1.
    out: Option<Linear>,
    frame_stack: usize,
    coord: bool,
    potential: bool,
}

impl ClipRewardConfig {
    /// Whether the CoordConv channels are on.
    pub fn coord(&self) -> bool {
        self.coord.unwrap_or(false)
    }

    /// Whether the network is a potential (clip reward = Φ(last) − Φ(first)).
    pub fn potential(&self) -> bool {
        self.potential.unwrap_or(false)
    }

    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> ClipReward {
        let [c1, c2, c3] = self.channels;
        // Each stride-2 layer halves the side: 64 → 32 → 16 → 8.
        let conv = |c_in, c_out, k, pad| {
            Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device)
        };
        let side = CLIP_SIDE / 8;
        let (conv3, head, out) = match self.keypoints {
            None => (
                conv(c2, c3, 3, 1),
                LinearConfig::new(c3 * side * side, 1).init(device),
                None,
            ),
            Some(hidden) => (
                Conv2dConfig::new([c2, c3], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
                LinearConfig::new(2 * c3 + c3 * c3, hidden).init(device),
                Some(LinearConfig::new(hidden, 1).init(device)),
            ),
        };
        ClipReward {
            conv1: conv(
                self.frame_stack + if self.coord() { 2 } else { 0 },
                c1,
                5,
                2,
            ),
            conv2: conv(c1, c2, 3, 1),
            conv3,
            head,
            out,
            frame_stack: self.frame_stack,
            coord: self.coord(),
            potential: self.potential(),
        }
    }
}

impl ClipReward {
    /// Per-step rewards: `[steps, frame_stack, 64, 64]` in [0, 1] → `[steps]`.
    pub fn forward(&self, frames: Tensor<4>) -> Tensor<1> {
        let x = relu(self.conv1.forward(frames)); // [steps, c1, 32, 32]
        let x = relu(self.conv2.forward(x)); // [steps, c2, 16, 16]
        let x = relu(self.conv3.forward(x)); // [steps, c3, 8, 8], keypoints [steps, c3, 16, 16]
        let Some(out) = &self.out else {
            let x = x.flatten::<2>(1, 3); // [steps, c3 * 64]
            return self.head.forward(x).squeeze_dim::<1>(1); // [steps]
        };
        let [steps, c3, h, w] = x.dims();
        let attention = softmax(x.reshape([steps * c3, h * w]), 1);
        let grid = Tensor::<2>::from_data(
            TensorData::new(position_grid(h, w).collect::<Vec<f32>>(), [h * w, 2]),
            &attention.device(),
        );
        let points = attention.matmul(grid).reshape([steps, c3, 2]); // x, y of each channel
        // Distance between keypoints i and j at [i * c3 + j]; the 1e-6 keeps the gradient of
        // sqrt finite on the diagonal.
        let apart = points.clone().unsqueeze_dim::<4>(2) - points.clone().unsqueeze_dim::<4>(1);
        let distances = apart
            .powi_scalar(2)
            .sum_dim(3)
            .add_scalar(KEYPOINT_EPSILON)
            .sqrt()
            .reshape([steps, c3 * c3]);
        let features = Tensor::cat(vec![points.reshape([steps, c3 * 2]), distances], 1);
        let hidden = relu(self.head.forward(features));
        out.forward(hidden).squeeze_dim::<1>(1) // [steps]
    }
}

impl RewardModel for ClipReward {
    type Input = Clip;
    type Config = ClipRewardConfig;
    const KIND: &'static str = "clip-cnn";
    // ~16 clips of 25 frames ≈ 400 steps, ~30 MB of activations.
    const SCORE_BATCH: usize = 16;

    fn init(config: &ClipRewardConfig, device: &Device) -> Self {
        config.init(device)
    }

    fn check_input(_: &ClipRewardConfig, _: &Clip) -> Result<()> {
        Ok(()) // `Clip::new` already enforces ≥ 1 frame of 64×64.
    }

    fn rewards(&self, clips: &[&Clip], device: &Device) -> Tensor<1> {
        let k = self.frame_stack;
        let n = CLIP_SIDE * CLIP_SIDE;
        let c = k + if self.coord { 2 } else { 0 };
        // The steps each clip feeds the network: all of them, or in the potential form only
        // the first and the last (the sum of Φ(t) − Φ(t−1) telescopes to Φ(last) − Φ(first)).
        let chosen: Vec<Vec<(usize, f32)>> = clips
            .iter()
            .map(|clip| {
                let last = clip.frames() - 1;
                if !self.potential {
                    (0..clip.frames()).map(|t| (t, 1.0)).collect()
                } else if last == 0 {
                    vec![(0, 0.0)]
                } else {
                    vec![(0, -1.0), (last, 1.0)]
                }
            })
            .collect();
        let steps: usize = chosen.iter().map(Vec::len).sum();
        let mut input = Vec::with_capacity(steps * c * n);
        // segments[i][s] = weight of step s in clip i's sum, so one matmul sums each clip's
        // steps even when clips have different lengths.
        let mut segments = vec![0f32; clips.len() * steps];
        let mut s = 0;
        for (i, (clip, chosen)) in clips.iter().zip(&chosen).enumerate() {
            for &(t, weight) in chosen {
                for back in (0..k).rev() {
                    let frame = clip.frame(t.saturating_sub(back));
                    input.extend(frame.iter().map(|&p| f32::from(p) / 255.0));
                }
                if self.coord {
                    input.extend(coord_channels());
                }
                segments[i * steps + s] = weight;
                s += 1;
            }
        }
        let frames = Tensor::<4>::from_data(
            TensorData::new(input, [steps, c, CLIP_SIDE, CLIP_SIDE]),
            device,
        );
        let per_step = self.forward(frames).reshape([steps, 1]); // [steps, 1]
        let segments =
            Tensor::<2>::from_data(TensorData::new(segments, [clips.len(), steps]), device);
        segments.matmul(per_step).squeeze_dim::<1>(1) // [clips]
    }
}

/// Added under the square root of the keypoint distances.
const KEYPOINT_EPSILON: f32 = 1e-6;

/// The centre of cell `i` of `n` along an axis, from −1 (left, top edge) to 1.
fn centre(i: usize, n: usize) -> f32 {
    (2 * i + 1) as f32 / n as f32 - 1.0
}

/// Each position of an `h`×`w` map (row-major) as its centre's (x, y).
fn position_grid(h: usize, w: usize) -> impl Iterator<Item = f32> {
    (0..h * w).flat_map(move |p| [centre(p % w, w), centre(p / w, h)])
}

/// The two CoordConv channels: x then y of each pixel centre.
fn coord_channels() -> impl Iterator<Item = f32> {
    let n = CLIP_SIDE * CLIP_SIDE;
    let xs = (0..n).map(|p| centre(p % CLIP_SIDE, CLIP_SIDE));
    let ys = (0..n).map(|p| centre(p / CLIP_SIDE, CLIP_SIDE));
    xs.chain(ys)
}
