//! The ingest API over real HTTP against the real local broker. Oracles: the broker's own
//! records (read from the beginning to the high watermark) and events written by hand.

use serde_json::json;
use zt_integration_tests::ingest::*;
use zt_model::*;

fn erp_order(id: &str, total: i64) -> serde_json::Value {
    json!({
        "event_id": id, "type": "order.paid", "occurred_at": "2026-01-05T10:00:00+08:00",
        "order_id": format!("SO-{id}"), "customer_id": "C1001", "mobile": "138 1234 5678",
        "channel": "tmall", "currency": "CNY", "total": total, "discount": 500,
        "lines": [{"sku": "SKU-1", "product_name": "保温杯", "quantity": 2, "unit_price": 9900}]
    })
}

/// A mixed batch: the accepted items come back from Kafka exactly as the canonical events
/// written here by hand, the rejected ones as dead letters with reason and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_batch_reads_back_exactly() {
    let ing = start(ingest_config()).await;
    let body = json!([
        erp_order("o-1", 19300),
        {"type": "order.paid", "occurred_at": "2026-01-05T10:00:00+08:00", "order_id": "SO-x"},
        {"type": "order.paid", "occurred_at": "2026-01-05T10:00:00+08:00", "order_id": "SO-y", "total": "abc"},
        {"type": "order.shipped", "occurred_at": "2026-01-05T10:00:00+08:00"},
        erp_order("o-2", 100),
    ]);
    let r = ing
        .post(
            "/v1/sources/erp/events",
            Some(&key_of(Source::Erp)),
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted"], 2);
    let rejected: Vec<(u64, &str, &str)> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["reason"].as_str().unwrap(),
                x["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "missing_field", "total"),
            (2, "invalid_value", "total"),
            (3, "unknown_event_type", "type"),
        ]
    );

    let stamped = ing.stamped_events(Source::Erp);
    // Each record is stamped with its request's receive time (`Sending::at`).
    for (ev, timestamp) in &stamped {
        assert_eq!(*timestamp, Some(ev.received_at), "{}", ev.event_id);
    }
    let events: Vec<Event> = stamped.into_iter().map(|(ev, _)| ev).collect();
    assert_eq!(
        events.len(),
        2,
        "exactly the accepted events are on the topic"
    );
    let got = events.iter().find(|e| e.event_id == "o-1").unwrap();
    let hasher = zt_model::pii::PiiHasher::new(SALT.as_bytes(), "86").unwrap();
    let want = Event {
        event_id: "o-1".into(),
        event_type: "order.paid".into(),
        source: Source::Erp,
        source_event_id: Some("o-1".into()),
        occurred_at: 1_767_578_400_000, // 2026-01-05T02:00:00Z
        sent_at: None,
        received_at: got.received_at,
        event_time: 1_767_578_400_000,
        identities: Identities {
            crm_customer_id: Some("C1001".into()),
            phone_hash: Some(hasher.hash_normalized("+8613812345678")),
            order_id: Some("SO-o-1".into()),
            ..Default::default()
        },
        context: Context {
            channel: Some("tmall".into()),
            ..Default::default()
        },
        payload: Payload::Order(OrderPayload {
            order_id: "SO-o-1".into(),
            status: "paid".into(),
            currency: "CNY".into(),
            subtotal_minor: 19_800,
            discount_minor: 500,
            shipping_minor: 0,
            total_minor: 19_300,
            lines: vec![OrderLine {
                line_no: 1,
                sku: "SKU-1".into(),
                product_name: Some("保温杯".into()),
                quantity: 2,
                unit_price_minor: 9_900,
                ..Default::default()
            }],
            ..Default::default()
        }),
        person_id: None,
    };
    assert_eq!(got, &want);
    assert!((got.received_at - now_ms()).abs() < 60_000);

    let dls = ing.dead_letters();
    assert_eq!(dls.len(), 3);
    let reasons: Vec<(&str, Option<&str>)> = dls
        .iter()
        .map(|d| (d.reason.as_str(), d.field.as_deref()))
        .collect();
    for want in [
        ("missing_field", Some("total")),
        ("invalid_value", Some("total")),
        ("unknown_event_type", Some("type")),
    ] {
        assert!(reasons.contains(&want), "{want:?} in {reasons:?}");
    }
    for d in &dls {
        assert_eq!((d.stage.as_str(), d.source.as_str()), ("ingest", "erp"));
        let orig: serde_json::Value = serde_json::from_slice(&d.original).unwrap();
        assert_eq!(
            orig["type"].as_str().map(|t| t.starts_with("order.")),
            Some(true)
        );
    }
    ing.shutdown.trigger();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (path, key, body, status, reason, whether the reason is per item).
