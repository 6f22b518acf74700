//! The `[identity]` and `[profiles]` configuration sections.

use serde::{Deserialize, Serialize};
use zt_identity::{GraphConfig, IdKind};

use crate::error::{Error, Result};

fn config_err(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// `[identity]`: `zt process identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Consumer group of the resolvers. Default `zt-identity`.
    pub group_id: String,
    /// Input topics. Empty (the default) means the six source topics
    /// `<prefix>.events.<source>`. Every topic must carry `zt.Event` records.
    pub topics: Vec<String>,
    /// Identifier kinds of which a person holds at most one value; two clusters holding
    /// different values are never merged. Default `["crm_customer_id", "user_id"]`.
    pub exclusive: Vec<IdKind>,
    /// Anchor priority, best first: a person's id derives from its best identifier.
    /// Default `crm_customer_id, user_id, phone_hash, email_hash, anonymous_id, order_id,
    /// waybill_no, ticket_id`.
    pub priority: Vec<IdKind>,
    /// Most identifiers of one kind a person may hold; the identifier that would exceed it
    /// is marked shared and links nothing any more. Default anonymous_id 50, phone_hash 5,
    /// email_hash 5.
    pub max_per_person: std::collections::BTreeMap<IdKind, usize>,
    /// Records per processing batch. Default 5000.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, in milliseconds. Default 100.
    pub batch_max_age_ms: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let g = GraphConfig::default();
        IdentityConfig {
            group_id: "zt-identity".into(),
            topics: vec![],
            exclusive: g.exclusive,
            priority: g.priority,
            max_per_person: g.max_per_person,
            batch_max_records: 5_000,
            batch_max_age_ms: 100,
        }
    }
}

impl IdentityConfig {
    /// The graph's guards and priorities.
    pub fn graph(&self) -> GraphConfig {
        GraphConfig {
            exclusive: self.exclusive.clone(),
            priority: self.priority.clone(),
            max_per_person: self.max_per_person.clone(),
        }
    }

    /// Checks names and sizes.
    pub fn validate(&self) -> Result<()> {
        if self.group_id.trim().is_empty() {
            return Err(config_err("identity.group_id", "must not be empty"));
        }
        if self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(config_err("identity.topics", "names must not be empty"));
        }
        if self.batch_max_records == 0 {
            return Err(config_err("identity.batch_max_records", "must be > 0"));
        }
        if self.batch_max_age_ms == 0 {
            return Err(config_err("identity.batch_max_age_ms", "must be > 0"));
        }
        if let Some((k, _)) = self.max_per_person.iter().find(|(_, n)| **n == 0) {
            return Err(config_err(
                &format!("identity.max_per_person.{}", k.as_str()),
                "must be > 0",
            ));
        }
        Ok(())
    }
}

/// `[profiles.rfm]`: how profile snapshots score recency, frequency and monetary value.
///
/// Each score is 1 plus the number of cut points passed (recency: at most that many
/// days since the last paid order; frequency: at least that many paid orders; monetary:
/// at least that much net value in minor units), 0 for a person without paid orders.
/// The segment is the eight-way RFM model of `kpi_rfm`, with "high" meaning a score of
/// at least `high_score`; `important_value` (high R, F and M) are the high-value
/// customers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmConfig {
    /// Days since the last paid order, ascending. Default `[7, 30, 90, 180]`.
    pub recency_days: Vec<i64>,
    /// Paid orders, ascending. Default `[2, 3, 5, 10]`.
    pub frequency: Vec<u32>,
    /// Net value (paid minus refunds), minor units, ascending. Default
    /// `[10000, 50000, 100000, 500000]`.
    pub monetary_minor: Vec<i64>,
    /// The score from which R, F or M counts as high. Default 3 (F: 2, that is a
    /// repurchase, is taken from the frequency cut points: high from the first cut).
    pub high_score: u8,
}

impl Default for RfmConfig {
    fn default() -> Self {
        RfmConfig {
            recency_days: vec![7, 30, 90, 180],
            frequency: vec![2, 3, 5, 10],
            monetary_minor: vec![10_000, 50_000, 100_000, 500_000],
            high_score: 3,
        }
    }
}

