//! Ingest's body parsers, every normaliser and the dead-letter redaction
//! (`zt_ingest::fuzzing::ingest_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zt_ingest::fuzzing::ingest_body(data));
