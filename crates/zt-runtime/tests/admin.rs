//! The admin server over real HTTP on a loopback port: metrics exposition, liveness,
//! readiness with the failing checks named, and graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_runtime::admin::{AdminConfig, serve};
use zt_runtime::{Health, Metrics, Shutdown};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn metrics_livez_readyz_and_shutdown() {
    let metrics = Metrics::new("test");
    let counter = prometheus::IntCounter::new("zt_test_things_total", "things").unwrap();
    metrics
        .registry()
        .register(Box::new(counter.clone()))
        .unwrap();
    counter.inc_by(3);
    let health = Health::new();
    let broker = health.register("kafka");
    let shutdown = Shutdown::new();
    let cfg = AdminConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let server = serve(&cfg, metrics, health.clone(), shutdown.clone())
        .await
        .unwrap();

    let (st, body) = get(server.addr, "/metrics").await;
    assert_eq!(st, 200);
    assert!(body.contains("zt_test_things_total 3"), "{body}");
    assert!(body.contains("zt_build_info{component=\"test\""), "{body}");

    assert_eq!(get(server.addr, "/livez").await.0, 200);
    let (st, body) = get(server.addr, "/readyz").await;
    assert_eq!(st, 503);
    assert!(body.contains("\"kafka\":\"starting\""), "{body}");
    broker.set_ready();
    assert_eq!(get(server.addr, "/readyz").await, (200, "ready".to_owned()));
    health.mark_dead("consumer loop ended");
    assert_eq!(get(server.addr, "/livez").await.0, 503);
    assert_eq!(get(server.addr, "/nope").await.0, 404);

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("server stops after shutdown")
        .unwrap()
        .unwrap();
}
