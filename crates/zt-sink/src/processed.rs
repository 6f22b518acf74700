//! The processors' JSON topics (`crates/zt-process/src/records.rs`) and their rows:
//!
//! | topic | record | table | `version` |
//! |---|---|---|---|
//! | `<prefix>.identity.links` (compacted) | `IdentityLink` | `identity_links` | the record's `version` |
//! | `<prefix>.profiles` (compacted) | `ProfileSnapshot` | `profiles` | the record's `version` (its Kafka offset when absent or 0) |
//! | `<prefix>.identity.merges` | `IdentityMerge` | `identity_merges` | the record's `version` |
//! | `<prefix>.funnels` | `FunnelRow` / `ExperimentRow` (`crates/zt-process/src/funnel.rs`), by `kind` | `funnel_progress` / `experiment_progress` | the record's `version` |
//!
//! A profile's version is the snapshot's own `version` (the profiles processor's write
//! clock, which also outranks late writes of a crashed owner); snapshots written before
//! the field existed fall back to their offset, which orders one partition. Values are read
//! field by field from a JSON object so that an error names the field; unknown fields are
//! ignored (a newer processor may add some). A record without a value (a compaction
//! tombstone) has no row.

use clickhouse::Row;
use serde::Serialize;
use serde_json::{Map, Value};
use zt_kafka::TopicsConfig;

use crate::rows::{MapError, Origin, Rows};

/// What a consumed topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// `zt.Event` (Avro): the source topics and `<prefix>.events.resolved`.
    Events,
    /// `<prefix>.identity.links`: `IdentityLink` JSON.
    IdentityLinks,
    /// `<prefix>.profiles`: `ProfileSnapshot` JSON.
    Profiles,
    /// `<prefix>.identity.merges`: `IdentityMerge` JSON.
    IdentityMerges,
    /// `<prefix>.funnels`: `FunnelRow` (`"kind":"funnel"`) or `ExperimentRow`
    /// (`"kind":"experiment"`) JSON.
    Funnels,
}

impl TopicKind {
    /// The kind of `topic` under the configured topic names: the processed topics by
    /// name, everything else events.
    pub fn of(topic: &str, topics: &TopicsConfig) -> Self {
        if topic == topics.identity_links() {
            TopicKind::IdentityLinks
        } else if topic == topics.profiles() {
            TopicKind::Profiles
        } else if topic == topics.identity_merges() {
            TopicKind::IdentityMerges
        } else if topic == topics.funnels() {
            TopicKind::Funnels
        } else {
            TopicKind::Events
        }
    }

    /// The tables (indexes into [`crate::TABLES`]) records of this kind feed. The first is
    /// the one a tombstone is counted for (`rows_skipped`).
    pub fn tables(self) -> &'static [usize] {
        match self {
            TopicKind::Events => &[0, 1, 2, 3, 4, 5, 6],
            TopicKind::IdentityLinks => &[7],
            TopicKind::Profiles => &[8],
            TopicKind::IdentityMerges => &[9],
            TopicKind::Funnels => &[10, 11],
        }
    }
}