/// RFM scores of one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmScores {
    /// Recency score, 0 to 5.
    pub r: u8,
    /// Frequency score, 0 to 5.
    pub f: u8,
    /// Monetary score, 0 to 5.
    pub m: u8,
    /// The segment name (`kpi_rfm`'s names), `none` without paid orders.
    pub segment: &'static str,
}

impl RfmConfig {
    /// Scores a person: days since the last paid order (None without one), paid orders
    /// and net value.
    pub fn scores(&self, recency_days: Option<i64>, orders: u32, net_minor: i64) -> RfmScores {
        let Some(days) = recency_days.filter(|_| orders > 0) else {
            return RfmScores {
                r: 0,
                f: 0,
                m: 0,
                segment: "none",
            };
        };
        let r = 5 - self
            .recency_days
            .iter()
            .filter(|c| days > **c)
            .count()
            .min(4) as u8;
        let f = 1 + self
            .frequency
            .iter()
            .filter(|c| orders >= **c)
            .count()
            .min(4) as u8;
        let m = 1 + self
            .monetary_minor
            .iter()
            .filter(|c| net_minor >= **c)
            .count()
            .min(4) as u8;
        let high = |s: u8| s >= self.high_score;
        // Frequency: a repurchase (the first cut point) already counts as high.
        let f_high = f >= 2;
        let code = (u8::from(high(r)) << 2) | (u8::from(f_high) << 1) | u8::from(high(m));
        let segment = match code {
            7 => "important_value",
            5 => "important_development",
            3 => "important_retention",
            1 => "important_winback",
            6 => "general_value",
            4 => "general_development",
            2 => "general_retention",
            _ => "general_winback",
        };
        RfmScores { r, f, m, segment }
    }

    /// Checks that the cut points ascend.
    pub fn validate(&self) -> Result<()> {
        fn ascending<T: PartialOrd>(v: &[T]) -> bool {
            v.windows(2).all(|w| w[0] < w[1])
        }
        if self.recency_days.len() != 4 || !ascending(&self.recency_days) {
            return Err(config_err(
                "profiles.rfm.recency_days",
                "must be 4 ascending numbers",
            ));
        }
        if self.frequency.len() != 4 || !ascending(&self.frequency) {
            return Err(config_err(
                "profiles.rfm.frequency",
                "must be 4 ascending numbers",
            ));
        }
        if self.monetary_minor.len() != 4 || !ascending(&self.monetary_minor) {
            return Err(config_err(
                "profiles.rfm.monetary_minor",
                "must be 4 ascending numbers",
            ));
        }
        if !(1..=5).contains(&self.high_score) {
            return Err(config_err("profiles.rfm.high_score", "must be 1 to 5"));
        }
        Ok(())
    }
}

/// `[profiles]`: `zt process profiles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesConfig {
    /// Consumer group. Default `zt-profiles`.
    pub group_id: String,
    /// Records per processing batch. Default 5000.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, in milliseconds. Default 100.
    pub batch_max_age_ms: u64,
    /// RFM scoring.
    pub rfm: RfmConfig,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            group_id: "zt-profiles".into(),
            batch_max_records: 5_000,
            batch_max_age_ms: 100,
            rfm: RfmConfig::default(),
        }
    }
}

impl ProfilesConfig {
    /// The consumer group of the configured output version: `group_id` for version 1,
    /// `<group_id>.v<N>` for `topics.profiles_version = N`.
    pub fn group(&self, topics: &zt_kafka::TopicsConfig) -> String {
        zt_kafka::config::versioned(&self.group_id, topics.profiles_version)
    }

    /// Checks names, sizes and RFM cut points.
    pub fn validate(&self) -> Result<()> {
        if self.group_id.trim().is_empty() {
            return Err(config_err("profiles.group_id", "must not be empty"));
        }
        if self.batch_max_records == 0 {
            return Err(config_err("profiles.batch_max_records", "must be > 0"));
        }
        if self.batch_max_age_ms == 0 {
            return Err(config_err("profiles.batch_max_age_ms", "must be > 0"));
        }
        self.rfm.validate()
    }
}

