#![no_main]
//! `cargo +nightly fuzz run gif_ingest`: see fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backflip::fuzzing::gif(data);
});
