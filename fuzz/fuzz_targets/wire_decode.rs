//! The Confluent wire format and the Avro decoders (`zt_model::fuzzing::wire_decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_model::fuzzing::wire_decode(data));
