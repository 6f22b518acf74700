//! Every input kept in `fuzz/regressions/<target>/` (what `make fuzz` found, each fixed)
//! and `fuzz/seeds/<target>/`, through the fuzz targets' own entry points
//! (`zt_model::fuzzing::wire_decode`, `zt_ingest::fuzzing::ingest_body`: no panic, and the
//! properties they assert).
//!
//! The inputs run in a child process whose address space is capped at 1.5 GB (`ulimit -v`):
//! the first finding was an allocation of 2.3 GB from a 510-byte message, which on a machine
//! with enough memory would otherwise pass unnoticed. Negative control: the same child run
//! on a synthetic 2 GB allocation must fail.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHILD: &str = "ZT_FUZZ_REGRESSION_CHILD";
const TARGETS: [&str; 2] = ["wire_decode", "ingest_body"];

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        out.extend(entries.flatten().map(|e| e.path()));
    }
    out.sort();
    out
}

fn run(target: &str, data: &[u8]) {
    match target {
        "wire_decode" => zt_model::fuzzing::wire_decode(data),
        "ingest_body" => zt_ingest::fuzzing::ingest_body(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Runs this test binary's `child` test in a child process under the memory cap.
fn run_capped(mode: &str) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary");
    Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 1500000 && exec "$0" child --exact --test-threads=1 --nocapture"#)
        .arg(exe)
        .env(CHILD, mode)
        .output()
        .expect("run the child")
}

#[test]
fn child() {
    match std::env::var(CHILD).as_deref() {
        Ok("control") => {
            // What the fixed bug did: one 2 GB allocation.
            let v: Vec<u8> = vec![1; 2 << 30];
            assert!(v.len() > 1);
        }
        Ok(target) if TARGETS.contains(&target) => {
            for path in inputs(target) {
                eprintln!("{}", path.display());
                run(target, &std::fs::read(&path).expect("read input"));
            }
        }
        _ => {} // run directly by the harness: nothing to do
    }
}

#[test]
fn every_kept_input_passes_under_a_memory_cap() {
    for target in TARGETS {
        assert!(
            inputs(target).len() >= 2,
            "the kept inputs of {target} are missing"
        );
        let out = run_capped(target);
        assert!(
            out.status.success(),
            "a kept input of {target} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let control = run_capped("control");
    assert!(
        !control.status.success(),
        "the memory cap does not catch a 2 GB allocation"
    );
}