type Case<'a> = (&'a str, Option<String>, Vec<u8>, u16, &'a str, bool);

/// Every bad-input class: its status, its reason, and its dead letter on the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_class_is_answered_and_dead_lettered() {
    let mut cfg = ingest_config();
    cfg.max_event_bytes = 2_000;
    cfg.max_batch_bytes = 20_000;
    cfg.max_batch_events = 5;
    let svc = cfg.sources.get_mut("service").unwrap();
    svc.rate_limit_per_sec = 1;
    svc.rate_limit_burst = 2;
    let ing = start(cfg).await;
    let erp = key_of(Source::Erp);
    let big_item = json!({"type": "order.paid", "pad": "x".repeat(3_000)});
    let many: Vec<_> = (0..6).map(|i| erp_order(&format!("m{i}"), 1)).collect();
    let huge = json!([{"pad": "y".repeat(25_000)}]);
    let ticket = json!({"type": "ticket.opened", "occurred_at": "2026-01-05T10:00:00+08:00", "ticket_id": "T1"});
    // (path, key, body, status, reason, per-item?)
    let cases: Vec<Case<'_>> = vec![
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            b"[{\"type\":".to_vec(),
            400,
            "malformed_json",
            false,
        ),
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            json!([{"type": ["order.paid"]}]).to_string().into_bytes(),
            200,
            "wrong_type",
            true,
        ),
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            json!([{"type": "order.paid"}]).to_string().into_bytes(),
            200,
            "missing_field",
            true,
        ),
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            json!([big_item]).to_string().into_bytes(),
            200,
            "oversize_event",
            true,
        ),
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            huge.to_string().into_bytes(),
            413,
            "oversize_batch",
            false,
        ),
        (
            "/v1/sources/erp/events",
            Some(erp.clone()),
            json!(many).to_string().into_bytes(),
            413,
            "oversize_batch",
            false,
        ),
        (
            "/v1/sources/pos/events",
            Some(erp.clone()),
            b"[]".to_vec(),
            404,
            "unknown_source",
            false,
        ),
        (
            "/v1/sources/erp/events",
            Some("not-a-key".into()),
            b"[]".to_vec(),
            401,
            "bad_key",
            false,
        ),
        (
            "/v1/sources/erp/events",
            None,
            b"[]".to_vec(),
            401,
            "bad_key",
            false,
        ),
        (
            "/v1/sources/erp/events",
            Some(key_of(Source::Crm)),
            b"[]".to_vec(),
            403,
            "wrong_source_key",
            false,
        ),
    ];
    let mut expected_dlq = Vec::new();
    for (path, key, body, status, reason, per_item) in &cases {
        let r = ing.post(path, key.as_deref(), body).await;
        assert_eq!(r.status, *status, "{reason}: {}", r.body);
        let j = r.json();
        let got = if *per_item {
            j["rejected"][0]["reason"].as_str().map(str::to_owned)
        } else {
            j["error"]["reason"].as_str().map(str::to_owned)
        };
        assert_eq!(got.as_deref(), Some(*reason), "{}", r.body);
        expected_dlq.push(*reason);
    }
    // Rate limit: a burst of 2 events, then 429 with Retry-After.
    let svc_key = key_of(Source::Service);
    let two = json!([ticket, ticket]).to_string();
    assert_eq!(
        ing.post("/v1/sources/service/events", Some(&svc_key), two.as_bytes())
            .await
            .status,
        200
    );
    let r = ing
        .post("/v1/sources/service/events", Some(&svc_key), two.as_bytes())
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["reason"], "rate_limited");
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().unwrap() >= 1)
    );
    expected_dlq.push("rate_limited");

    let mut got: Vec<String> = ing.dead_letters().into_iter().map(|d| d.reason).collect();
    got.sort();
    expected_dlq.sort();
    assert_eq!(
        got, expected_dlq,
        "one dead letter per refused input, nothing else"
    );
    // Nothing accepted was published for the refused requests: only the 2 tickets.
    assert_eq!(ing.events(Source::Erp).len(), 0);
    assert_eq!(
        ing.events(Source::Service).len(),
        1,
        "the duplicate ticket is published once"
    );
    ing.shutdown.trigger();
}

