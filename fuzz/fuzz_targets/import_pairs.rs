#![no_main]
//! `cargo +nightly fuzz run import_pairs`: see fuzz/README.md.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backflip::fuzzing::pairs_file(data);
});
