//! Sample inputs shared by the benchmarks: one realistic event per source.

use zt_model::*;

/// One realistic event of each source, in `Source::ALL` order.
pub fn sample_events() -> Vec<Event> {
    Source::ALL.into_iter().map(sample_event).collect()
}

/// A realistic event of `source`.
pub fn sample_event(source: Source) -> Event {
    let t = 1_767_225_600_000;
    let payload = match source {
        Source::Crm => Payload::Customer(CustomerPayload {
            customer_id: "C100234".into(),
            tier: Some("gold".into()),
            previous_tier: Some("silver".into()),
            points_balance: Some(12_800),
            consents: vec![Consent {
                purpose: "marketing_sms".into(),
                granted: true,
            }],
            city: Some("杭州".into()),
            ..Default::default()
        }),
        Source::Erp => Payload::Order(OrderPayload {
            order_id: "SO20260101000123".into(),
            status: "paid".into(),
            currency: "CNY".into(),
            subtotal_minor: 45_800,
            discount_minor: 5_000,
            shipping_minor: 0,
            total_minor: 40_800,
            payment_method: Some("alipay".into()),
            coupon_codes: vec!["NEWYEAR50".into()],
            lines: (1..=3)
                .map(|n| OrderLine {
                    line_no: n,
                    sku: format!("SKU-{n:04}"),
                    product_name: Some("保温杯 500ml".into()),
                    category: Some("home".into()),
                    quantity: n,
                    unit_price_minor: 9_900,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        Source::Logistics => Payload::Shipment(ShipmentPayload {
            waybill_no: "SF1234567890".into(),
            order_id: Some("SO20260101000123".into()),
            carrier: "sf".into(),
            status: "delivered".into(),
            warehouse: Some("HZ-01".into()),
            ..Default::default()
        }),
        Source::Tracking => Payload::Tracking(TrackingPayload {
            kind: "track".into(),
            name: Some("Product Added".into()),
            properties_json: r#"{"product_id":"P1","sku":"SKU-0001","price":99.0,"quantity":1}"#
                .into(),
            product_id: Some("P1".into()),
            sku: Some("SKU-0001".into()),
            price_minor: Some(9_900),
            quantity: Some(1),
            currency: Some("CNY".into()),
            ..Default::default()
        }),
        Source::Service => Payload::Ticket(TicketPayload {
            ticket_id: "T-88001".into(),
            status: "rated".into(),
            channel: Some("chat".into()),
            csat_score: Some(5),
            opened_at: Some(t - 7_200_000),
            first_response_at: Some(t - 7_000_000),
            ..Default::default()
        }),
        Source::Marketing => Payload::AdSpend(AdSpendPayload {
            channel: "douyin".into(),
            campaign_id: "CMP-2026-NY".into(),
            day: 20_454,
            spend_minor: 1_250_000,
            currency: "CNY".into(),
            impressions: 480_000,
            clicks: 9_600,
            ..Default::default()
        }),
    };
    Event {
        event_id: format!("{source}-evt-000001"),
        event_type: source.event_types()[0].into(),
        source,
        source_event_id: Some("src-1".into()),
        occurred_at: t,
        sent_at: Some(t + 40),
        received_at: t + 120,
        event_time: t + 80,
        identities: Identities {
            crm_customer_id: Some("C100234".into()),
            anonymous_id: Some("a3f1c9e2-7b1d-4c55-9f0e-2d7c1b8a9e44".into()),
            phone_hash: Some(
                "4075248519c975131c7773c606f253ed2b7a1e2d1d341a08dc6671cf91f11dab".into(),
            ),
            ..Default::default()
        },
        context: Context {
            channel: Some("douyin".into()),
            campaign: Some("CMP-2026-NY".into()),
            utm_source: Some("douyin".into()),
            utm_medium: Some("cpc".into()),
            device_type: Some("mobile".into()),
            os: Some("iOS".into()),
            locale: Some("zh-CN".into()),
            experiments: vec![ExperimentAssignment {
                experiment_id: "checkout-v2".into(),
                variant: "treatment".into(),
            }],
            ..Default::default()
        },
        payload,
        person_id: None,
    }
}

/// The broker a bench runs against: `ZT_BENCH_BROKER` (host:port) when set, else a tansu
/// memory engine started for the run ([`start_tansu_memory`]). Returns the child the bench
/// started (if any), the bootstrap servers and the storage named for the report.
pub fn bench_broker() -> (Option<std::process::Child>, String, &'static str) {
    match std::env::var("ZT_BENCH_BROKER") {
        Ok(b) => (None, b, "existing broker"),
        Err(_) => {
            let (child, port) = start_tansu_memory();
            (
                Some(child),
                format!("127.0.0.1:{port}"),
                "tansu memory engine",
            )
        }
    }
}

/// Starts a tansu broker on a free local port with the memory storage engine (INFRA.md:
/// memory for throughput figures); the binary from `~/.cargo/bin` or `PATH`
/// (`deploy/local/stack.sh` installs it). Returns the child and its port, once it accepts
/// connections.
pub fn start_tansu_memory() -> (std::process::Child, u16) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("tcp://127.0.0.1:{port}");
    let home = std::env::var("HOME").unwrap_or_default();
    let bin = format!("{home}/.cargo/bin/tansu");
    let bin = if std::path::Path::new(&bin).exists() {
        bin
    } else {
        "tansu".into()
    };
    let child = Command::new(bin)
        .args(["broker", "--cluster-id", "zt-bench", "--listener-url", &url])
        .args([
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu on PATH or in ~/.cargo/bin (deploy/local/stack.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// utime + stime of a process so far, seconds (Linux `/proc/<pid>/stat`, CLK_TCK 100), and
/// its parent pid. For the benches' "where the time goes" lines.
pub fn proc_cpu(pid: u32) -> Option<(f64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((ticks / 100.0, ppid))
}

/// A Segment `track` call as a web tracker sends one (product properties, an e-mail in
/// `context.traits`): the load bench's tracking workload and the body of the
/// `ingest_segment_batch` bench.
pub fn track_call(i: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "track", "messageId": format!("bench-{i}"), "anonymousId": format!("a{}", i % 5000),
        "userId": format!("u{}", i % 5000), "event": "Product Added",
        "properties": {"product_id": "P1", "sku": "SKU-1", "price": 99.0, "quantity": 1, "currency": "CNY"},
        "context": {"campaign": {"source": "douyin", "medium": "cpc", "name": "ny"},
                    "device": {"type": "mobile"}, "traits": {"email": "li.lei@example.cn"}},
        "timestamp": "2026-01-05T02:00:00.000Z"
    })
}

/// A `/v1/batch` body of the [`track_call`]s `ids`, with a batch-level `sentAt` as the
/// Segment and RudderStack SDKs send it (each call then gets the batch's `sentAt` added,
/// and its clock skew corrected): the load bench's tracking body and the
/// `ingest_segment_batch` bench's.
pub fn track_body(ids: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let calls: Vec<serde_json::Value> = ids.into_iter().map(track_call).collect();
    serde_json::to_vec(&serde_json::json!({
        "batch": calls, "sentAt": "2026-01-05T02:00:01.000Z"
    }))
    .expect("a JSON body")
}

/// What a normaliser reads besides the record, as ingest sets it up for a source with the
/// default mapping (RFC 3339 times, `+08:00`; country code 86), under `salt`: the benches'
/// [`zt_ingest::fields::Ctx`] ([`NormaliseSetup::ctx`]).
#[derive(Debug)]
pub struct NormaliseSetup {
    hasher: zt_model::pii::PiiHasher,
    mapping: zt_ingest::config::Mapping,
    time_format: zt_ingest::fields::TimeFormat,
}

impl NormaliseSetup {
    /// The set-up under `salt`.
    pub fn new(salt: &[u8]) -> NormaliseSetup {
        NormaliseSetup {
            hasher: zt_model::pii::PiiHasher::new(salt, "86").expect("a valid salt"),
            mapping: zt_ingest::config::Mapping::default(),
            time_format: zt_ingest::fields::TimeFormat::parse("rfc3339", "+08:00")
                .expect("a valid time format"),
        }
    }

    /// The normaliser's context.
    pub fn ctx(&self) -> zt_ingest::fields::Ctx<'_> {
        zt_ingest::fields::Ctx {
            mapping: &self.mapping,
            time_format: &self.time_format,
            hasher: &self.hasher,
        }
    }
}
