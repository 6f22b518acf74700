//! Ingest normalisation benchmarks: one native record per source and a Segment `track`
//! call, parsed, normalised (PII hashed) and encoded to the wire format — the CPU work
//! ingest does per event before the producer. Compare with `model` (encode alone) to see
//! what normalisation costs.

// The allocator the `zt` binary ships with (crates/zt-cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use zt_ingest::normalize::{Envelope, normalize_json};
use zt_model::Source;

/// (source, Segment call kind, record) per event type benchmarked.
fn records() -> Vec<(Source, Option<&'static str>, &'static str)> {
    vec![
        (
            Source::Crm,
            None,
            r#"{"event_id":"crm-1","type":"customer.registered","occurred_at":"2026-01-05T10:00:00+08:00","customer_id":"C1001","mobile":"13812345678","email":"li.lei@example.cn","channel":"douyin","registered_at":"2026-01-05T10:00:00+08:00","tier":"silver","points_balance":100,"consents":[{"purpose":"marketing_sms","granted":true}],"city":"杭州"}"#,
        ),
        (
            Source::Erp,
            None,
            r#"{"event_id":"erp-1","type":"order.paid","occurred_at":"2026-01-05T10:00:00+08:00","order_id":"SO1","customer_id":"C1001","mobile":"13812345678","channel":"tmall","currency":"CNY","total":40800,"discount":5000,"payment_method":"alipay","coupon_codes":["NY50"],"lines":[{"sku":"S1","product_name":"保温杯","quantity":2,"unit_price":9900},{"sku":"S2","quantity":1,"unit_price":26000}]}"#,
        ),
        (
            Source::Logistics,
            None,
            r#"{"event_id":"lg-1","type":"shipment.delivered","occurred_at":"2026-01-07T15:00:00+08:00","waybill_no":"SF1234567890","order_id":"SO1","carrier":"sf","receiver_mobile":"13812345678","warehouse":"HZ-01","destination_city":"杭州"}"#,
        ),
        (
            Source::Service,
            None,
            r#"{"event_id":"cs-1","type":"ticket.rated","occurred_at":"2026-01-08T11:00:00+08:00","ticket_id":"T1","customer_id":"C1001","order_id":"SO1","channel":"chat","csat_score":5,"opened_at":"2026-01-08T09:00:00+08:00","first_response_at":"2026-01-08T09:05:00+08:00"}"#,
        ),
        (
            Source::Marketing,
            None,
            r#"{"event_id":"ad-1","type":"ad_spend.reported","occurred_at":"2026-01-06T00:10:00+08:00","channel":"douyin","campaign_id":"NY2026","day":"2026-01-05","spend":1250000,"impressions":480000,"clicks":9600}"#,
        ),
        (
            Source::Tracking,
            Some("track"),
            r#"{"messageId":"m-1","anonymousId":"a3f1c9e2","userId":"u1","event":"Product Added","properties":{"product_id":"P1","sku":"S1","price":99.0,"quantity":1,"currency":"CNY"},"context":{"campaign":{"source":"douyin","medium":"cpc","name":"ny"},"device":{"type":"mobile"},"traits":{"email":"li.lei@example.cn"}},"timestamp":"2026-01-05T02:00:00.000Z","sentAt":"2026-01-05T02:00:01.000Z"}"#,
        ),
    ]
}

/// Parse + normalise + encode, per source.
fn normalize_encode(c: &mut Criterion) {
    let setup = zt_benches::NormaliseSetup::new(b"bench-salt");
    let ctx = setup.ctx();
    let private = vec!["wechat_group".to_owned()];
    for (group, tree) in [
        ("ingest_normalize_encode", false),
        ("ingest_normalize_encode_tree", true),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for (source, kind, raw) in records() {
            g.bench_function(source.as_str(), |b| {
                b.iter(|| {
                    let env = Envelope {
                        received_at: 1_767_578_400_000,
                        raw: raw.as_bytes(),
                        private_channels: &private,
                    };
                    // As the endpoints read an item (native objects lazily since 2026-11-27,
                    // Segment calls since 2026-11-28), or through a whole value tree (how
                    // every item was read before; the dead-letter replayer still is).
                    let ev = if tree {
                        let v: serde_json::Value = serde_json::from_str(black_box(raw)).unwrap();
                        zt_ingest::normalize::normalize(source, v, kind, &ctx, env).unwrap()
                    } else {
                        normalize_json(source, black_box(raw), kind, &ctx, env).unwrap()
                    };
                    zt_model::encode(&ev).unwrap()
                })
            });
        }
        g.finish();
    }
}

