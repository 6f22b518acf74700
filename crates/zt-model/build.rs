//! Embeds every Avro schema under `schemas/avro/` (and superseded versions under
//! `schemas/avro/history/`) into the crate, so the catalogue is built from the files a user
//! reads and a new `.avsc` needs no code change to be served.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../../schemas/avro");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    for (dir, history) in [(root.clone(), false), (root.join("history"), true)] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("avsc") {
                continue;
            }
            println!("cargo:rerun-if-changed={}", path.display());
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let abs = fs::canonicalize(&path).unwrap();
            entries.push((history, file, abs));
        }
    }
    entries.sort();
    let mut out = String::from(
        "/// (is_history, file name, schema text), sorted.\npub(crate) static SCHEMA_FILES: &[(bool, &str, &str)] = &[\n",
    );
    for (history, file, abs) in entries {
        out.push_str(&format!(
            "    ({history}, {file:?}, include_str!({:?})),\n",
            abs.display().to_string()
        ));
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("schema_files.rs"),
        out,
    )
    .unwrap();
}
