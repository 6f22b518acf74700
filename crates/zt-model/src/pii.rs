//! Phone and e-mail normalisation and salted hashing, done at the edge so raw PII never
//! reaches Kafka, logs or metrics.
//!
//! - Phones become E.164 (`+` and up to 15 digits). Full-width digits and separators
//!   (spaces, `-`, `.`, `(`, `)`, `/`) are accepted; `00` is read as the international
//!   prefix; a national number gets the configured default country code after dropping one
//!   trunk `0` (`010-6552 9988` → `+861065529988` for country code 86). With country code
//!   86, a 13-digit `86 1xx…` mobile without `+` is read as already international.
//! - E-mails are trimmed and lower-cased (the local part too: mailbox providers treat it
//!   case-insensitively in practice), with exactly one `@`, a non-empty local part of at
//!   most 64 bytes and a dotted domain.
//! - The hash is `hex(HMAC-SHA256(key = salt, message = normalised value))`, so any system
//!   that knows the salt computes the same value and nobody without it can reverse it by
//!   enumerating phone numbers.
//!
//! Errors name the field and the reason, never the value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

fn pii_err(field: &str, reason: &'static str) -> Error {
    Error::Pii {
        field: field.to_owned(),
        reason,
    }
}

/// Maps full-width ASCII variants (U+FF01..U+FF5E) to ASCII, so `１３８` reads as `138`.
fn halfwidth(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        c => c,
    }
}

/// Normalises a phone number to E.164. `field` names the input field in errors.
pub fn normalize_phone(raw: &str, default_country_code: &str, field: &str) -> Result<String> {
    Ok(e164(raw, default_country_code, field)?.as_str().to_owned())
}

/// Digits of a phone number kept while reading it: a valid one has at most 17 (15 and a
/// `00` prefix); past that only their count matters.
const PHONE_DIGITS: usize = 24;

/// A phone number in E.164 (`+` and at most 15 digits), built without allocating: ingest
/// hashes one per event that has a phone.
struct E164 {
    buf: [u8; 16],
    len: usize,
}