/// A repeated message id inside the window is acknowledged and published once; the same
/// check with dedup off publishes twice (negative control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_ids_are_published_once() {
    for (window, want) in [(86_400, 1), (0, 2)] {
        let mut cfg = ingest_config();
        cfg.dedup_window_secs = window;
        let ing = start(cfg).await;
        let body = json!([erp_order("dup-1", 100)]).to_string();
        for _ in 0..2 {
            let r = ing
                .post(
                    "/v1/sources/erp/events",
                    Some(&key_of(Source::Erp)),
                    body.as_bytes(),
                )
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["accepted"], 1);
        }
        assert_eq!(ing.events(Source::Erp).len(), want, "dedup window {window}");
        ing.shutdown.trigger();
    }
}

/// A client that retries after ingest crashed (the broker had the events, the 200 never
/// left) is deduplicated by the restarted ingest, which read the ids of the last hour back
/// from the event topics. Negative control: with `dedup_restore_secs = 0` the restarted
/// ingest publishes the retried events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ingest_still_recognises_ids_published_before() {
    for (restore_secs, want) in [(3_600, 2), (0, 4)] {
        let kafka = zt_integration_tests::kafka_config();
        let topics = fresh_topics(&kafka, 2).await;
        let body = json!([erp_order("r-1", 100), erp_order("r-2", 200)]).to_string();
        let mut cfg = ingest_config();
        cfg.dedup_restore_secs = restore_secs;
        for run in 0..2 {
            let ing = start_with(cfg.clone(), kafka.clone(), topics.clone()).await;
            let r = ing
                .post(
                    "/v1/sources/erp/events",
                    Some(&key_of(Source::Erp)),
                    body.as_bytes(),
                )
                .await;
            assert_eq!(r.status, 200, "run {run}: {}", r.body);
            assert_eq!(r.json()["accepted"], 2);
            ing.shutdown.trigger();
            if run == 1 {
                assert_eq!(
                    ing.events(Source::Erp).len(),
                    want,
                    "dedup_restore_secs {restore_secs}"
                );
            }
        }
    }
}

