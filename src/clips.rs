//! Clips: safe GIF decoding into small grayscale frames, a demo clip generator, and
//! content-addressed clip storage.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use gif::DisposalMethod;
use object_store::{ObjectStore, local::LocalFileSystem, path::Path as ObjPath};
use sha2::{Digest, Sha256};

/// Side of the square grayscale frames kept for training.
pub const FRAME_SIDE: u32 = 64;

/// Limits applied to uploaded clips before and while decoding them.
#[derive(Debug, Clone)]
pub struct ClipLimits {
    pub max_bytes: usize,
    pub max_frames: usize,
    /// Limit on the logical screen's width × height (and on any single frame's).
    pub max_pixels: u64,
}

impl Default for ClipLimits {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            max_frames: 500,
            max_pixels: 512 * 512,
        }
    }
}

/// A decoded clip: its metadata plus every frame composited, grayscale, at FRAME_SIDE².
#[derive(Debug, Clone)]
pub struct DecodedClip {
    pub width: u32,
    pub height: u32,
    pub frame_count: u32,
    /// Sum of frame delays; tiny delays count as 100 ms, as browsers play them.
    pub duration_ms: u32,
    /// `frame_count * FRAME_SIDE * FRAME_SIDE` bytes, row-major, frame after frame.
    pub frames: Vec<u8>,
}

/// Why a clip was refused; the messages are meant to be shown to users.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("clip is {size} bytes; the limit is {limit}")]
    TooManyBytes { size: usize, limit: usize },
    #[error("clip is not a GIF (it does not start with GIF87a or GIF89a)")]
    NotGif,
    #[error("clip is a corrupt or truncated GIF: {0}")]
    Corrupt(String),
    #[error("clip is {width}x{height} pixels; the limit is {limit} pixels (width × height)")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("clip has more than {limit} frames")]
    TooManyFrames { limit: usize },
    #[error("clip contains no frames")]
    NoFrames,
}

fn corrupt(e: gif::DecodingError) -> ClipError {
    ClipError::Corrupt(e.to_string())
}

