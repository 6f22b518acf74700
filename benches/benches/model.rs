//! Canonical-model benchmarks: Avro encode and decode in the Confluent wire format, per
//! source, and PII normalisation + hashing. These bound what one core can feed the broker
//! before any I/O; the ingest benchmarks compare against them.

// The allocator the `zt` binary ships with (crates/zt-cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use zt_model::pii::PiiHasher;
use zt_model::{Event, decode, encode};

/// Encode one event of each source into framed Avro (what ingest does per event).
fn encode_per_source(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for ev in zt_benches::sample_events() {
        let bytes = encode(&ev).unwrap().len() as u64;
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(ev.source.as_str(), |b| {
            b.iter(|| encode(black_box(&ev)).unwrap())
        });
    }
    g.finish();
}

/// Decode one framed event of each source (what the sink and processors do per record).
fn decode_per_source(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for ev in zt_benches::sample_events() {
        let bytes = encode(&ev).unwrap();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(ev.source.as_str(), |b| {
            b.iter(|| decode::<Event>(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

/// Normalise and hash a phone number and an e-mail (done at the edge for every identity).
fn pii(c: &mut Criterion) {
    let h = PiiHasher::new(b"bench-salt", "86").unwrap();
    let mut g = c.benchmark_group("pii");
    g.throughput(Throughput::Elements(1));
    g.bench_function("phone", |b| {
        b.iter(|| {
            h.hash_phone(black_box("+86 138-1234-5678"), "phone")
                .unwrap()
        })
    });
    g.bench_function("email", |b| {
        b.iter(|| {
            h.hash_email(black_box(" Li.Lei@Example.COM "), "email")
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, encode_per_source, decode_per_source, pii);
criterion_main!(benches);