/// `[funnels]`: `zt process funnels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelsConfig {
    /// Consumer group. Default `zt-funnels`.
    pub group_id: String,
    /// Records per processing batch. Default 5000.
    pub batch_max_records: usize,
    /// Longest wait to fill a batch, in milliseconds. Default 100.
    pub batch_max_age_ms: u64,
    /// Events this much older than the newest event of their partition count as late
    /// (`zt_funnels_late_events_total`); they still correct the rows. Default 3600000.
    pub allowed_lateness_ms: i64,
    /// The event type that counts as an experiment conversion. Default `order.paid`.
    pub conversion_event_type: String,
    /// The funnels. Default: the e-commerce funnel `ecommerce`.
    pub definitions: Vec<crate::funnel::FunnelDef>,
}

impl Default for FunnelsConfig {
    fn default() -> Self {
        FunnelsConfig {
            group_id: "zt-funnels".into(),
            batch_max_records: 5_000,
            batch_max_age_ms: 100,
            allowed_lateness_ms: 3_600_000,
            conversion_event_type: "order.paid".into(),
            definitions: vec![crate::funnel::default_funnel()],
        }
    }
}

impl FunnelsConfig {
    /// The consumer group of the configured output version: `group_id` for version 1,
    /// `<group_id>.v<N>` for `topics.funnels_version = N`.
    pub fn group(&self, topics: &zt_kafka::TopicsConfig) -> String {
        zt_kafka::config::versioned(&self.group_id, topics.funnels_version)
    }

    /// Checks names, sizes and funnel definitions.
    pub fn validate(&self) -> Result<()> {
        if self.group_id.trim().is_empty() {
            return Err(config_err("funnels.group_id", "must not be empty"));
        }
        if self.batch_max_records == 0 {
            return Err(config_err("funnels.batch_max_records", "must be > 0"));
        }
        if self.batch_max_age_ms == 0 {
            return Err(config_err("funnels.batch_max_age_ms", "must be > 0"));
        }
        if self.allowed_lateness_ms < 0 {
            return Err(config_err("funnels.allowed_lateness_ms", "must be >= 0"));
        }
        if self.conversion_event_type.trim().is_empty() {
            return Err(config_err(
                "funnels.conversion_event_type",
                "must not be empty",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.definitions.iter().enumerate() {
            let key = |k: &str| format!("funnels.definitions[{i}].{k}");
            let ok = !f.id.is_empty()
                && f.id.len() <= 100
                && f.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(config_err(
                    &key("id"),
                    "must be 1 to 100 of a-z, A-Z, 0-9, _ or -",
                ));
            }
            if !seen.insert(f.id.clone()) {
                return Err(config_err(&key("id"), "is used by another funnel"));
            }
            if f.window_ms <= 0 {
                return Err(config_err(&key("window_ms"), "must be > 0"));
            }
            if f.steps.is_empty() || f.steps.len() > 32 {
                return Err(config_err(&key("steps"), "must have 1 to 32 steps"));
            }
            if let Some(j) = f.steps.iter().position(|s| s.event_type.trim().is_empty()) {
                return Err(config_err(
                    &format!("funnels.definitions[{i}].steps[{j}].event_type"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfm_by_hand() {
        let c = RfmConfig::default();
        // 3 days, 5 orders, 120,000 fen: r 5, f 4, m 4.
        let s = c.scores(Some(3), 5, 120_000);
        assert_eq!((s.r, s.f, s.m, s.segment), (5, 4, 4, "important_value"));
        // 200 days, 1 order, 5,000 fen: r 1, f 1, m 1.
        let s = c.scores(Some(200), 1, 5_000);
        assert_eq!((s.r, s.f, s.m, s.segment), (1, 1, 1, "general_winback"));
        // 60 days (r 3), 1 order, 60,000 fen (m 3).
        let s = c.scores(Some(60), 1, 60_000);
        assert_eq!(
            (s.r, s.f, s.m, s.segment),
            (3, 1, 3, "important_development")
        );
        assert_eq!(c.scores(None, 0, 0).segment, "none");
    }

    #[test]
    fn bad_funnels_are_named() {
        let mut c = FunnelsConfig::default();
        c.validate().unwrap();
        c.definitions[0].window_ms = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("funnels.definitions[0].window_ms"), "{e}");
        let mut c = FunnelsConfig::default();
        c.definitions.push(c.definitions[0].clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("definitions[1].id")
        );
    }

    #[test]
    fn bad_cut_points_are_named() {
        let mut c = ProfilesConfig::default();
        c.rfm.frequency = vec![3, 2, 5, 10];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("profiles.rfm.frequency"), "{e}");
    }
}
