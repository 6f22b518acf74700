//! The broker goes away under a running ingest: no request gets a 2xx, `/readyz` reports
//! the broker, and after the broker is back nothing of the refused requests was published
//! (the retry then publishes each event once). Runs its own tansu on a free port with
//! durable SQLite storage, so the shared local broker is never disturbed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use zt_integration_tests::ingest::*;
use zt_integration_tests::kafka_config;
use zt_model::Source;

fn tansu_bin() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidate = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&candidate).exists() {
        candidate
    } else {
        "tansu".into()
    }
}

fn start_tansu(dir: &std::path::Path, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .current_dir(dir)
        .args([
            "broker",
            "--cluster-id",
            "zt-it-down",
            "--listener-url",
            &url,
        ])
        .args([
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "sqlite://tansu.db",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed by deploy/local/stack.sh");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn order(id: &str) -> serde_json::Value {
    json!({"event_id": id, "type": "order.created", "occurred_at": "2026-01-05T10:00:00+08:00",
           "order_id": format!("SO-{id}"), "customer_id": "C1", "total": 100})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_no_2xx_and_publishes_nothing_half_way() {
    zt_runtime::telemetry::init(&zt_runtime::LogConfig {
        format: zt_runtime::telemetry::LogFormat::Text,
        level: "warn,zt_ingest=debug".into(),
    });
    let dir = tempfile_dir();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = start_tansu(&dir, port);
    let mut kafka = kafka_config();
    kafka.bootstrap_servers = format!("127.0.0.1:{port}");
    kafka.producer.message_timeout_ms = 3_000;
    let topics = fresh_topics(&kafka, 1).await;
    let mut cfg = ingest_config();
    cfg.publish_timeout_ms = 3_000;
    let ing = start_with(cfg, kafka.clone(), topics).await;
    let key = key_of(Source::Erp);
    let path = "/v1/sources/erp/events";

    let r = ing
        .post(
            path,
            Some(&key),
            json!([order("before")]).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    broker.kill().unwrap();
    broker.wait().unwrap();
    let refused = json!([order("during-1"), order("during-2"), order("during-3")]).to_string();
    for _ in 0..3 {
        let r = ing.post(path, Some(&key), refused.as_bytes()).await;
        assert_eq!(r.status, 503, "no 2xx while the broker is down: {}", r.body);
        assert!(r.header("retry-after").is_some());
    }
    // The readiness probe notices within its interval.
    let deadline = Instant::now() + Duration::from_secs(15);
    while ing.health.ready().is_ok() {
        assert!(Instant::now() < deadline, "readiness reports the broker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut broker = start_tansu(&dir, port);
    // Give anything still queued in the producer the chance to arrive, were it there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ids = |ing: &TestIngest| {
        let mut v: Vec<String> = ing
            .events(Source::Erp)
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&ing),
        ["before"],
        "nothing of the refused requests was published"
    );

    // The client's retry succeeds once the broker is back, and publishes each event once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = ing.post(path, Some(&key), refused.as_bytes()).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "ingest recovers after the broker is back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ids(&ing), ["before", "during-1", "during-2", "during-3"]);
    ing.shutdown.trigger();
    broker.kill().unwrap();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(zt_integration_tests::unique("zt-it-tansu"));
    std::fs::create_dir_all(&d).unwrap();
    d
}