/// Decodes a GIF into composited grayscale FRAME_SIDE² frames, enforcing `limits` before
/// any expensive work. Never panics: every problem with the input is a [`ClipError`].
pub fn decode_gif(bytes: &[u8], limits: &ClipLimits) -> Result<DecodedClip, ClipError> {
    if bytes.len() > limits.max_bytes {
        return Err(ClipError::TooManyBytes {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return Err(ClipError::NotGif);
    }
    // Read the declared screen size ourselves: GIF bombs declare huge screens, and we want
    // to refuse them before the decoder allocates anything.
    let Some(&[w0, w1, h0, h1]) = bytes.get(6..10) else {
        return Err(ClipError::Corrupt("the header is truncated".into()));
    };
    let (width, height) = (u16::from_le_bytes([w0, w1]), u16::from_le_bytes([h0, h1]));
    let too_big = |w: u16, h: u16| u64::from(w) * u64::from(h) > limits.max_pixels;
    let too_many_pixels = |w: u16, h: u16| ClipError::TooManyPixels {
        width: w.into(),
        height: h.into(),
        limit: limits.max_pixels,
    };
    if too_big(width, height) {
        return Err(too_many_pixels(width, height));
    }
    if width == 0 || height == 0 {
        return Err(ClipError::Corrupt("the logical screen is empty".into()));
    }

    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    // Also bounds metadata (ICC/XMP) the decoder accumulates on its own.
    let mem = NonZeroU64::MIN.saturating_add(limits.max_pixels.saturating_mul(4));
    options.set_memory_limit(gif::MemoryLimit::Bytes(mem));
    // gif 0.14 needs one byte past a trailer that directly follows the global palette, or a
    // frameless GIF reads as truncated; an implied trailer also lets a clip that lost only its
    // trailer play, as browsers do. Complete GIFs stop at their own trailer and never read it.
    let input = std::io::Read::chain(bytes, &b";"[..]);
    let mut decoder = options.read_info(input).map_err(corrupt)?;

    let (w, h) = (usize::from(width), usize::from(height));
    let mut canvas = vec![0u8; w * h * 4];
    let mut pixels = Vec::new();
    let mut frames = Vec::new();
    let (mut frame_count, mut duration_ms) = (0u32, 0u32);
    // `next_frame_info` reads only the frame header, so counting and size checks happen
    // before that frame's pixels are decompressed.
    while let Some(f) = decoder.next_frame_info().map_err(corrupt)? {
        if frame_count as usize >= limits.max_frames {
            return Err(ClipError::TooManyFrames {
                limit: limits.max_frames,
            });
        }
        if too_big(f.width, f.height) {
            return Err(too_many_pixels(f.width, f.height));
        }
        let (left, top) = (usize::from(f.left), usize::from(f.top));
        let (fw, fh) = (usize::from(f.width), usize::from(f.height));
        let (dispose, delay) = (f.dispose, f.delay);
        pixels.clear();
        pixels.resize(fw * fh * 4, 0);
        // The decoder refuses an empty buffer; an empty frame simply draws nothing.
        if !pixels.is_empty() {
            decoder.read_into_buffer(&mut pixels).map_err(corrupt)?;
        }
        let saved = (dispose == DisposalMethod::Previous).then(|| canvas.clone());
        // Clip the frame rectangle to the canvas: offsets and sizes are attacker-chosen.
        let (x0, x1) = (left.min(w), left.saturating_add(fw).min(w));
        let (y0, y1) = (top.min(h), top.saturating_add(fh).min(h));
        for cy in y0..y1 {
            let src = &pixels[((cy - top) * fw) * 4..][..(x1 - x0) * 4];
            let dst = &mut canvas[(cy * w + x0) * 4..(cy * w + x1) * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                if s[3] != 0 {
                    d.copy_from_slice(s);
                }
            }
        }
        push_gray(&canvas, w, h, &mut frames);
        match (dispose, saved) {
            (DisposalMethod::Background, _) => {
                for cy in y0..y1 {
                    canvas[(cy * w + x0) * 4..(cy * w + x1) * 4].fill(0);
                }
            }
            (DisposalMethod::Previous, Some(saved)) => canvas = saved,
            _ => {}
        }
        frame_count += 1;
        // Browsers play delays of 0 and 10 ms at 100 ms; match what the labeller saw.
        let ms = if delay <= 1 {
            100
        } else {
            u32::from(delay) * 10
        };
        duration_ms = duration_ms.saturating_add(ms);
    }
    if frame_count == 0 {
        return Err(ClipError::NoFrames);
    }
    Ok(DecodedClip {
        width: width.into(),
        height: height.into(),
        frame_count,
        duration_ms,
        frames,
    })
}

/// Appends the RGBA canvas as FRAME_SIDE² luma bytes: a box filter over the source pixels
/// that map to each output pixel when shrinking, the nearest pixel when enlarging.
fn push_gray(canvas: &[u8], w: usize, h: usize, out: &mut Vec<u8>) {
    let luma: Vec<u64> = canvas
        .chunks_exact(4)
        .map(|p| {
            let rgb = u64::from(p[0]) * 299 + u64::from(p[1]) * 587 + u64::from(p[2]) * 114;
            if p[3] == 0 { 0 } else { (rgb + 500) / 1000 }
        })
        .collect();
    let side = FRAME_SIDE as usize;
    // Source range [a, b) of output cell i; never empty, and never past n since i < side.
    let span = |i: usize, n: usize| {
        let a = i * n / side;
        (a, ((i + 1) * n / side).max(a + 1))
    };
    for oy in 0..side {
        let (y0, y1) = span(oy, h);
        for ox in 0..side {
            let (x0, x1) = span(ox, w);
            let sum: u64 = (y0..y1)
                .map(|y| luma[y * w + x0..y * w + x1].iter().sum::<u64>())
                .sum();
            let n = ((y1 - y0) * (x1 - x0)) as u64;
            out.push(((sum + n / 2) / n) as u8);
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`, the clip's content address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Tiny deterministic generator (SplitMix64) so demo clips depend only on the seed.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u32 << 24) as f32
    }
}

/// Generates a looping 64×64, 20-frame GIF of an agent (orange blob) heading for a goal
/// (green ring), deterministic for `seed`. `skill` 1.0 moves straight to the goal, 0.0 wanders.
pub fn demo_clip(seed: u64, skill: f32) -> Vec<u8> {
    const SIDE: u16 = 64;
    const STEP: f32 = 2.5;
    let skill = if skill.is_nan() {
        0.0
    } else {
        skill.clamp(0.0, 1.0)
    };
    let mut rng = Rng(seed);
    // Goal on the right, agent on the left, so every clip shows a journey.
    let goal = (40.0 + rng.unit() * 16.0, 8.0 + rng.unit() * 48.0);
    let mut pos = (8.0 + rng.unit() * 16.0, 8.0 + rng.unit() * 48.0);
    let mut heading = rng.unit() * std::f32::consts::TAU;
    // Background, goal, agent, grid: distinct lumas (21, 120, 219, 51) so grayscale keeps them apart.
    let palette = [16, 20, 36, 40, 170, 70, 255, 220, 120, 44, 50, 72];
    // Writing to a Vec cannot fail, and our frames always match their declared sizes.
    let mut enc = gif::Encoder::new(Vec::new(), SIDE, SIDE, &palette).expect("GIF header");
    enc.set_repeat(gif::Repeat::Infinite).expect("GIF repeat");
    for _ in 0..20 {
        let mut px = vec![0u8; usize::from(SIDE) * usize::from(SIDE)];
        for (i, p) in px.iter_mut().enumerate() {
            let (x, y) = ((i % 64) as f32 + 0.5, (i / 64) as f32 + 0.5);
            let agent = (x - pos.0).hypot(y - pos.1) <= 3.5;
            let ring = ((x - goal.0).hypot(y - goal.1) - 4.5).abs() <= 1.0;
            let grid = i % 16 == 0 && (i / 64) % 16 == 0; // faint dots, so the scene is not flat
            *p = if agent {
                2
            } else if ring {
                1
            } else {
                3 * u8::from(grid)
            };
        }
        let frame = gif::Frame {
            width: SIDE,
            height: SIDE,
            delay: 8,
            buffer: Cow::Owned(px),
            ..Default::default()
        };
        enc.write_frame(&frame).expect("GIF frame");

        // The draw happens whatever the skill, so one seed shares its randomness across skills.
        heading += (rng.unit() - 0.5) * 1.6;
        let (dx, dy) = (goal.0 - pos.0, goal.1 - pos.1);
        let dist = dx.hypot(dy);
        let toward = if dist > 1e-3 {
            (dx / dist, dy / dist)
        } else {
            (0.0, 0.0)
        };
        // A skilled agent stops on the goal instead of overshooting it.
        let speed = STEP.min(dist.max(STEP * (1.0 - skill)));
        let dir = (
            skill * toward.0 + (1.0 - skill) * heading.cos(),
            skill * toward.1 + (1.0 - skill) * heading.sin(),
        );
        pos = (
            (pos.0 + speed * dir.0).clamp(4.0, 60.0),
            (pos.1 + speed * dir.1).clamp(4.0, 60.0),
        );
    }
    enc.into_inner().expect("GIF trailer")
}

/// Content-addressed clip storage through object_store (local folder now, S3-compatible later).
#[derive(Clone, Debug)]
pub struct ClipStore {
    store: Arc<dyn ObjectStore>,
}

impl ClipStore {
    /// Stores clips under `dir`, creating it if missing.
    pub fn local(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating clip folder {}", dir.display()))?;
        let fs = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening clip folder {}", dir.display()))?;
        Ok(Self {
            store: Arc::new(fs),
        })
    }

    /// Stores `bytes` under `<first 2 hex>/<sha256>.gif`; storing the same clip again is a no-op.
    pub async fn put(&self, sha256: &str, bytes: Bytes) -> anyhow::Result<()> {
        let key = key(sha256)?;
        // A wrong name would make the store lie about content for ever after.
        anyhow::ensure!(
            sha256_hex(&bytes) == sha256,
            "clip bytes do not hash to {sha256}"
        );
        // Same key means same bytes, so an existing object is already right; checking first
        // keeps this portable to S3-compatible stores without conditional puts.
        match self.store.head(&key).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("checking clip {sha256}")),
        }
        self.store
            .put(&key, bytes.into())
            .await
            .with_context(|| format!("storing clip {sha256}"))?;
        Ok(())
    }

    /// The object store itself, for other content kept beside the clips (exports).
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reads back the clip stored under `sha256`.
    pub async fn get(&self, sha256: &str) -> anyhow::Result<Bytes> {
        let key = key(sha256)?;
        let result = self
            .store
            .get(&key)
            .await
            .with_context(|| format!("reading clip {sha256}"))?;
        Ok(result.bytes().await?)
    }
}

impl ClipStore {
    /// Stores a reward model's weights under `models/<sha256>.bin` (content-addressed
    /// like clips, so a version's weights can never change under it).
    pub async fn put_model(&self, sha256: &str, bytes: Bytes) -> anyhow::Result<()> {
        key(sha256)?;
        anyhow::ensure!(
            sha256_hex(&bytes) == sha256,
            "model bytes do not hash to {sha256}"
        );
        let path = ObjPath::from(format!("models/{sha256}.bin"));
        self.store
            .put(&path, bytes.into())
            .await
            .with_context(|| format!("storing model {sha256}"))?;
        Ok(())
    }

    /// Reads back the weights stored under `sha256`.
    pub async fn get_model(&self, sha256: &str) -> anyhow::Result<Bytes> {
        key(sha256)?;
        let path = ObjPath::from(format!("models/{sha256}.bin"));
        let result = self
            .store
            .get(&path)
            .await
            .with_context(|| format!("reading model {sha256}"))?;
        Ok(result.bytes().await?)
    }
}

/// The object key for a clip; only lowercase hex digests are accepted, so keys cannot escape.
fn key(sha256: &str) -> anyhow::Result<ObjPath> {
    let ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    anyhow::ensure!(ok, "not a lowercase hex SHA-256: {sha256:?}");
    Ok(ObjPath::from(format!("{}/{sha256}.gif", &sha256[..2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame: left, top, width, height, palette indices, disposal.
    type Rect = (u16, u16, u16, u16, Vec<u8>, DisposalMethod);

    /// Encodes frames over a black, white, red, blue palette; index 0 is transparent.
    fn encode(w: u16, h: u16, frames: &[Rect]) -> Vec<u8> {
        let palette = [0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255];
        let mut enc = gif::Encoder::new(Vec::new(), w, h, &palette).unwrap();
        for (left, top, width, height, px, dispose) in frames.iter().cloned() {
            let (buffer, transparent) = (Cow::Owned(px), Some(0));
            let f = gif::Frame {
                left,
                top,
                width,
                height,
                buffer,
                dispose,
                transparent,
                ..Default::default()
            };
            enc.write_frame(&f).unwrap();
        }
        enc.into_inner().unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<DecodedClip, ClipError> {
        decode_gif(bytes, &ClipLimits::default())
    }

    #[test]
    fn demo_clip_decodes_deterministically() {
        let clip = demo_clip(7, 0.8);
        assert_eq!(demo_clip(7, 0.8), clip, "deterministic for a seed");
        let d = decode(&clip).unwrap();
        assert_eq!(
            (
                d.width,
                d.height,
                d.frame_count,
                d.duration_ms,
                d.frames.len()
            ),
            (64, 64, 20, 1600, 20 * 4096)
        );
        assert_ne!(d.frames[..4096], d.frames[19 * 4096..], "the agent moves");
        assert_ne!(decode(&demo_clip(7, 0.0)).unwrap().frames, d.frames);
        assert_ne!(demo_clip(8, 0.8), clip);
    }

    #[test]
    fn limits_are_enforced() {
        let mut bomb = encode(1, 1, &[(0, 0, 1, 1, vec![1], DisposalMethod::Keep)]);
        bomb[6..10].copy_from_slice(&[0x60, 0xEA, 0x60, 0xEA]); // declares 60000 x 60000
        let err = decode(&bomb).unwrap_err();
        assert!(
            matches!(
                err,
                ClipError::TooManyPixels {
                    width: 60000,
                    height: 60000,
                    limit: 262144
                }
            ),
            "{err}"
        );
        let limits = ClipLimits {
            max_frames: 5,
            max_bytes: 100,
            ..ClipLimits::default()
        };
        let err = decode_gif(
            &demo_clip(1, 0.5),
            &ClipLimits {
                max_bytes: 1 << 20,
                ..limits
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, ClipError::TooManyFrames { limit: 5 }),
            "{err}"
        );
        let err = decode_gif(&[0u8; 101], &limits).unwrap_err();
        assert_eq!(err.to_string(), "clip is 101 bytes; the limit is 100");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let clip = demo_clip(3, 0.5);
        assert_eq!(
            decode(&clip[..clip.len() - 1]).unwrap().frame_count,
            20,
            "only the trailer lost"
        );
        for cut in [clip.len() / 2, 6, 9, 13, clip.len() - 2, clip.len() - 100] {
            assert!(
                matches!(decode(&clip[..cut]), Err(ClipError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        let mut rng = Rng(42);
        let noise: Vec<u8> = (0..1000).map(|_| (rng.unit() * 256.0) as u8).collect();
        for bytes in [&noise[..], b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b""] {
            assert!(matches!(decode(bytes), Err(ClipError::NotGif)));
        }
        assert!(matches!(
            decode(&encode(4, 4, &[])),
            Err(ClipError::NoFrames)
        ));
        // A flipped byte anywhere gives an error or a clip, never a panic.
        for i in (0..clip.len()).step_by(7) {
            let mut bad = clip.clone();
            bad[i] ^= 0xA5;
            let _ = decode(&bad);
        }
    }

    #[test]
    fn compositing_honours_transparency_and_disposal() {
        use DisposalMethod::*;
        let half_red: Vec<u8> = (0..16).map(|i| if i % 4 < 2 { 0 } else { 2 }).collect();
        let d = decode(&encode(
            64,
            64,
            &[
                (0, 0, 64, 64, vec![1; 64 * 64], Keep),
                (10, 10, 4, 4, half_red, Background),
                (30, 30, 2, 2, vec![3; 4], Previous),
                (60, 60, 8, 8, vec![0; 64], Keep), // sticks out of the canvas, all transparent
                (0, 0, 0, 0, vec![], Keep),
            ],
        ))
        .unwrap();
        assert_eq!((d.frame_count, d.duration_ms), (5, 500));
        let px = |f: usize, x: usize, y: usize| d.frames[f * 4096 + y * 64 + x];
        assert!(d.frames[..4096].iter().all(|&v| v == 255));
        // Transparent pixels keep the white below; red has luma 76.
        assert_eq!(
            [
                px(1, 10, 10),
                px(1, 11, 13),
                px(1, 12, 10),
                px(1, 13, 13),
                px(1, 14, 10)
            ],
            [255, 255, 76, 76, 255]
        );
        // Background disposal cleared frame 1's whole rectangle to transparent (0); blue is 29.
        assert_eq!(
            [
                px(2, 10, 10),
                px(2, 13, 13),
                px(2, 30, 30),
                px(2, 31, 31),
                px(2, 32, 32)
            ],
            [0, 0, 29, 29, 255]
        );
        // Previous disposal removed the blue square; the transparent frame changed nothing.
        assert_eq!([px(3, 30, 30), px(3, 10, 10), px(3, 63, 63)], [255, 0, 255]);
        assert_eq!(d.frames[3 * 4096..4 * 4096], d.frames[4 * 4096..]);
    }

    #[test]
    fn downsamples_by_area_and_upscales_by_nearest() {
        // 128x32: columns 0..65 white, the rest transparent; box filter in x, nearest in y.
        let px: Vec<u8> = (0..128 * 32).map(|i| u8::from(i % 128 < 65)).collect();
        let d = decode(&encode(
            128,
            32,
            &[(0, 0, 128, 32, px, DisposalMethod::Keep)],
        ))
        .unwrap();
        assert_eq!(d.frames[..34], [[255; 32].as_slice(), &[128, 0]].concat());
        assert_eq!(d.frames[..64], d.frames[63 * 64..]);
    }

    #[tokio::test]
    async fn store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = ClipStore::local(&dir.path().join("clips")).unwrap();
        let clip = Bytes::from(demo_clip(5, 1.0));
        let sha = sha256_hex(&clip);
        store.put(&sha, clip.clone()).await.unwrap();
        store.put(&sha, clip.clone()).await.unwrap();
        assert_eq!(store.get(&sha).await.unwrap(), clip);
        assert!(
            dir.path()
                .join("clips")
                .join(&sha[..2])
                .join(format!("{sha}.gif"))
                .is_file()
        );
        assert!(
            store
                .put(&sha256_hex(b"other"), clip.clone())
                .await
                .is_err(),
            "wrong address"
        );
        assert!(store.get("../etc/passwd").await.is_err());
        assert!(store.get(&sha256_hex(b"missing")).await.is_err());
    }
    #[test]
    fn mutated_gifs_are_refused_or_decoded_within_limits() {
        // Random edits of real clips through the ingest decoder: none may panic, and what
        // decodes keeps to the limits and the documented frame layout.
        let seeds = [demo_clip(1, 0.9), demo_clip(2, 0.1)];
        crate::mutate::exercise(&[&seeds[0], &seeds[1]], 1500, 0xF022, crate::fuzzing::gif);
    }
}
