#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caly::fuzzing::exotel_message(data));
