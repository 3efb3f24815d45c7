//! Text features with no downloaded vocabulary: the hashing trick.
//!
//! # Recipe (exact; exported models depend on it)
//!
//! For a text `s`, [`text_features`] returns `TEXT_FEATURE_DIM = 4096 + 2` floats:
//!
//! 1. **Words.** Lower-case `s` (Unicode `to_lowercase`); words are the maximal runs of
//!    alphanumeric characters (`char::is_alphanumeric`); everything else separates words.
//! 2. **Keys.** Each word `w` gives the key `"w:" + w`; each adjacent pair gives
//!    `"b:" + w1 + " " + w2`; and over `t = " " + words.join(" ") + " "` every window of three
//!    consecutive characters `abc` gives `"c:" + abc`. Keys are hashed as UTF-8 bytes.
//! 3. **Hash.** `h` = 64-bit FNV-1a of the key (offset basis `0xcbf29ce484222325`, prime
//!    `0x100000001b3`). Bucket `i = (h ^ (h >> 32)) mod 4096`; sign `+1` if bit 63 of `h` is 0,
//!    else `-1`. Each key adds its sign to count `c[i]`.
//! 4. **Scale.** `x[i] = sign(c[i]) * ln(1 + |c[i]|)`, then `x[0..4096]` is divided by its L2
//!    norm (left at zero for a text with no words).
//! 5. **Dense extras.** `x[4096] = ln(1 + chars) / 8` and `x[4097] = ln(1 + words) / 8`, where
//!    `chars` counts Unicode scalar values of the original `s`. Dividing by 8 keeps them near the
//!    magnitude of the unit-norm hashed block for texts up to a few thousand characters.
//!
//! FNV-1a is fixed by this recipe rather than `std`'s `DefaultHasher`, whose output may change
//! between Rust releases and so between the trainer and a later scorer.

use super::{MlError, Result};

/// Number of hashed buckets (2^12).
pub const HASH_DIM: usize = 1 << 12;
/// Length of a text feature vector: the hashed buckets plus two dense length features.
pub const TEXT_FEATURE_DIM: usize = HASH_DIM + 2;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Where a rollout's feature vector comes from.
#[derive(Debug, Clone, Copy)]
pub enum FeatureSource<'a> {
    /// Plain text, featurised with the hashing recipe above.
    Text(&'a str),
    /// A rollout that carries its own embedding (`features: Vec<f32>`), used unchanged.
    Embedding(&'a [f32]),
}

impl FeatureSource<'_> {
    /// Length of the vector [`featurize`] returns for this source.
    pub fn dim(&self) -> usize {
        match self {
            FeatureSource::Text(_) => TEXT_FEATURE_DIM,
            FeatureSource::Embedding(v) => v.len(),
        }
    }
}

/// Turns a source into the feature vector a [`MlpReward`](super::MlpReward) reads.
///
/// Embeddings pass through unchanged but must be non-empty and finite: one NaN would turn every
/// gradient of a training batch into NaN.
pub fn featurize(source: FeatureSource<'_>) -> Result<Vec<f32>> {
    match source {
        FeatureSource::Text(text) => Ok(text_features(text)),
        FeatureSource::Embedding([]) => Err(MlError::InputShape {
            expected: "a non-empty embedding".into(),
            got: "0 features".into(),
        }),
        FeatureSource::Embedding(v) if v.iter().any(|x| !x.is_finite()) => {
            Err(MlError::InputShape {
                expected: "finite embedding values".into(),
                got: "NaN or infinity".into(),
            })
        }
        FeatureSource::Embedding(v) => Ok(v.to_vec()),
    }
}

/// Hashed features of a text, following the recipe in this module's documentation.
pub fn text_features(text: &str) -> Vec<f32> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();

    let mut counts = vec![0i32; HASH_DIM];
    let mut add = |key: &[u8]| {
        let (bucket, sign) = bucket_and_sign(fnv1a(key));
        counts[bucket] += sign;
    };
    for w in &words {
        add(format!("w:{w}").as_bytes());
    }
    for pair in words.windows(2) {
        add(format!("b:{} {}", pair[0], pair[1]).as_bytes());
    }
    let padded: Vec<char> = format!(" {} ", words.join(" ")).chars().collect();
    if !words.is_empty() {
        for tri in padded.windows(3) {
            add(format!("c:{}", tri.iter().collect::<String>()).as_bytes());
        }
    }

    let mut x: Vec<f32> = counts
        .iter()
        .map(|&c| (c.signum() as f32) * (c.unsigned_abs() as f32).ln_1p())
        .collect();
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        x.iter_mut().for_each(|v| *v /= norm);
    }
    x.push((text.chars().count() as f32).ln_1p() / 8.0);
    x.push((words.len() as f32).ln_1p() / 8.0);
    x
}

/// 64-bit FNV-1a: tiny, fixed forever, identical on every platform.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

fn bucket_and_sign(h: u64) -> (usize, i32) {
    // Folding the high half in before taking the low bits mixes the whole hash into the bucket;
    // the sign uses bit 63, which the bucket bits do not see.
    let bucket = ((h ^ (h >> 32)) % HASH_DIM as u64) as usize;
    let sign = if h >> 63 == 0 { 1 } else { -1 };
    (bucket, sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors: pin the hash so features never drift.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn text_features_are_normalised_and_case_insensitive() {
        let a = text_features("The cat sat on the mat.");
        let b = text_features("the CAT sat, on the mat");
        assert_eq!(a.len(), TEXT_FEATURE_DIM);
        assert_eq!(a[..HASH_DIM], b[..HASH_DIM]);
        let norm: f32 = a[..HASH_DIM].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(a[HASH_DIM] > 0.0 && a[HASH_DIM + 1] > 0.0);
    }

    #[test]
    fn empty_text_has_zero_hashed_block() {
        let x = text_features("  ...  ");
        assert!(x[..HASH_DIM].iter().all(|&v| v == 0.0));
        assert_eq!(x[HASH_DIM + 1], 0.0);
    }

    #[test]
    fn embeddings_pass_through_and_are_checked() {
        let v = [0.5, -1.0, 2.0];
        assert_eq!(featurize(FeatureSource::Embedding(&v)).unwrap(), v.to_vec());
        assert!(featurize(FeatureSource::Embedding(&[f32::NAN])).is_err());
        assert!(featurize(FeatureSource::Embedding(&[])).is_err());
        assert_eq!(FeatureSource::Text("x").dim(), TEXT_FEATURE_DIM);
    }
}
