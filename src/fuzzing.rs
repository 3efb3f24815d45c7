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
    let lines = data.split(|&b| b == b'\n').count();
    let mut outcome = Outcome::Refused;
    for kind in ["text", "gif"] {
        match crate::import::parse_pairs(data, kind) {
            Ok(pairs) => {
                outcome = Outcome::Accepted;
                for (line, pair) in pairs {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    for r in &pair {
                        assert_eq!(crate::import::check_rollout("a", r, kind), None);
                    }
                }
            }
            Err(errors) => refused_lines(&errors, lines),
        }
    }
    outcome
}

/// A JSONL file of single rollouts (grouped), read for a text and for a GIF project, with
/// the same invariants as [`pairs_file`].
pub fn rollouts_file(data: &[u8]) -> Outcome {
    let lines = data.split(|&b| b == b'\n').count();
    let mut outcome = Outcome::Refused;
    for kind in ["text", "gif"] {
        match crate::selection::import::parse_rollouts(data, kind) {
            Ok(rollouts) => {
                outcome = Outcome::Accepted;
                for (line, group, rollout) in rollouts {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    assert!(!group.trim().is_empty() && group.len() <= 200);
                    assert_eq!(
                        crate::import::check_rollout("rollout", &rollout, kind),
                        None
                    );
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
