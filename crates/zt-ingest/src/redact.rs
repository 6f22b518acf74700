//! Personal data removal for what ingest keeps of rejected input. A dead letter carries
//! the original item so it can be replayed, but phones and e-mails must not reach Kafka:
//! in JSON input their values are replaced by `zt-hashed:<salted hash>` (which the
//! normalisers accept in place of the raw value, so a replay still resolves the identity),
//! or by `zt-redacted` when they cannot be normalised. Fields are recognised by their
//! native name after the source's configured renames, so a variant's own phone field is
//! hashed too; names, addresses and birthdays are redacted, and so are write keys (the
//! `writeKey` field, and the presented key wherever it appears). Input that is not JSON
//! has digit runs of 7 or more and anything shaped like an e-mail address masked.

use std::collections::BTreeMap;

use serde_json::Value;
use zt_model::pii::PiiHasher;

use crate::fields::{HASHED_PREFIX, hash_identifier};

const PHONE_KEYS: &[&str] = &[
    "mobile",
    "phone",
    "receivermobile",
    "phonenumber",
    "mobilephone",
    "tel",
    "telephone",
];
const EMAIL_KEYS: &[&str] = &["email", "e_mail", "mail"];
const OTHER_KEYS: &[&str] = &[
    "firstname",
    "lastname",
    "address",
    "birthday",
    "idcard",
    "writekey",
];

fn class(key: &str) -> Option<u8> {
    let n: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    if PHONE_KEYS.contains(&n.as_str()) {
        Some(0)
    } else if EMAIL_KEYS.iter().any(|k| k.replace('_', "") == n) {
        Some(1)
    } else if OTHER_KEYS.contains(&n.as_str()) {
        Some(2)
    } else {
        None
    }
}

/// What a walk needs: the hasher and the source's renames (variant name → native name).
struct Walk<'a> {
    hasher: &'a PiiHasher,
    renames: &'a BTreeMap<String, String>,
}

impl Walk<'_> {
    fn class(&self, key: &str, in_traits: bool) -> Option<u8> {
        let native = self.renames.get(key).map(String::as_str).unwrap_or(key);
        class(native).or_else(|| (in_traits && native.eq_ignore_ascii_case("name")).then_some(2))
    }

    fn walk(&self, v: &mut Value, in_traits: bool) {
        match v {
            Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    match (self.class(k, in_traits), &*val) {
                        (Some(c @ (0 | 1)), Value::String(_) | Value::Number(_)) => {
                            let raw = match &*val {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            *val = Value::String(
                                match hash_identifier(self.hasher, &raw, c == 0, k) {
                                    Ok(h) => format!("{HASHED_PREFIX}{h}"),
                                    Err(_) => "zt-redacted".into(),
                                },
                            );
                        }
                        (Some(_), Value::String(_) | Value::Number(_)) => {
                            *val = Value::String("zt-redacted".into());
                        }
                        (Some(_), Value::Array(_)) => {
                            // A list of phones or names: each element as if it stood alone.
                            if let Value::Array(items) = val {
                                for item in items.iter_mut() {
                                    let mut one = serde_json::Map::new();
                                    one.insert(k.clone(), std::mem::take(item));
                                    let mut obj = Value::Object(one);
                                    self.walk(&mut obj, in_traits);
                                    if let Value::Object(mut m) = obj {
                                        *item = m.remove(k.as_str()).unwrap_or_default();
                                    }
                                }
                            }
                        }
                        _ => {
                            let traits = k == "traits";
                            self.walk(val, traits);
                        }
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.walk(i, in_traits)),
            _ => {}
        }
    }
}