/// `identity_links` (`schemas/clickhouse/0007`).
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct IdentityLinkRow {
    pub id_type: String,
    pub id_value: String,
    pub person_id: String,
    pub version: u64,
    pub linked_at_ms: i64,
    pub deleted: u8,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

/// `profiles` (`schemas/clickhouse/0008` and `0010`).
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct ProfileRow {
    pub person_id: String,
    pub version: u64,
    pub updated_at_ms: i64,
    pub crm_customer_id: String,
    pub user_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
    pub phone_hash: String,
    pub email_hash: String,
    pub first_seen_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub acquisition_channel: String,
    pub acquisition_campaign: String,
    pub first_order_at_ms: Option<i64>,
    pub last_order_at_ms: Option<i64>,
    pub paid_orders: u32,
    pub paid_total_minor: i64,
    pub refunded_minor: i64,
    pub currency: String,
    pub tier: String,
    pub points_balance: Option<i64>,
    pub province: String,
    pub city: String,
    pub private_domain: u8,
    pub traits_json: String,
    pub merged_into: String,
    pub net_ltv_minor: i64,
    pub aov_minor: i64,
    pub repurchase: u8,
    pub avg_days_between_orders: Option<f64>,
    pub last_order_id: String,
    pub last_order_status: String,
    pub last_shipment_status: String,
    pub tickets: u32,
    pub complaints: u32,
    pub csat_ratings: u32,
    pub csat_avg: Option<f64>,
    pub consents_granted: Vec<String>,
    pub consents_denied: Vec<String>,
    pub rfm_r: u8,
    pub rfm_f: u8,
    pub rfm_m: u8,
    pub rfm_segment: String,
    pub high_value: u8,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

/// `identity_merges` (`schemas/clickhouse/0010`).
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct IdentityMergeRow {
    pub from_person: String,
    pub into_person: String,
    pub version: u64,
    pub merged_at_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

/// `funnel_progress` (`schemas/clickhouse/0011`): a `FunnelRow` of `<prefix>.funnels`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct FunnelProgressRow {
    pub funnel_id: String,
    pub person_id: String,
    pub level: u8,
    pub entry_at_ms: i64,
    pub channel: String,
    pub campaign: String,
    pub device: String,
    pub experiment_id: String,
    pub variant: String,
    pub version: u64,
    pub deleted: u8,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

/// `experiment_progress` (`schemas/clickhouse/0011`): an `ExperimentRow` of
/// `<prefix>.funnels`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct ExperimentProgressRow {
    pub experiment_id: String,
    pub person_id: String,
    pub variant: String,
    pub exposed_at_ms: i64,
    pub converted: u8,
    pub converted_at_ms: i64,
    pub version: u64,
    pub deleted: u8,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

/// Why a processed record has no row: not JSON / not an object (`decode_failed`), or a
/// field missing or of the wrong type (`unmappable`, naming the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The value is not a JSON object.
    Decode(String),
    /// A field is missing, of the wrong type or out of range.
    Map(MapError),
}

struct Obj<'a>(&'a Map<String, Value>);

fn bad(field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError::Map(MapError {
        field,
        reason: reason.into(),
    })
}

impl Obj<'_> {
    fn get(&self, f: &'static str) -> Result<&Value, RecordError> {
        self.0.get(f).ok_or_else(|| bad(f, "missing"))
    }
    fn string(&self, f: &'static str) -> Result<String, RecordError> {
        match self.get(f)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(bad(f, format!("expected a string, got {v}"))),
        }
    }
    fn nonempty(&self, f: &'static str) -> Result<String, RecordError> {
        let s = self.string(f)?;
        if s.is_empty() {
            return Err(bad(f, "empty"));
        }
        Ok(s)
    }
    fn int<T: TryFrom<i64> + TryFrom<u64>>(&self, f: &'static str) -> Result<T, RecordError> {
        let v = self.get(f)?;
        let out = if let Some(u) = v.as_u64() {
            T::try_from(u).ok()
        } else if let Some(i) = v.as_i64() {
            T::try_from(i).ok()
        } else {
            return Err(bad(f, format!("expected an integer, got {v}")));
        };
        out.ok_or_else(|| bad(f, format!("{v} is out of range")))
    }
    fn opt_int(&self, f: &'static str) -> Result<Option<i64>, RecordError> {
        match self.0.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.int(f).map(Some),
        }
    }
    fn opt_f64(&self, f: &'static str) -> Result<Option<f64>, RecordError> {
        match self.0.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(f, format!("expected a number, got {v}"))),
        }
    }
    fn flag(&self, f: &'static str) -> Result<u8, RecordError> {
        match self.get(f)? {
            Value::Bool(b) => Ok(u8::from(*b)),
            v => Err(bad(f, format!("expected true or false, got {v}"))),
        }
    }
    /// A 0/1 integer (`u8` flags of the funnel rows).
    fn bit(&self, f: &'static str) -> Result<u8, RecordError> {
        match self.int::<u8>(f)? {
            b @ (0 | 1) => Ok(b),
            b => Err(bad(f, format!("expected 0 or 1, got {b}"))),
        }
    }
    fn strings(&self, f: &'static str) -> Result<Vec<String>, RecordError> {
        let err = |v: &Value| bad(f, format!("expected an array of strings, got {v}"));
        match self.get(f)? {
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| err(x)))
                .collect(),
            v => Err(err(v)),
        }
    }
}