/// Raw phones and e-mails never reach Kafka: not in events, not in dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pii_never_reaches_kafka() {
    let ing = start(ingest_config()).await;
    let phone = "13987654321";
    let email = "wang.fang@example.cn";
    let crm = json!([
        {"type": "customer.registered", "occurred_at": "2026-01-05T10:00:00+08:00",
         "customer_id": "C9", "mobile": phone, "email": email},
        {"type": "customer.registered", "occurred_at": "not a time",
         "customer_id": "C10", "mobile": phone, "email": email},
    ])
    .to_string();
    let r = ing
        .post(
            "/v1/sources/crm/events",
            Some(&key_of(Source::Crm)),
            crm.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let track = json!({"userId": "u9", "type": "identify", "traits": {"email": email, "phone": phone, "name": "王芳", "plan": "gold"}});
    let r = ing
        .post(
            "/v1/identify",
            Some(&key_of(Source::Tracking)),
            track.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(phone) && !r.body.contains(email));

    let mut all = Vec::new();
    for t in [
        ing.topics.events(Source::Crm),
        ing.topics.events(Source::Tracking),
        ing.topics.dlq(),
    ] {
        for (k, v, _, _) in ing.records(&t) {
            all.extend(k);
            all.extend(v);
        }
    }
    assert!(!all.is_empty());
    let text = String::from_utf8_lossy(&all);
    // Control: the oracle would see them if they were there.
    assert!(String::from_utf8_lossy(crm.as_bytes()).contains(phone));
    for needle in [phone, email, "王芳", "+8613987654321"] {
        assert!(!text.contains(needle), "{needle} leaked to Kafka");
    }
    let ev = ing.events(Source::Tracking).pop().unwrap();
    let hasher = zt_model::pii::PiiHasher::new(SALT.as_bytes(), "86").unwrap();
    assert_eq!(
        ev.identities.email_hash,
        Some(hasher.hash_normalized(email))
    );
    assert_eq!(
        ev.identities.phone_hash,
        Some(hasher.hash_normalized("+8613987654321"))
    );
    let Payload::Tracking(t) = &ev.payload else {
        panic!("tracking payload")
    };
    assert_eq!(t.traits_json, r#"{"plan":"gold"}"#);
    // The dead letter keeps the identity as its salted hash, so a replay still resolves it.
    let dl = ing.dead_letters().pop().unwrap();
    let orig: serde_json::Value = serde_json::from_slice(&dl.original).unwrap();
    assert_eq!(
        orig["mobile"],
        format!("zt-hashed:{}", hasher.hash_normalized("+8613987654321"))
    );
    ing.shutdown.trigger();
}

/// Segment calls and a batch with batch-level context: the events Kafka holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_calls_and_batch() {
    let ing = start(ingest_config()).await;
    let key = key_of(Source::Tracking);
    let track = json!({
        "messageId": "m-track-1", "anonymousId": "anon-1", "event": "Product Added",
        "properties": {"product_id": "P1", "sku": "SKU-1", "price": 99.9, "quantity": 2, "currency": "CNY"},
        "context": {"campaign": {"source": "douyin", "medium": "cpc", "name": "ny2026"}},
        "timestamp": "2026-01-05T02:00:00.000Z"
    });
    let r = ing
        .post("/v1/track", Some(&key), track.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Body writeKey instead of Basic auth, and a batch whose context fills the items'.
    let batch = json!({
        "writeKey": key,
        "context": {"channel": "wechat_group", "device": {"type": "mobile"}},
        "sentAt": "2026-01-05T02:00:10.000Z",
        "batch": [
            {"type": "page", "messageId": "m-page-1", "userId": "u1", "name": "Home",
             "properties": {"url": "https://shop.example/", "path": "/"},
             "originalTimestamp": "2026-01-05T02:00:00.000Z"},
            {"type": "track", "messageId": "m-exp-1", "userId": "u1", "event": "Experiment Viewed",
             "properties": {"experiment_id": "checkout-v2", "variation_name": "treatment"}},
            {"type": "alias", "messageId": "m-alias-1", "userId": "u1", "previousId": "anon-1"},
            {"type": "track", "messageId": "m-bad-1", "userId": "u1"},
            {"type": "group", "messageId": "m-bad-2", "anonymousId": "a"},
            {"type": "identify", "messageId": "m-bad-3"}
        ]
    });
    let r = ing
        .post("/v1/batch", None, batch.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted"], 3);
    let fields: Vec<&str> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["event", "groupId", "userId"]);

    let stamped = ing.stamped_events(Source::Tracking);
    for (ev, timestamp) in &stamped {
        assert_eq!(*timestamp, Some(ev.received_at), "{}", ev.event_id);
    }
    let events: Vec<Event> = stamped.into_iter().map(|(ev, _)| ev).collect();
    assert_eq!(events.len(), 4);
    let by_id = |id: &str| events.iter().find(|e| e.event_id == id).unwrap();
    let t = by_id("m-track-1");
    assert_eq!(t.event_type, "track");
    assert_eq!(t.context.utm_source.as_deref(), Some("douyin"));
    assert_eq!(t.context.channel.as_deref(), Some("douyin"));
    let Payload::Tracking(p) = &t.payload else {
        panic!()
    };
    assert_eq!(p.name.as_deref(), Some("Product Added"));
    assert_eq!((p.price_minor, p.quantity), (Some(9_990), Some(2)));
    let page = by_id("m-page-1");
    assert_eq!(page.context.channel.as_deref(), Some("wechat_group"));
    assert!(
        page.context.private_domain,
        "wechat_group is a private-domain channel"
    );
    assert_eq!(page.context.device_type.as_deref(), Some("mobile"));
    assert_eq!(page.sent_at, Some(1_767_578_410_000));
    // Skew: sent 10 s after the event by the device clock; corrected by receive time.
    assert_eq!(
        page.event_time,
        page.occurred_at + (page.received_at - 1_767_578_410_000)
    );
    let exp = by_id("m-exp-1");
    assert_eq!(
        exp.context.experiments,
        vec![ExperimentAssignment {
            experiment_id: "checkout-v2".into(),
            variant: "treatment".into()
        }]
    );
    let alias = by_id("m-alias-1");
    let Payload::Tracking(a) = &alias.payload else {
        panic!()
    };
    assert_eq!(a.previous_id.as_deref(), Some("anon-1"));
    assert_eq!(ing.dead_letters().len(), 3);
    ing.shutdown.trigger();
}

/// The schema registry read endpoints serve the catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_registry_reads() {
    let ing = start(ingest_config()).await;
    let get = |p: String| request(ing.addr, "GET", Box::leak(p.into_boxed_str()), &[], b"");
    let subject = format!("{}-value", ing.topics.events(Source::Erp));
    let r = get("/subjects".into()).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == subject.as_str())
    );
    let r = get(format!("/subjects/{subject}/versions/latest")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let latest = r.json();
    let id = latest["id"].as_u64().unwrap() as u32;
    assert_eq!(id, Catalogue::builtin().latest("zt.Event").unwrap().id);
    let r = get(format!("/schemas/ids/{id}")).await;
    let schema = apache_avro_schema(r.json()["schema"].as_str().unwrap());
    assert!(schema.contains("\"name\":\"zt.Event\"") || schema.contains("zt.Event"));
    assert_eq!(
        get(format!("/subjects/{subject}/versions")).await.json(),
        json!([1, 2])
    );
    assert_eq!(
        get("/schemas/ids/7".into()).await.json()["error_code"],
        40403
    );
    assert_eq!(
        get("/subjects/nope-value/versions".into()).await.json()["error_code"],
        40401
    );
    assert_eq!(
        get(format!("/subjects/{subject}/versions/9")).await.json()["error_code"],
        40402
    );
    ing.shutdown.trigger();
}