/// The bytes to keep of a rejected input item. `secret` is the write key the request
/// presented, removed wherever it appears.
pub fn redact(
    raw: &[u8],
    hasher: &PiiHasher,
    renames: &BTreeMap<String, String>,
    secret: Option<&str>,
) -> Vec<u8> {
    let out = match serde_json::from_slice::<Value>(raw) {
        Ok(mut v) => {
            Walk { hasher, renames }.walk(&mut v, false);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Err(_) => mask_text(raw),
    };
    match secret.filter(|s| s.len() >= 4) {
        Some(key) => replace_all(&out, key.as_bytes(), b"zt-redacted"),
        None => out,
    }
}

/// The bytes to keep of a rejected NDJSON body: each line on its own, a JSON object or
/// array as [`redact`] keeps JSON, any other line (not JSON, or a bare string or number)
/// masked as text. Lines stay lines, so a replay splits the body as the endpoint did.
pub fn redact_ndjson(
    raw: &[u8],
    hasher: &PiiHasher,
    renames: &BTreeMap<String, String>,
    secret: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(mut v @ (Value::Object(_) | Value::Array(_))) => {
                Walk { hasher, renames }.walk(&mut v, false);
                out.extend(serde_json::to_vec(&v).unwrap_or_default());
            }
            _ => out.extend(mask_text(line)),
        }
    }
    match secret.filter(|s| s.len() >= 4) {
        Some(key) => replace_all(&out, key.as_bytes(), b"zt-redacted"),
        None => out,
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Masks digit runs of 7+ and e-mail-shaped tokens in text that is not JSON.
pub fn mask_text(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    // Digit runs.
    let mut i = 0;
    while i < out.len() {
        if out[i].is_ascii_digit() {
            let start = i;
            while i < out.len() && out[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 7 {
                out[start..i].iter_mut().for_each(|b| *b = b'#');
            }
        } else {
            i += 1;
        }
    }
    // E-mail-shaped tokens: mask the token around every '@'.
    let token = |b: u8| b.is_ascii_alphanumeric() || b".-_+%".contains(&b);
    for at in 0..out.len() {
        if out[at] != b'@' {
            continue;
        }
        let mut s = at;
        while s > 0 && token(out[s - 1]) {
            s -= 1;
        }
        let mut e = at + 1;
        while e < out.len() && token(out[e]) {
            e += 1;
        }
        if s < at && e > at + 1 {
            out[s..e].iter_mut().for_each(|b| *b = b'#');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_contacts_are_hashed_or_redacted() {
        let h = PiiHasher::new(b"salt", "86").unwrap();
        let raw = br#"{"mobile":"13812345678","email":"Li@Example.com","x":{"phone":"bad"},"lines":[{"sku":"S1"}],"firstName":"Li","phone":["13912345678"]}"#;
        let out = String::from_utf8(redact(raw, &h, &BTreeMap::new(), None)).unwrap();
        assert!(
            !out.contains("13812345678") && !out.contains("Example"),
            "{out}"
        );
        let want = format!(
            "zt-hashed:{}",
            h.hash_phone("13812345678", "mobile").unwrap()
        );
        assert!(out.contains(&want), "{out}");
        assert!(out.contains("\"phone\":\"zt-redacted\""), "{out}");
        assert!(out.contains("\"firstName\":\"zt-redacted\""), "{out}");
        assert!(out.contains("\"sku\":\"S1\""), "{out}");
    }

    #[test]
    fn renamed_fields_traits_names_and_keys_are_covered() {
        let h = PiiHasher::new(b"salt", "86").unwrap();
        let renames = BTreeMap::from([("buyer_mobile".to_owned(), "mobile".to_owned())]);
        let raw = br#"{"buyer_mobile":"139-8765-4321","writeKey":"k-123456","traits":{"name":"Li","plan":"x"},"name":"Home","note":"key k-123456"}"#;
        let out = String::from_utf8(redact(raw, &h, &renames, Some("k-123456"))).unwrap();
        assert!(!out.contains("8765") && !out.contains("k-123456"), "{out}");
        assert!(out.contains("\"buyer_mobile\":\"zt-hashed:"), "{out}");
        assert!(
            out.contains("\"traits\":{\"name\":\"zt-redacted\""),
            "{out}"
        );
        assert!(
            out.contains("\"name\":\"Home\""),
            "page names outside traits stay: {out}"
        );
    }

    #[test]
    fn ndjson_lines_are_redacted_one_by_one() {
        let h = PiiHasher::new(b"salt", "86").unwrap();
        let raw = b"{\"mobile\":\"13812345678\",\"order_id\":\"SO2026061800123\"}\n\n13912345678\n{broken 13712345678\n[{\"email\":\"a@b.cn\"}]";
        let out = String::from_utf8(redact_ndjson(raw, &h, &BTreeMap::new(), None)).unwrap();
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 5, "{out}");
        let first: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            first["mobile"],
            format!(
                "zt-hashed:{}",
                h.hash_phone("13812345678", "mobile").unwrap()
            )
        );
        assert_eq!(
            first["order_id"], "SO2026061800123",
            "ids in JSON lines stay"
        );
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "###########", "a bare number line is masked");
        assert!(!lines[3].contains("13712345678"), "{out}");
        assert!(lines[4].contains("zt-hashed:"), "{out}");
        assert!(!out.contains("a@b.cn"), "{out}");
    }

    #[test]
    fn text_masks_numbers_and_emails() {
        let out = mask_text(b"{broken 13812345678 li.lei@example.com 2026");
        let s = String::from_utf8(out).unwrap();
        assert!(
            !s.contains("13812345678") && !s.contains("example.com"),
            "{s}"
        );
        assert!(s.contains("2026") && s.contains("broken"), "{s}");
    }
}
