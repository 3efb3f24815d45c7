//! Mutation fuzzing on stable Rust: random byte-level edits of a valid input (flips,
//! overwrites with boundary values, truncation, duplicated and inserted runs, deleted
//! ranges), as a fuzzer's first mutators do. The parsers' tests feed thousands of these
//! through the real entry points and check that each is refused or accepted cleanly.

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::fuzzing::Outcome;

/// Feeds `rounds` mutations of the `seeds` (in turn) to `check`, one of the
/// [`crate::fuzzing`] checks, and counts (accepted, refused); a panic names the mutation.
/// Both counts must be non-zero, so the edits reach past the first checks.
pub(crate) fn exercise(seeds: &[&[u8]], rounds: usize, rng_seed: u64, check: fn(&[u8]) -> Outcome) {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..rounds {
        let input = mutate(&mut rng, seeds[i % seeds.len()]);
        match std::panic::catch_unwind(|| check(&input)) {
            Ok(Outcome::Accepted) => accepted += 1,
            Ok(Outcome::Refused) => refused += 1,
            Err(_) => panic!(
                "mutation {i} broke the check: {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// `input` with 1 to 8 random edits.
pub(crate) fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let len = out.len();
        if len == 0 {
            out.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..len);
        match rng.random_range(0..7) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = [0, 0x7f, 0x80, 0xff][rng.random_range(0..4)],
            2 => out[at] = rng.random(),
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..64)).min(len);
                let run = out[at..end].to_vec();
                let to = rng.random_range(0..=out.len());
                out.splice(to..to, run);
            }
            5 => {
                let run: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                out.splice(at..at, run);
            }
            _ => {
                let end = (at + rng.random_range(1..64)).min(len);
                out.drain(at..end);
            }
        }
    }
    out
}
