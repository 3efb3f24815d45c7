//! The SafeTensors export of a clip model, evaluated with plain loops by the recipe in
//! `docs/reward-model-export.md`, gives the rewards the service computes. (The text MLP is
//! checked end to end against the scoring API in `tests/spine/reward.rs`.)

use rand::{Rng, SeedableRng, rngs::StdRng};
use safetensors::SafeTensors;

use crate::ml::data::CLIP_SIDE;
use crate::ml::{Clip, ClipReward, ClipRewardConfig, Ensemble};

fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

/// Cross-correlation with zero padding, then ReLU: `[c_in, s, s]` → `[c_out, s/stride, s/stride]`.
fn conv_relu(
    x: &[f32],
    side: usize,
    (w, shape): &(Vec<f32>, Vec<usize>),
    bias: &[f32],
    pad: usize,
    stride: usize,
) -> Vec<f32> {
    let (c_out, c_in, k) = (shape[0], shape[1], shape[2]);
    let out_side = (side + 2 * pad - k) / stride + 1;
    let mut y = vec![0f32; c_out * out_side * out_side];
    for o in 0..c_out {
        for oy in 0..out_side {
            for ox in 0..out_side {
                let mut acc = bias[o];
                for c in 0..c_in {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * stride + ky) as isize - pad as isize,
                                (ox * stride + kx) as isize - pad as isize,
                            );
                            if iy < 0 || ix < 0 || iy >= side as isize || ix >= side as isize {
                                continue;
                            }
                            let v = x[(c * side + iy as usize) * side + ix as usize];
                            acc += v * w[((o * c_in + c) * k + ky) * k + kx];
                        }
                    }
                }
                y[(o * out_side + oy) * out_side + ox] = acc.max(0.0);
            }
        }
    }
    y
}

#[test]
fn exported_clip_model_reproduces_its_rewards_by_the_documented_recipe() {
    // The service's form (CoordConv, potential) and the plain per-step sum of older versions.
    check_clip_recipe(
        ClipRewardConfig::new()
            .with_channels([3, 4, 2])
            .with_coord(Some(true))
            .with_potential(Some(true)),
    );
    check_clip_recipe(ClipRewardConfig::new().with_channels([3, 4, 2]));
    check_clip_recipe(
        ClipRewardConfig::new()
            .with_channels([3, 4, 2])
            .with_coord(Some(true))
            .with_potential(Some(true))
            .with_keypoints(Some(5)),
    );
}

/// `y = x · W + b` with Burn's `[d_in, d_out]` weight layout.
fn linear(x: &[f32], (w, shape): &(Vec<f32>, Vec<usize>), bias: &[f32]) -> Vec<f32> {
    let (d_in, d_out) = (shape[0], shape[1]);
    assert_eq!(x.len(), d_in);
    (0..d_out)
        .map(|j| bias[j] + (0..d_in).map(|i| x[i] * w[i * d_out + j]).sum::<f32>())
        .collect()
}

