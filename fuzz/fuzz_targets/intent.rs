#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| caly::testing::fuzzing::intent(data));