/// A `/v1/batch` body of 200 `track` calls (those of the load bench, `ingest_load`) read
/// as the Segment endpoints read it: scanned once, each call normalised and encoded. The
/// per-event cost of the endpoint's own work on a tracking request, without HTTP and the
/// producer.
fn segment_batch(c: &mut Criterion) {
    let setup = zt_benches::NormaliseSetup::new(b"bench-salt");
    let ctx = setup.ctx();
    let body_of = |n: usize| zt_benches::track_body(n * 200..n * 200 + 200);
    // One body read again and again (in cache), and a new body each time from 64 (about
    // 4.6 MB, more than the caches, as bodies arrive from the network).
    let bodies: Vec<Vec<u8>> = (0..64).map(body_of).collect();
    let mut g = c.benchmark_group("ingest_segment_batch");
    g.throughput(Throughput::Elements(200));
    for (name, pool) in [("track_200", &bodies[..1]), ("track_200_cold", &bodies[..])] {
        g.bench_function(name, |b| {
            let mut buf = Vec::with_capacity(1 << 16);
            let mut next = 0;
            b.iter(|| {
                buf.clear();
                next = (next + 1) % pool.len();
                zt_ingest::normalize::normalize_segment_body(
                    black_box(&pool[next]),
                    None,
                    &ctx,
                    1_767_578_400_000,
                    &[],
                    |ev| zt_model::encode_append(ev.unwrap(), &mut buf).unwrap(),
                )
                .unwrap();
                buf.len()
            })
        });
    }
    g.finish();
}

/// Splitting a 200-record ERP body into records and listing each record's members: the
/// one-pass scanner the native endpoint uses, against serde_json (a pass to split, a pass
/// per record), which it falls back to.
fn split_body(c: &mut Criterion) {
    let erp = records()
        .into_iter()
        .find(|(s, _, _)| *s == Source::Erp)
        .map(|(_, _, r)| r)
        .unwrap();
    let body = format!("[{}]", vec![erp; 200].join(","));
    let mut g = c.benchmark_group("ingest_split_body");
    g.throughput(Throughput::Elements(200));
    g.bench_function("scan", |b| {
        b.iter(|| {
            let items = zt_ingest::scan::array(black_box(&body)).unwrap();
            items.len()
        })
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            let raws: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(black_box(&body)).unwrap();
            raws.iter()
                .map(|r| zt_ingest::fields::serde_members(r.get()).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();
}

/// The dedup window as a request uses it: each of 200 new ids looked up, then all 200
/// remembered under one lock, in a window of a million ids that is full (so every id
/// remembered forgets the oldest), as in a busy ingest. Ids are random 128-bit keys, as
/// `DedupWindow::key` makes them.
fn dedup_window(c: &mut Criterion) {
    use zt_ingest::dedup::DedupWindow;
    let max = 1_000_000;
    let w = DedupWindow::new(std::time::Duration::from_secs(86_400), max);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64*, two draws a key
        let mut draw = || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (u128::from(draw()) << 64) | u128::from(draw())
    };
    w.insert_all((0..max).map(|_| next()));
    let mut g = c.benchmark_group("ingest_dedup_window");
    g.throughput(Throughput::Elements(200));
    g.bench_function("check_then_remember_200_in_1m", |b| {
        b.iter(|| {
            let now = std::time::Instant::now();
            let keys: Vec<u128> = (0..200).map(|_| next()).collect();
            let seen = keys.iter().filter(|k| w.contains_at(**k, now)).count();
            w.insert_all(keys);
            seen
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    normalize_encode,
    segment_batch,
    split_body,
    dedup_window
);
criterion_main!(benches);
