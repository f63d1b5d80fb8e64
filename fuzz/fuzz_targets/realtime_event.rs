#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caly::testing::fuzzing::realtime_event(data));