fn apache_avro_schema(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    format!(
        "{}.{}",
        v["namespace"].as_str().unwrap(),
        v["name"].as_str().unwrap()
    )
}

/// analytics.js: one-letter paths, the write key in a text/plain body, CORS preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdk_paths_and_cors() {
    let ing = start(ingest_config()).await;
    let pre = request(
        ing.addr,
        "OPTIONS",
        "/v1/t",
        &[
            ("Origin", "https://shop.example.cn"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(
        pre.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );

    let page = json!({"writeKey": key_of(Source::Tracking), "type": "page", "anonymousId": "web-1",
                      "messageId": "m-browser-page", "name": "Home",
                      "properties": {"url": "https://shop.example.cn/?utm_source=wechat"}});
    let r = request(
        ing.addr,
        "POST",
        "/v1/p",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://shop.example.cn"),
        ],
        page.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let batch = json!({"writeKey": key_of(Source::Tracking), "batch": [
        {"type": "track", "anonymousId": "web-1", "messageId": "m-browser-track", "event": "Product Viewed"}]});
    let r = request(
        ing.addr,
        "POST",
        "/v1/b",
        &[("Content-Type", "text/plain")],
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut kinds: Vec<(String, String)> = ing
        .events(Source::Tracking)
        .into_iter()
        .map(|e| (e.event_id, e.event_type))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("m-browser-page".to_owned(), "page".to_owned()),
            ("m-browser-track".to_owned(), "track".to_owned())
        ]
    );
    ing.shutdown.trigger();
}
