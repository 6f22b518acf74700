//! Fetches the report from a live ClickHouse and prints it; a manual check that every
//! query parses on the server (the end-to-end demo test covers it automatically).
//!
//! ```sh
//! ZT_REPORT_URL=http://127.0.0.1:8123 ZT_REPORT_DATABASE=zhongtai \
//!     cargo run -p zt-report --example report_live [-- report.html]
//! ```
//!
//! Exits with status 1 when a section's query failed.

use zt_sink::ClickHouseConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let ch = ClickHouseConfig {
        url: env("ZT_REPORT_URL", "http://127.0.0.1:8123"),
        database: env("ZT_REPORT_DATABASE", "zhongtai"),
        user: env("ZT_REPORT_USER", "default"),
        password: zt_runtime::Secret::new(env("ZT_REPORT_PASSWORD", "")),
        cluster: String::new(),
    };
    let report = zt_report::fetch(&ch).await?;
    print!("{}", zt_report::render_text(&report));
    if let Some(path) = std::env::args().nth(1) {
        std::fs::write(&path, zt_report::render_html(&report))?;
        eprintln!("wrote {path}");
    }
    let errors = report.errors();
    for (view, e) in &errors {
        eprintln!("query of {view} failed: {e}");
    }
    if !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
