//! Write keys and rate limits. Keys are configured as SHA-256 digests; a presented key is
//! hashed and compared with every configured digest in constant time, so neither the keys
//! nor timing reveal anything. A key publishes only for its own source.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zt_model::Source;

use crate::config::IngestConfig;

/// The hex SHA-256 digest of a write key, as configured in `write_keys`.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[derive(Debug)]
struct KeyEntry {
    digest: [u8; 32],
    source: Source,
    id: String,
}

/// Who presented a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key's source.
    pub source: Source,
    /// The key's configured id.
    pub id: String,
}

/// All configured keys.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<KeyEntry>,
}

impl KeyRing {
    /// From `[ingest.sources.*.write_keys]` (already validated).
    pub fn new(cfg: &IngestConfig) -> Self {
        let mut keys = Vec::new();
        for (name, src) in &cfg.sources {
            let Ok(source) = name.parse::<Source>() else {
                continue;
            };
            for wk in &src.write_keys {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(&wk.sha256, &mut digest).is_ok() {
                    keys.push(KeyEntry {
                        digest,
                        source,
                        id: wk.id.clone(),
                    });
                }
            }
        }
        KeyRing { keys }
    }

    /// The owner of `key`, comparing against every configured digest in constant time.
    pub fn lookup(&self, key: &str) -> Option<KeyOwner> {
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&d)) {
                found = Some(KeyOwner {
                    source: k.source,
                    id: k.id.clone(),
                });
            }
        }
        found
    }
}

/// Token buckets per key id.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes `n` tokens from `key`'s bucket (`rate` per second, `burst` capacity; rate 0 =
    /// unlimited). `Err(seconds)` says how long until `n` tokens are available.
    pub fn take(&self, key: &str, n: u32, rate: u32, burst: u32) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let cap = f64::from(burst.max(rate));
        let now = Instant::now();
        let mut g = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = g.entry(key.to_owned()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * f64::from(rate)).min(cap);
        b.at = now;
        // A request larger than the whole bucket passes once the bucket is full and leaves
        // a debt that later requests wait out, so a big batch is slowed, never refused for
        // ever.
        let need = f64::from(n);
        if b.tokens >= need.min(cap) {
            b.tokens -= need;
            Ok(())
        } else {
            let wait = ((need.min(cap) - b.tokens) / f64::from(rate)).ceil() as u64;
            Err(wait.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SourceConfig, WriteKey};

    #[test]
    fn keys_map_to_their_source_only() {
        let mut cfg: IngestConfig = crate::config::tests_support::config();
        cfg.sources.insert(
            "erp".into(),
            SourceConfig {
                write_keys: vec![WriteKey {
                    id: "erp-prod".into(),
                    sha256: hash_key("erp-secret"),
                }],
                ..Default::default()
            },
        );
        let ring = KeyRing::new(&cfg);
        let owner = ring.lookup("erp-secret").unwrap();
        assert_eq!(owner.source, Source::Erp);
        assert_eq!(owner.id, "erp-prod");
        assert!(ring.lookup("erp-secreT").is_none());
        assert!(ring.lookup("").is_none());
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let rl = RateLimiter::default();
        assert!(rl.take("k", 5, 10, 10).is_ok());
        assert!(rl.take("k", 5, 10, 10).is_ok());
        assert_eq!(rl.take("k", 5, 10, 10), Err(1));
        assert!(rl.take("other", 10, 10, 10).is_ok(), "buckets are per key");
        assert!(rl.take("k", 1_000_000, 0, 0).is_ok(), "rate 0 is unlimited");
        // Larger than the bucket: passes when full, then the debt is waited out.
        assert!(rl.take("big", 100, 10, 10).is_ok());
        assert_eq!(rl.take("big", 1, 10, 10), Err(10));
    }
}