fn check_clip_recipe(config: ClipRewardConfig) {
    let device = crate::ml::device();
    let members: Vec<ClipReward> = (0..2)
        .map(|i| crate::ml::model::init_model::<ClipReward>(&config, &device, Some(11 + i)))
        .collect();
    let ensemble = Ensemble::from_members(config.clone(), 0.1, members);
    let mut rng = StdRng::seed_from_u64(5);
    let n = CLIP_SIDE * CLIP_SIDE;
    let clip = Clip::new(3, (0..3 * n).map(|_| rng.random()).collect()).unwrap();
    let served = ensemble.member_rewards(&[&clip]).unwrap();

    let bytes = ensemble.to_safetensors(&[]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    let in_channels = config.frame_stack + if config.coord() { 2 } else { 0 };
    assert_eq!(tensor(&st, "0.conv1.weight").1, [3, in_channels, 5, 5]);
    match config.keypoints {
        None => {
            assert_eq!(names.len(), 16, "{names:?}");
            assert_eq!(tensor(&st, "1.head.weight").1, [2 * 8 * 8, 1]);
        }
        Some(hidden) => {
            assert_eq!(names.len(), 20, "{names:?}");
            // c3 = 2: two keypoints' x and y, then the 2×2 distances between them.
            assert_eq!(tensor(&st, "1.head.weight").1, [2 * 2 + 2 * 2, hidden]);
            assert_eq!(tensor(&st, "1.out.weight").1, [hidden, 1]);
        }
    }
    // x then y of each pixel centre, from −1 to 1.
    let pos = |i: usize| (2 * i + 1) as f32 / 64.0 - 1.0;
    for (i, served) in served.iter().enumerate() {
        let t = |name: &str| tensor(&st, &format!("{i}.{name}"));
        let net = |step: usize| {
            // Channels oldest first; before frame 0, frame 0 repeats.
            let mut x: Vec<f32> = (0..config.frame_stack)
                .rev()
                .flat_map(|back| {
                    clip.frame(step.saturating_sub(back))
                        .iter()
                        .map(|&p| f32::from(p) / 255.0)
                })
                .collect();
            if config.coord() {
                x.extend((0..n).map(|p| pos(p % 64)));
                x.extend((0..n).map(|p| pos(p / 64)));
            }
            let x = conv_relu(&x, 64, &t("conv1.weight"), &t("conv1.bias").0, 2, 2);
            let x = conv_relu(&x, 32, &t("conv2.weight"), &t("conv2.bias").0, 1, 2);
            if config.keypoints.is_none() {
                let x = conv_relu(&x, 16, &t("conv3.weight"), &t("conv3.bias").0, 1, 2);
                return linear(&x, &t("head.weight"), &t("head.bias").0)[0];
            }
            // Keypoints: conv3 keeps 16×16; per channel, a softmax over its 256 positions
            // weights the positions' centres into an expected (x, y).
            let x = conv_relu(&x, 16, &t("conv3.weight"), &t("conv3.bias").0, 1, 1);
            let cell = |i: usize| (2 * i + 1) as f32 / 16.0 - 1.0;
            let points: Vec<f32> = x
                .chunks_exact(16 * 16)
                .flat_map(|map| {
                    let top = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = map.iter().map(|v| (v - top).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    let mean = |f: &dyn Fn(usize) -> f32| {
                        e.iter().enumerate().map(|(p, w)| w * f(p)).sum::<f32>() / sum
                    };
                    [mean(&|p| cell(p % 16)), mean(&|p| cell(p / 16))]
                })
                .collect();
            // Then every keypoint's distance to every keypoint, row-major.
            let c3 = points.len() / 2;
            let mut features = points.clone();
            for i in 0..c3 {
                for j in 0..c3 {
                    let (dx, dy) = (
                        points[2 * i] - points[2 * j],
                        points[2 * i + 1] - points[2 * j + 1],
                    );
                    features.push((dx * dx + dy * dy + 1e-6).sqrt());
                }
            }
            let hidden: Vec<f32> = linear(&features, &t("head.weight"), &t("head.bias").0)
                .into_iter()
                .map(|h| h.max(0.0))
                .collect();
            linear(&hidden, &t("out.weight"), &t("out.bias").0)[0]
        };
        let total: f32 = if config.potential() {
            net(clip.frames() - 1) - net(0)
        } else {
            (0..clip.frames()).map(net).sum()
        };
        assert!(
            (total - served[0]).abs() <= 1e-4 * (1.0 + served[0].abs()),
            "member {i}: recomputed {total}, served {}",
            served[0]
        );
    }
}

#[test]
fn clip_configs_saved_before_coord_and_potential_keep_the_old_model() {
    let old: ClipRewardConfig =
        serde_json::from_str(r#"{"frame_stack": 2, "channels": [8, 16, 16]}"#).unwrap();
    assert!(!old.coord() && !old.potential());
}
