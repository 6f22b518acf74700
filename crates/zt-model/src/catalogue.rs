//! The schema catalogue: every Avro schema under `schemas/avro/`, embedded at build time,
//! with a stable id.
//!
//! - **Id**: the low 31 bits of the schema's CRC-64-AVRO (Rabin) fingerprint over its
//!   Parsing Canonical Form, as the Avro specification defines both. The same schema text
//!   gets the same id in every build and every deployment without a registry to keep in
//!   sync; doc strings and field order of JSON keys do not change it, a type change does.
//! - **Versions**: `schemas/avro/<name>.avsc` is the current version of a schema. When a
//!   schema evolves, its previous text is kept as `schemas/avro/history/<name>.v<N>.avsc`
//!   so that records written with an old id stay readable; the current file is then version
//!   N+1. Decoding resolves the writer's version against the current one (Avro schema
//!   resolution), which the evolution check keeps BACKWARD_TRANSITIVE compatible.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));

/// One version of one schema.
#[derive(Debug)]
pub struct SchemaEntry {
    /// Stable id written after the magic byte.
    pub id: u32,
    /// Full name of the top-level record, e.g. `zt.Event`.
    pub full_name: String,
    /// File the schema came from, relative to `schemas/avro/`.
    pub file: String,
    /// 1-based version among the schema's versions.
    pub version: u32,
    /// True for the current version.
    pub latest: bool,
    /// The schema text as committed.
    pub text: String,
    /// The parsed schema.
    pub schema: Schema,
}

/// All schemas, by id and by full name.
#[derive(Debug)]
pub struct Catalogue {
    entries: Vec<SchemaEntry>,
    by_id: HashMap<u32, usize>,
    /// Full name to the current version's entry: a handful of names, found by comparing
    /// them (every record encoded looks its schema up here; hashing the name with
    /// SipHash cost more than comparing it).
    latest: Vec<(String, usize)>,
}

/// The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.
pub fn rabin_fingerprint(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut b = [0u8; 8];
    b.copy_from_slice(&fp.bytes[..8]);
    u64::from_le_bytes(b)
}

/// The catalogue id of a schema: the low 31 bits of its Rabin fingerprint.
pub fn schema_id(schema: &Schema) -> u32 {
    (rabin_fingerprint(schema) & 0x7fff_ffff) as u32
}