fn object(value: &[u8]) -> Result<Map<String, Value>, RecordError> {
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(RecordError::Decode(format!(
            "expected a JSON object, got {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
        Err(e) => Err(RecordError::Decode(format!("not JSON: {e}"))),
    }
}

/// The rows of one record of a processed topic (`kind` is not [`TopicKind::Events`]).
pub fn map_processed(kind: TopicKind, value: &[u8], o: &Origin) -> Result<Rows, RecordError> {
    let m = object(value)?;
    let r = Obj(&m);
    let mut rows = Rows::default();
    match kind {
        TopicKind::Events => {
            return Err(RecordError::Decode("not a processed topic".into()));
        }
        TopicKind::IdentityLinks => rows.identity_links.push(IdentityLinkRow {
            id_type: r.nonempty("id_type")?,
            id_value: r.nonempty("id_value")?,
            person_id: r.nonempty("person_id")?,
            version: r.int("version")?,
            linked_at_ms: r.int("linked_at_ms")?,
            deleted: 0,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
        TopicKind::IdentityMerges => rows.identity_merges.push(IdentityMergeRow {
            from_person: r.nonempty("from")?,
            into_person: r.nonempty("into")?,
            version: r.int("version")?,
            merged_at_ms: r.int("merged_at_ms")?,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
        TopicKind::Funnels => match r.string("kind")?.as_str() {
            "funnel" => rows.funnel_progress.push(FunnelProgressRow {
                funnel_id: r.nonempty("funnel_id")?,
                person_id: r.nonempty("person_id")?,
                level: r.int("level")?,
                entry_at_ms: r.int("entry_at_ms")?,
                channel: r.string("channel")?,
                campaign: r.string("campaign")?,
                device: r.string("device")?,
                experiment_id: r.string("experiment_id")?,
                variant: r.string("variant")?,
                version: r.int("version")?,
                deleted: r.bit("deleted")?,
                _topic: o.topic.clone(),
                _partition: o.partition,
                _offset: o.offset,
            }),
            "experiment" => rows.experiment_progress.push(ExperimentProgressRow {
                experiment_id: r.nonempty("experiment_id")?,
                person_id: r.nonempty("person_id")?,
                variant: r.string("variant")?,
                exposed_at_ms: r.int("exposed_at_ms")?,
                converted: r.bit("converted")?,
                converted_at_ms: r.int("converted_at_ms")?,
                version: r.int("version")?,
                deleted: r.bit("deleted")?,
                _topic: o.topic.clone(),
                _partition: o.partition,
                _offset: o.offset,
            }),
            k => {
                return Err(bad(
                    "kind",
                    format!("expected \"funnel\" or \"experiment\", got {k:?}"),
                ));
            }
        },
        TopicKind::Profiles => rows.profiles.push(ProfileRow {
            person_id: r.nonempty("person_id")?,
            version: match r.opt_int("version")? {
                Some(v) if v > 0 => u64::try_from(v).map_err(|_| bad("version", "negative"))?,
                _ => u64::try_from(o.offset).map_err(|_| bad("offset", "negative"))?,
            },
            updated_at_ms: r.int("updated_at_ms")?,
            crm_customer_id: r.string("crm_customer_id")?,
            user_ids: r.strings("user_ids")?,
            anonymous_ids: r.strings("anonymous_ids")?,
            phone_hash: r.string("phone_hash")?,
            email_hash: r.string("email_hash")?,
            first_seen_at_ms: r.int("first_seen_at_ms")?,
            last_seen_at_ms: r.int("last_seen_at_ms")?,
            acquisition_channel: r.string("acquisition_channel")?,
            acquisition_campaign: r.string("acquisition_campaign")?,
            first_order_at_ms: r.opt_int("first_order_at_ms")?,
            last_order_at_ms: r.opt_int("last_order_at_ms")?,
            paid_orders: r.int("paid_orders")?,
            paid_total_minor: r.int("paid_total_minor")?,
            refunded_minor: r.int("refunded_minor")?,
            currency: r.string("currency")?,
            tier: r.string("tier")?,
            points_balance: r.opt_int("points_balance")?,
            province: r.string("province")?,
            city: r.string("city")?,
            private_domain: r.flag("private_domain")?,
            traits_json: "{}".to_owned(),
            merged_into: r.string("merged_into")?,
            net_ltv_minor: r.int("net_ltv_minor")?,
            aov_minor: r.int("aov_minor")?,
            repurchase: r.flag("repurchase")?,
            avg_days_between_orders: r.opt_f64("avg_days_between_orders")?,
            last_order_id: r.string("last_order_id")?,
            last_order_status: r.string("last_order_status")?,
            last_shipment_status: r.string("last_shipment_status")?,
            tickets: r.int("tickets")?,
            complaints: r.int("complaints")?,
            csat_ratings: r.int("csat_ratings")?,
            csat_avg: r.opt_f64("csat_avg")?,
            consents_granted: r.strings("consents_granted")?,
            consents_denied: r.strings("consents_denied")?,
            rfm_r: r.int("rfm_r")?,
            rfm_f: r.int("rfm_f")?,
            rfm_m: r.int("rfm_m")?,
            rfm_segment: r.string("rfm_segment")?,
            high_value: r.flag("high_value")?,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: "zt.profiles".into(),
            partition: 1,
            offset,
        }
    }

    fn profile() -> Value {
        serde_json::from_str(
            r#"{
            "person_id": "p1", "merged_into": "", "updated_at_ms": 5,
            "crm_customer_id": "C1", "user_ids": ["u1"], "anonymous_ids": [],
            "phone_hash": "", "email_hash": "", "first_seen_at_ms": 1, "last_seen_at_ms": 5,
            "acquisition_channel": "douyin", "acquisition_campaign": "",
            "first_order_at_ms": 2, "last_order_at_ms": null, "paid_orders": 2,
            "paid_total_minor": 300, "refunded_minor": 0, "net_ltv_minor": 300,
            "aov_minor": 150, "currency": "CNY", "repurchase": true,
            "avg_days_between_orders": 1.5, "last_order_id": "O2", "last_order_status": "paid",
            "last_shipment_status": "", "tickets": 0, "complaints": 0, "csat_ratings": 0,
            "csat_avg": null, "tier": "", "points_balance": null,
            "consents_granted": ["sms"], "consents_denied": [], "province": "", "city": "",
            "private_domain": false, "rfm_r": 5, "rfm_f": 3, "rfm_m": 2,
            "rfm_segment": "important_value", "high_value": true, "new_field": 1
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_profile_uses_its_version_or_else_its_offset() {
        let mut with = profile();
        with["version"] = serde_json::json!(7_000_000_000_000_u64);
        let v = serde_json::to_vec(&with).unwrap();
        let rows = map_processed(TopicKind::Profiles, &v, &origin(42)).unwrap();
        assert_eq!(rows.profiles[0].version, 7_000_000_000_000);
        let v = serde_json::to_vec(&profile()).unwrap();
        let rows = map_processed(TopicKind::Profiles, &v, &origin(42)).unwrap();
        assert_eq!(rows.len(), 1);
        let p = &rows.profiles[0];
        assert_eq!((p.version, p._offset, p._partition), (42, 42, 1));
        assert_eq!((p.paid_orders, p.repurchase, p.high_value), (2, 1, 1));
        assert_eq!(p.avg_days_between_orders, Some(1.5));
        assert_eq!((p.last_order_at_ms, p.csat_avg), (None, None));
        assert_eq!(p.traits_json, "{}");
        assert_eq!(p.consents_granted, ["sms"]);
        rows.encode().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut p = profile();
        p["paid_orders"] = serde_json::json!(-1);
        let v = serde_json::to_vec(&p).unwrap();
        match map_processed(TopicKind::Profiles, &v, &origin(1)) {
            Err(RecordError::Map(e)) => assert_eq!(e.field, "paid_orders"),
            other => panic!("{other:?}"),
        }
        let link = br#"{"id_type":"user_id","id_value":"u1","person_id":"p1","linked_at_ms":3}"#;
        match map_processed(TopicKind::IdentityLinks, link, &origin(1)) {
            Err(RecordError::Map(e)) => assert_eq!(e.field, "version"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            map_processed(TopicKind::IdentityMerges, b"garbage", &origin(1)),
            Err(RecordError::Decode(_))
        ));
        assert!(matches!(
            map_processed(TopicKind::IdentityMerges, b"[1]", &origin(1)),
            Err(RecordError::Decode(_))
        ));
    }

    #[test]
    fn links_and_merges_keep_their_version() {
        let link =
            br#"{"id_type":"user_id","id_value":"u1","person_id":"p1","version":7,"linked_at_ms":3}"#;
        let r = map_processed(TopicKind::IdentityLinks, link, &origin(9)).unwrap();
        assert_eq!(
            (r.identity_links[0].version, r.identity_links[0]._offset),
            (7, 9)
        );
        let merge = br#"{"from":"p2","into":"p1","version":8,"merged_at_ms":4}"#;
        let r = map_processed(TopicKind::IdentityMerges, merge, &origin(9)).unwrap();
        let m = &r.identity_merges[0];
        assert_eq!(
            (m.from_person.as_str(), m.into_person.as_str(), m.version),
            ("p2", "p1", 8)
        );
        let enc = r.encode().unwrap();
        assert_eq!(enc.tables[9].0, 1);
        assert_eq!(enc.rows(), 1);
    }

    fn funnel_row() -> Value {
        serde_json::json!({
            "kind": "funnel", "funnel_id": "ecommerce", "person_id": "p1", "level": 3,
            "entry_at_ms": 1_704_412_800_000_i64, "channel": "douyin", "campaign": "cny",
            "device": "ios", "experiment_id": "x1", "variant": "control", "version": 7,
            "deleted": 0, "new_field": true
        })
    }

    fn experiment_row() -> Value {
        serde_json::json!({
            "kind": "experiment", "experiment_id": "x1", "person_id": "p1",
            "variant": "treatment", "exposed_at_ms": 5, "converted": 1, "converted_at_ms": 9,
            "version": 1_u64 << 62, "deleted": 1
        })
    }

    #[test]
    fn funnel_records_map_by_kind() {
        let v = serde_json::to_vec(&funnel_row()).unwrap();
        let r = map_processed(TopicKind::Funnels, &v, &origin(3)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.funnel_progress[0],
            FunnelProgressRow {
                funnel_id: "ecommerce".into(),
                person_id: "p1".into(),
                level: 3,
                entry_at_ms: 1_704_412_800_000,
                channel: "douyin".into(),
                campaign: "cny".into(),
                device: "ios".into(),
                experiment_id: "x1".into(),
                variant: "control".into(),
                version: 7,
                deleted: 0,
                _topic: "zt.profiles".into(),
                _partition: 1,
                _offset: 3,
            }
        );
        let enc = r.encode().unwrap();
        assert_eq!((enc.tables[10].0, enc.rows()), (1, 1));

        let v = serde_json::to_vec(&experiment_row()).unwrap();
        let r = map_processed(TopicKind::Funnels, &v, &origin(4)).unwrap();
        let e = &r.experiment_progress[0];
        assert_eq!((e.version, e.deleted, e.converted), (1 << 62, 1, 1));
        assert_eq!((e.exposed_at_ms, e.converted_at_ms), (5, 9));
        assert_eq!(e.variant, "treatment");
        let enc = r.encode().unwrap();
        assert_eq!((enc.tables[11].0, enc.rows()), (1, 1));
        assert!(r.approx_bytes() > 48);
    }

    #[test]
    fn funnel_record_errors_name_the_field() {
        let field = |v: Value| {
            let v = serde_json::to_vec(&v).unwrap();
            match map_processed(TopicKind::Funnels, &v, &origin(1)) {
                Err(RecordError::Map(e)) => e.field,
                other => panic!("{other:?}"),
            }
        };
        let mut f = funnel_row();
        f["kind"] = serde_json::json!("journey");
        assert_eq!(field(f.clone()), "kind");
        f.as_object_mut().unwrap().remove("kind");
        assert_eq!(field(f), "kind");
        let mut f = funnel_row();
        f["level"] = serde_json::json!(300);
        assert_eq!(field(f), "level");
        let mut f = funnel_row();
        f["deleted"] = serde_json::json!(2);
        assert_eq!(field(f), "deleted");
        let mut e = experiment_row();
        e["converted"] = serde_json::json!(true);
        assert_eq!(field(e), "converted");
        let mut e = experiment_row();
        e.as_object_mut().unwrap().remove("version");
        assert_eq!(field(e), "version");
        assert!(matches!(
            map_processed(TopicKind::Funnels, b"{not json", &origin(1)),
            Err(RecordError::Decode(_))
        ));
    }

    #[test]
    fn kinds_follow_the_configured_names() {
        let t = TopicsConfig {
            prefix: "x".into(),
            partitions: 1,
            replication_factor: 1,
            partition_overrides: Default::default(),
            profiles_version: 1,
            funnels_version: 1,
        };
        assert_eq!(TopicKind::of("x.profiles", &t), TopicKind::Profiles);
        assert_eq!(
            TopicKind::of("x.identity.links", &t),
            TopicKind::IdentityLinks
        );
        assert_eq!(
            TopicKind::of("x.identity.merges", &t),
            TopicKind::IdentityMerges
        );
        assert_eq!(TopicKind::of("x.funnels", &t), TopicKind::Funnels);
        assert_eq!(TopicKind::Funnels.tables(), &[10, 11]);
        assert_eq!(crate::TABLES[10], "funnel_progress");
        assert_eq!(crate::TABLES[11], "experiment_progress");
        assert_eq!(TopicKind::of("x.funnels.state", &t), TopicKind::Events);
        assert_eq!(TopicKind::of("zt.profiles", &t), TopicKind::Events);
        assert_eq!(TopicKind::of("x.events.resolved", &t), TopicKind::Events);
    }
}
