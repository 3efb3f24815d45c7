//! One-input checks of the parsers that read untrusted bytes, shared by the cargo-fuzz
//! targets in `fuzz/` (coverage-guided, nightly, not in CI) and the mutation tests that run
//! in CI. Each feeds the input to the real entry point and panics if it panics or breaks an
//! invariant of its answer; otherwise it says whether the input was accepted.

use crate::clips::{ClipLimits, FRAME_SIDE, decode_gif};

/// What a parser made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// A JSONL file of pairs, read for a text and for a GIF project: a refusal names lines that
/// exist, each with a message; every accepted pair passes the line checks.
pub fn pairs_file(data: &[u8]) -> Outcome {
    jsonl_file(data, crate::import::parse_pairs, |kind, pair| {
        for r in &pair {
            assert_eq!(crate::import::check_rollout("a", r, kind), None);
        }
    })
}

/// A JSONL file of single rollouts (grouped), read for a text and for a GIF project, with
/// the same invariants as [`pairs_file`].
pub fn rollouts_file(data: &[u8]) -> Outcome {
    let parse = |data: &[u8], kind: &str| {
        crate::selection::import::parse_rollouts(data, kind)
            .map(|all| all.into_iter().map(|(l, g, r)| (l, (g, r))).collect())
    };
    jsonl_file(data, parse, |kind, (group, rollout): (String, _)| {
        assert!(!group.trim().is_empty() && group.len() <= 200);
        assert_eq!(
            crate::import::check_rollout("rollout", &rollout, kind),
            None
        );
    })
}

/// A JSONL file through `parse` for a text and for a GIF project: every item it accepts
/// names a line of the file and passes `check`; a refusal names lines of the file, each
/// with a message. Accepted when either kind accepts it.
fn jsonl_file<T>(
    data: &[u8],
    parse: impl Fn(&[u8], &str) -> Result<Vec<(usize, T)>, Vec<crate::error::LineError>>,
    check: impl Fn(&str, T),
) -> Outcome {
    let lines = data.split(|&b| b == b'\n').count();
    let mut outcome = Outcome::Refused;
    for kind in ["text", "gif"] {
        match parse(data, kind) {
            Ok(items) => {
                outcome = Outcome::Accepted;
                for (line, item) in items {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    check(kind, item);
                }
            }
            Err(errors) => refused_lines(&errors, lines),
        }
    }
    outcome
}

fn refused_lines(errors: &[crate::error::LineError], lines: usize) {
    assert!(!errors.is_empty());
    for e in errors {
        assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
        assert!(!e.message.is_empty());
    }
}

/// An uploaded clip through the ingest decoder with the default limits: what decodes keeps
/// to the limits and the documented frame layout; a refusal has a message.
pub fn gif(data: &[u8]) -> Outcome {
    let limits = ClipLimits::default();
    match decode_gif(data, &limits) {
        Ok(clip) => {
            assert!(clip.frame_count >= 1);
            assert!(clip.frame_count as usize <= limits.max_frames);
            assert!(u64::from(clip.width) * u64::from(clip.height) <= limits.max_pixels);
            let side = FRAME_SIDE as usize;
            assert_eq!(clip.frames.len(), clip.frame_count as usize * side * side);
            Outcome::Accepted
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            Outcome::Refused
        }
    }
}