impl Catalogue {
    /// The catalogue of the schemas embedded in this build.
    pub fn builtin() -> &'static Catalogue {
        static CAT: OnceLock<Catalogue> = OnceLock::new();
        CAT.get_or_init(|| {
            // The embedded files are checked by this crate's tests; a failure here is a
            // broken build, not bad input.
            Catalogue::from_files(SCHEMA_FILES).expect("embedded Avro schemas are valid")
        })
    }

    /// Builds a catalogue from `(is_history, file name, text)` triples.
    pub fn from_files(files: &[(bool, &str, &str)]) -> Result<Catalogue> {
        // name stem -> [(version, is_history, file, text)]
        let mut by_stem: HashMap<String, Vec<(u32, &str, &str)>> = HashMap::new();
        for &(history, file, text) in files {
            let (stem, version) = if history {
                parse_history_name(file).ok_or_else(|| Error::Schema {
                    file: format!("history/{file}"),
                    message: "history files are named <name>.v<N>.avsc".into(),
                })?
            } else {
                (file.trim_end_matches(".avsc").to_owned(), u32::MAX)
            };
            by_stem.entry(stem).or_default().push((version, file, text));
        }
        let mut entries = Vec::new();
        let mut stems: Vec<_> = by_stem.into_iter().collect();
        stems.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, mut versions) in stems {
            versions.sort_by_key(|v| v.0);
            let n = versions.len();
            let mut full_name: Option<String> = None;
            for (i, (v, file, text)) in versions.into_iter().enumerate() {
                let rel = if v == u32::MAX {
                    file.to_owned()
                } else {
                    format!("history/{file}")
                };
                let schema = Schema::parse_str(text).map_err(|e| Error::Schema {
                    file: rel.clone(),
                    message: e.to_string(),
                })?;
                let name = match &schema {
                    Schema::Record(r) => r.name.fullname(None),
                    _ => {
                        return Err(Error::Schema {
                            file: rel,
                            message: "top-level schema must be a record".into(),
                        });
                    }
                };
                if let Some(prev) = &full_name
                    && prev != &name
                {
                    return Err(Error::Schema {
                        file: rel,
                        message: format!("renames {prev} to {name}; keep the full name"),
                    });
                }
                full_name = Some(name.clone());
                entries.push(SchemaEntry {
                    id: schema_id(&schema),
                    full_name: name,
                    file: rel,
                    version: (i + 1) as u32,
                    latest: i + 1 == n,
                    text: text.to_owned(),
                    schema,
                });
            }
        }
        let mut by_id = HashMap::new();
        let mut latest: Vec<(String, usize)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if let Some(&j) = by_id.get(&e.id) {
                let other: &SchemaEntry = &entries[j];
                // Identical canonical forms in two versions are one schema; anything else
                // is a 31-bit collision that must be resolved by hand.
                if other.schema.canonical_form() != e.schema.canonical_form() {
                    return Err(Error::Schema {
                        file: e.file.clone(),
                        message: format!("schema id {} collides with {}", e.id, other.file),
                    });
                }
            }
            by_id.insert(e.id, i);
            if e.latest {
                if latest.iter().any(|(name, _)| *name == e.full_name) {
                    return Err(Error::Schema {
                        file: e.file.clone(),
                        message: format!("two current files define {}", e.full_name),
                    });
                }
                latest.push((e.full_name.clone(), i));
            }
        }
        Ok(Catalogue {
            entries,
            by_id,
            latest,
        })
    }

    /// Every version of every schema, grouped by schema and ordered by version.
    pub fn entries(&self) -> &[SchemaEntry] {
        &self.entries
    }

    /// The version with this id.
    pub fn by_id(&self, id: u32) -> Result<&SchemaEntry> {
        self.by_id
            .get(&id)
            .map(|&i| &self.entries[i])
            .ok_or(Error::UnknownSchemaId(id))
    }

    /// The current version of a schema by full name.
    pub fn latest(&self, full_name: &str) -> Result<&SchemaEntry> {
        self.latest
            .iter()
            .find(|(name, _)| name == full_name)
            .map(|&(_, i)| &self.entries[i])
            .ok_or_else(|| Error::UnknownSchema(full_name.to_owned()))
    }

    /// Every version of a schema by full name, oldest first.
    pub fn versions<'a>(&'a self, full_name: &'a str) -> impl Iterator<Item = &'a SchemaEntry> {
        self.entries
            .iter()
            .filter(move |e| e.full_name == full_name)
    }
}

fn parse_history_name(file: &str) -> Option<(String, u32)> {
    let base = file.strip_suffix(".avsc")?;
    let (stem, v) = base.rsplit_once(".v")?;
    Some((stem.to_owned(), v.parse().ok().filter(|&n| n > 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_event_and_dead_letter() {
        let cat = Catalogue::builtin();
        let ev = cat.latest("zt.Event").unwrap();
        assert_eq!(ev.file, "event.avsc");
        assert!(ev.latest);
        assert_eq!(cat.by_id(ev.id).unwrap().full_name, "zt.Event");
        assert!(cat.latest("zt.DeadLetter").is_ok());
        assert!(matches!(
            cat.latest("zt.Nope"),
            Err(Error::UnknownSchema(_))
        ));
    }

    #[test]
    fn id_ignores_docs_but_not_types() {
        let a = Schema::parse_str(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":"long","doc":"one"}]}"#,
        )
        .unwrap();
        let b = Schema::parse_str(
            r#"{"name":"A","type":"record","fields":[{"type":"long","name":"x","doc":"two"}]}"#,
        )
        .unwrap();
        let c = Schema::parse_str(
            r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#,
        )
        .unwrap();
        assert_eq!(schema_id(&a), schema_id(&b));
        assert_ne!(schema_id(&a), schema_id(&c));
    }

    #[test]
    fn history_versions_are_ordered_and_readable() {
        let v1 = r#"{"type":"record","name":"T","namespace":"zt","fields":[{"name":"a","type":"string"}]}"#;
        let v2 = r#"{"type":"record","name":"T","namespace":"zt","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0}]}"#;
        let cat = Catalogue::from_files(&[(false, "t.avsc", v2), (true, "t.v1.avsc", v1)]).unwrap();
        let versions: Vec<_> = cat
            .versions("zt.T")
            .map(|e| (e.version, e.latest))
            .collect();
        assert_eq!(versions, vec![(1, false), (2, true)]);
        assert_eq!(cat.latest("zt.T").unwrap().file, "t.avsc");
        let bad = Catalogue::from_files(&[(true, "t.avsc", v1)]).unwrap_err();
        assert!(bad.to_string().contains("history/t.avsc"), "{bad}");
    }
}