impl E164 {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and `+` are written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// [`normalize_phone`] into an [`E164`].
fn e164(raw: &str, default_country_code: &str, field: &str) -> Result<E164> {
    let mut digits = [0u8; PHONE_DIGITS];
    // Digits read, also those past the buffer.
    let mut n = 0usize;
    let mut plus = false;
    for (i, c) in raw.trim().chars().map(halfwidth).enumerate() {
        match c {
            '0'..='9' => {
                if let Some(d) = digits.get_mut(n) {
                    *d = c as u8;
                }
                n += 1;
            }
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\t' => {}
            _ => {
                return Err(pii_err(
                    field,
                    "phone number has a character that is not a digit",
                ));
            }
        }
    }
    if n == 0 {
        return Err(pii_err(field, "phone number has no digits"));
    }
    let kept = &digits[..n.min(PHONE_DIGITS)];
    // E.164 as a country code part and the digits after the first `skip`.
    let (cc, skip): (&[u8], usize) = if plus {
        (b"", 0)
    } else if kept.starts_with(b"00") {
        (b"", 2)
    } else if default_country_code == "86" && n == 13 && kept.starts_with(b"861") {
        (b"", 0)
    } else {
        (
            default_country_code.as_bytes(),
            usize::from(kept.first() == Some(&b'0')),
        )
    };
    let e164_len = cc.len() + (n - skip);
    if cc.first().or(kept.get(skip)) == Some(&b'0') {
        return Err(pii_err(field, "phone number has no valid country code"));
    }
    if !(8..=15).contains(&e164_len) {
        return Err(pii_err(
            field,
            "phone number must have 8 to 15 digits in E.164",
        ));
    }
    // At most 15 digits: all of them were kept, and they fit.
    let mut out = E164 {
        buf: [0u8; 16],
        len: 1 + e164_len,
    };
    out.buf[0] = b'+';
    out.buf[1..1 + cc.len()].copy_from_slice(cc);
    out.buf[1 + cc.len()..out.len].copy_from_slice(&kept[skip..n]);
    if let Some(national) = out.as_bytes()[1..].strip_prefix(b"86")
        && is_cn_mobile_prefix(national)
        && national.len() != 11
    {
        return Err(pii_err(field, "Chinese mobile numbers have 11 digits"));
    }
    Ok(out)
}

/// Chinese mobile numbers start with 13 to 19 (Beijing landlines start with 10).
fn is_cn_mobile_prefix(b: &[u8]) -> bool {
    b.len() >= 2 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

/// Normalises an e-mail address. `field` names the input field in errors.
pub fn normalize_email(raw: &str, field: &str) -> Result<String> {
    let email: String = raw
        .trim()
        .chars()
        .map(halfwidth)
        .flat_map(char::to_lowercase)
        .collect();
    check_email(&email, field)?;
    Ok(email)
}

/// Longest e-mail address accepted (RFC 5321's path limit less the angle brackets).
const EMAIL_MAX: usize = 254;

/// Checks a trimmed, lower-cased e-mail address.
fn check_email(email: &str, field: &str) -> Result<()> {
    let (local, domain) = email
        .split_once('@')
        .ok_or_else(|| pii_err(field, "e-mail address has no @"))?;
    if domain.contains('@') {
        return Err(pii_err(field, "e-mail address has more than one @"));
    }
    if local.is_empty() || local.len() > 64 {
        return Err(pii_err(field, "e-mail local part must have 1 to 64 bytes"));
    }
    let d = domain.as_bytes();
    if d.len() > 253
        || !d.contains(&b'.')
        || d.first() == Some(&b'.')
        || d.last() == Some(&b'.')
        || d.windows(2).any(|w| w == b"..")
        || email.len() > EMAIL_MAX
    {
        return Err(pii_err(field, "e-mail domain is not a dotted host name"));
    }
    // ASCII white space is all control characters but the space.
    let spaced = if email.is_ascii() {
        email.bytes().any(|b| b <= b' ' || b == 0x7f)
    } else {
        email.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if spaced {
        return Err(pii_err(field, "e-mail address contains white space"));
    }
    Ok(())
}

/// Hashes normalised identifiers with a secret salt.
#[derive(Clone)]
pub struct PiiHasher {
    mac: Hmac<Sha256>,
    default_country_code: String,
}

impl std::fmt::Debug for PiiHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiHasher")
            .field("salt", &"[redacted]")
            .field("default_country_code", &self.default_country_code)
            .finish()
    }
}

impl PiiHasher {
    /// A hasher with this salt; `default_country_code` is digits only, e.g. `86`.
    pub fn new(salt: &[u8], default_country_code: &str) -> Result<Self> {
        if salt.is_empty() {
            return Err(pii_err("pii.salt", "must not be empty"));
        }
        if default_country_code.is_empty()
            || default_country_code.len() > 3
            || !default_country_code.bytes().all(|b| b.is_ascii_digit())
            || default_country_code.starts_with('0')
        {
            return Err(pii_err(
                "pii.default_country_code",
                "must be 1 to 3 digits without a leading zero",
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(salt)
            .map_err(|_| pii_err("pii.salt", "not usable as an HMAC key"))?;
        Ok(PiiHasher {
            mac,
            default_country_code: default_country_code.to_owned(),
        })
    }

    /// Hex HMAC-SHA256 of an already normalised value.
    pub fn hash_normalized(&self, normalized: &str) -> String {
        self.hash_bytes(normalized.as_bytes())
    }

    fn hash_bytes(&self, normalized: &[u8]) -> String {
        let mut out = String::with_capacity(64);
        self.hash_bytes_into(normalized, &mut out);
        out
    }

    /// Writes the hex HMAC-SHA256 of `normalized` over what `out` held (keeping its
    /// buffer).
    fn hash_bytes_into(&self, normalized: &[u8], out: &mut String) {
        let mut mac = self.mac.clone();
        mac.update(normalized);
        let mut hex_digits = [0u8; 64];
        // 32 bytes always fill 64 hex digits; `hex::encode` builds the text a char at a
        // time, a measurable part of ingest's time.
        let digits = hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex_digits)
            .ok()
            .and_then(|()| std::str::from_utf8(&hex_digits).ok())
            .unwrap_or_default();
        out.clear();
        out.push_str(digits);
    }

    /// Normalises and hashes a phone number.
    pub fn hash_phone(&self, raw: &str, field: &str) -> Result<String> {
        let mut out = String::with_capacity(64);
        self.hash_phone_into(raw, field, &mut out)?;
        Ok(out)
    }

    /// [`PiiHasher::hash_phone`] written over what `out` held, keeping its buffer (an
    /// event reused from call to call hashes without allocating). `out` is unchanged on
    /// error.
    pub fn hash_phone_into(&self, raw: &str, field: &str, out: &mut String) -> Result<()> {
        let e164 = e164(raw, &self.default_country_code, field)?;
        self.hash_bytes_into(e164.as_bytes(), out);
        Ok(())
    }

    /// Normalises and hashes an e-mail address.
    pub fn hash_email(&self, raw: &str, field: &str) -> Result<String> {
        let mut out = String::with_capacity(64);
        self.hash_email_into(raw, field, &mut out)?;
        Ok(out)
    }

    /// [`PiiHasher::hash_email`] written over what `out` held, keeping its buffer. An
    /// ASCII address (nearly all) is lower-cased on the stack: the general path's `char`
    /// by `char` `String` was most of hashing one. `out` is unchanged on error.
    pub fn hash_email_into(&self, raw: &str, field: &str, out: &mut String) -> Result<()> {
        let t = raw.trim();
        if t.is_ascii() && t.len() <= EMAIL_MAX {
            let mut buf = [0u8; EMAIL_MAX];
            let lower = &mut buf[..t.len()];
            lower.copy_from_slice(t.as_bytes());
            lower.make_ascii_lowercase();
            if let Ok(email) = std::str::from_utf8(lower) {
                check_email(email, field)?;
                self.hash_bytes_into(lower, out);
                return Ok(());
            }
        }
        let normalized = normalize_email(raw, field)?;
        self.hash_bytes_into(normalized.as_bytes(), out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164() {
        let cases = [
            ("13812345678", "+8613812345678"),
            ("138 1234 5678", "+8613812345678"),
            ("+86 138-1234-5678", "+8613812345678"),
            ("0086 13812345678", "+8613812345678"),
            ("8613812345678", "+8613812345678"),
            ("１３８１２３４５６７８", "+8613812345678"),
            ("010-6552 9988", "+861065529988"),
            ("(021) 5432 1234", "+862154321234"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("+44 20 7946 0958", "+442079460958"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_phone(raw, "86", "phone").unwrap(), want, "{raw}");
        }
    }

    /// The first implementation (a `String` per step), kept as the oracle of
    /// [`normalize_phone`].
    fn reference_phone(raw: &str, default_country_code: &str, field: &str) -> Result<String> {
        let mut digits = String::with_capacity(raw.len());
        let mut plus = false;
        for (i, c) in raw.trim().chars().map(halfwidth).enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '(' | ')' | '/' | '\t' => {}
                _ => {
                    return Err(pii_err(
                        field,
                        "phone number has a character that is not a digit",
                    ));
                }
            }
        }
        if digits.is_empty() {
            return Err(pii_err(field, "phone number has no digits"));
        }
        // E.164 as a country code part and the rest (built once, below).
        let (cc, rest): (&str, &str) = if plus {
            ("", &digits)
        } else if let Some(rest) = digits.strip_prefix("00") {
            ("", rest)
        } else if default_country_code == "86" && digits.len() == 13 && digits.starts_with("861") {
            ("", &digits)
        } else {
            (
                default_country_code,
                digits.strip_prefix('0').unwrap_or(&digits),
            )
        };
        let e164_len = cc.len() + rest.len();
        if cc.bytes().chain(rest.bytes()).next() == Some(b'0') {
            return Err(pii_err(field, "phone number has no valid country code"));
        }
        if !(8..=15).contains(&e164_len) {
            return Err(pii_err(
                field,
                "phone number must have 8 to 15 digits in E.164",
            ));
        }
        let mut out = String::with_capacity(1 + e164_len);
        out.push('+');
        out.push_str(cc);
        out.push_str(rest);
        if let Some(national) = out[1..].strip_prefix("86")
            && is_cn_mobile_prefix(national.as_bytes())
            && national.len() != 11
        {
            return Err(pii_err(field, "Chinese mobile numbers have 11 digits"));
        }
        Ok(out)
    }

    #[test]
    fn phones_normalise_as_the_reference_does() {
        // Digits, separators, prefixes and lengths around every rule, and other
        // characters; errors must say the same too.
        let parts = [
            "",
            "+",
            "0",
            "00",
            "86",
            "861",
            "1",
            "13",
            "138",
            "12345678",
            "1234",
            "9",
            " ",
            "-",
            "(",
            ")",
            "x",
            "１",
            "+1",
            "0086",
            "010",
            "99999999999999999999",
        ];
        let mut n = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    let raw = format!("{a}{b}{c}");
                    for cc in ["86", "1", "44"] {
                        let got = normalize_phone(&raw, cc, "f").map_err(|e| e.to_string());
                        let want = reference_phone(&raw, cc, "f").map_err(|e| e.to_string());
                        assert_eq!(got, want, "{raw:?} with {cc}");
                        n += usize::from(got.is_ok());
                    }
                }
            }
        }
        assert!(n > 500, "only {n} valid numbers among the cases");
    }

