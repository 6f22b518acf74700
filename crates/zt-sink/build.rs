//! Embeds every versioned ClickHouse DDL file of `schemas/clickhouse/` (`NNNN_name.sql`)
//! into the crate, so `zt migrate` needs no files next to the binary; `--dir` still reads a
//! directory instead.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../../schemas/clickhouse");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    if let Ok(rd) = fs::read_dir(&root) {
        for e in rd {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("sql") {
                continue;
            }
            println!("cargo:rerun-if-changed={}", path.display());
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            entries.push((file, fs::canonicalize(&path).unwrap()));
        }
    }
    entries.sort();
    let mut out = String::from(
        "/// (file name, DDL text), sorted by name.\npub(crate) static DDL_FILES: &[(&str, &str)] = &[\n",
    );
    for (file, abs) in entries {
        out.push_str(&format!(
            "    ({file:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("ddl_files.rs"),
        out,
    )
    .unwrap();
}