    #[test]
    fn bad_phones_name_the_field_not_the_value() {
        for raw in [
            "",
            "abc",
            "138123",
            "+0123456789",
            "1381234567",
            "+1234567890123456",
            "138x1234",
        ] {
            let err = normalize_phone(raw, "86", "customer.mobile").unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("customer.mobile: "), "{msg}");
            if !raw.is_empty() {
                assert!(!msg.contains(raw), "{msg} leaks {raw}");
            }
        }
    }

    #[test]
    fn emails_normalise() {
        assert_eq!(
            normalize_email("  Li.Lei@Example.COM ", "email").unwrap(),
            "li.lei@example.com"
        );
        assert_eq!(normalize_email("a＠b.cn", "email").unwrap(), "a@b.cn");
        for bad in [
            "", "nobody", "a@b", "a@@b.cn", "@b.cn", "a@b..cn", "a b@c.cn",
        ] {
            let err = normalize_email(bad, "email").unwrap_err();
            assert!(err.to_string().starts_with("email: "), "{err}");
        }
    }

    /// The first implementation of e-mail normalisation, kept as the oracle of
    /// [`PiiHasher::hash_email`]'s ASCII path.
    fn reference_email(raw: &str, field: &str) -> Result<String> {
        let email: String = raw
            .trim()
            .chars()
            .map(halfwidth)
            .flat_map(char::to_lowercase)
            .collect();
        let (local, domain) = email
            .split_once('@')
            .ok_or_else(|| pii_err(field, "e-mail address has no @"))?;
        if domain.contains('@') {
            return Err(pii_err(field, "e-mail address has more than one @"));
        }
        if local.is_empty() || local.len() > 64 {
            return Err(pii_err(field, "e-mail local part must have 1 to 64 bytes"));
        }
        if domain.len() > 253
            || !domain.contains('.')
            || domain.split('.').any(str::is_empty)
            || email.len() > 254
        {
            return Err(pii_err(field, "e-mail domain is not a dotted host name"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(pii_err(field, "e-mail address contains white space"));
        }
        Ok(email)
    }

    #[test]
    fn emails_hash_as_the_reference_normalises_them() {
        let h = PiiHasher::new(b"salt", "86").unwrap();
        let parts = [
            "",
            "a",
            "Li.Lei",
            "@",
            "@@",
            ".",
            "..",
            "Example.CN",
            " ",
            "\t",
            "\u{3000}",
            "\u{7f}",
            "Ｂ",
            "＠",
            "İ",
            "ß",
            "é",
            "x-y_z+1",
            "\n",
        ];
        let mut inputs: Vec<String> = Vec::new();
        for a in parts {
            for b in parts {
                for c in parts {
                    inputs.push(format!("{a}{b}{c}"));
                    inputs.push(format!("{a}@{b}.{c}"));
                }
            }
        }
        // Around the length limits: local part 64/65 bytes, whole address 254/255.
        for (local, domain) in [(64, 10), (65, 10), (64, 189), (64, 190), (10, 300)] {
            inputs.push(format!("{}@{}.cn", "a".repeat(local), "B".repeat(domain)));
        }
        let mut ok = 0;
        for raw in &inputs {
            let want = reference_email(raw, "email").map(|e| h.hash_normalized(&e));
            let got = h.hash_email(raw, "email");
            assert_eq!(
                got.as_ref().map_err(ToString::to_string),
                want.as_ref().map_err(ToString::to_string),
                "{raw:?}"
            );
            assert_eq!(
                normalize_email(raw, "email").map_err(|e| e.to_string()),
                reference_email(raw, "email").map_err(|e| e.to_string()),
                "{raw:?}"
            );
            ok += usize::from(want.is_ok());
        }
        assert!(ok > 500, "{ok} of {} inputs are e-mails", inputs.len());
    }

    #[test]
    fn hash_is_hmac_sha256_of_normalised_value() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let h = PiiHasher::new(b"Jefe", "86").unwrap();
        assert_eq!(
            h.hash_normalized("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let a = h.hash_phone("138 1234 5678", "phone").unwrap();
        let b = h.hash_phone("+8613812345678", "phone").unwrap();
        assert_eq!(a, b);
        let other = PiiHasher::new(b"another salt", "86").unwrap();
        assert_ne!(a, other.hash_phone("13812345678", "phone").unwrap());
        assert!(!format!("{h:?}").contains("Jefe"));
    }

    #[test]
    fn hasher_config_is_validated() {
        assert!(PiiHasher::new(b"", "86").is_err());
        assert!(PiiHasher::new(b"s", "086").is_err());
        assert!(PiiHasher::new(b"s", "x").is_err());
        assert!(PiiHasher::new(b"s", "1").is_ok());
    }
}
