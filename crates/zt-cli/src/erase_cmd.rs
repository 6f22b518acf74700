//! `zt erase`: the arguments, the hashing of phones and e-mails, and the printed report
//! (the work is in `zt_ops::erase`; docs/erasure.md). Nothing printed carries an
//! identifier, a person id or a raw phone or e-mail: the erasure id and counts only.

use std::fmt::Write as _;

use anyhow::bail;
use zt_ingest::fields::HASHED_PREFIX;
use zt_model::pii::PiiHasher;
use zt_ops::erase::{EraseRequest, ErasureReport};

use crate::settings::Settings;

/// Arguments of `zt erase`. Every selector may be repeated; at least one is needed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EraseArgs {
    /// A person id (as in `person_id` columns and `zt.profiles` keys).
    #[arg(long = "person", value_name = "ID")]
    pub persons: Vec<String>,
    /// A CRM customer id.
    #[arg(long = "crm-customer-id", value_name = "ID")]
    pub crm_customer_ids: Vec<String>,
    /// A user id (logged-in account id).
    #[arg(long = "user-id", value_name = "ID")]
    pub user_ids: Vec<String>,
    /// An anonymous (device / cookie) id.
    #[arg(long = "anonymous-id", value_name = "ID")]
    pub anonymous_ids: Vec<String>,
    /// A phone number as given by the person (normalised and hashed with pii.salt exactly
    /// as ingest does; `zt-hashed:<64 hex>` is taken as an existing hash).
    #[arg(long = "phone", value_name = "PHONE")]
    pub phones: Vec<String>,
    /// An e-mail address (normalised and hashed like --phone).
    #[arg(long = "email", value_name = "EMAIL")]
    pub emails: Vec<String>,
    /// Also read selectors from standard input, one per line: `<selector> <value>` with
    /// the selector a flag's name without dashes (`phone 13812345678`,
    /// `crm-customer-id C-1001`); blank lines and lines starting with `#` are skipped. Keeps
    /// personal data off the command line (shell history, `ps`).
    #[arg(long)]
    pub stdin: bool,
    /// Resolve and count, print the plan; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Erase for real (without it, `zt erase` only prints the plan and refuses).
    #[arg(long, conflicts_with = "dry_run")]
    pub yes: bool,
}

/// The request these arguments name, phones and e-mails hashed. Errors name the flag,
/// never the value.
pub fn request(args: &EraseArgs, hasher: &PiiHasher) -> anyhow::Result<EraseRequest> {
    let mut req = EraseRequest::default();
    for p in &args.persons {
        req.persons.push(plain("--person", p)?);
    }
    for (flag, kind, values) in [
        (
            "--crm-customer-id",
            "crm_customer_id",
            &args.crm_customer_ids,
        ),
        ("--user-id", "user_id", &args.user_ids),
        ("--anonymous-id", "anonymous_id", &args.anonymous_ids),
    ] {
        for v in values {
            req.identifiers.push((kind.to_owned(), plain(flag, v)?));
        }
    }
    for v in &args.phones {
        req.identifiers
            .push(("phone_hash".to_owned(), hashed("--phone", v, hasher, true)?));
    }
    for v in &args.emails {
        req.identifiers.push((
            "email_hash".to_owned(),
            hashed("--email", v, hasher, false)?,
        ));
    }
    if req.persons.is_empty() && req.identifiers.is_empty() {
        bail!(
            "name at least one of --person, --crm-customer-id, --user-id, --anonymous-id, \
             --phone or --email"
        );
    }
    Ok(req)
}

/// Adds the selectors of `text` (the `--stdin` format) to `args`. Errors name the line
/// and the selector, never the value.
pub fn add_selectors(args: &mut EraseArgs, text: &str) -> anyhow::Result<()> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (selector, value) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(s, v)| (s, v.trim()));
        let list = match selector {
            "person" => &mut args.persons,
            "crm-customer-id" => &mut args.crm_customer_ids,
            "user-id" => &mut args.user_ids,
            "anonymous-id" => &mut args.anonymous_ids,
            "phone" => &mut args.phones,
            "email" => &mut args.emails,
            _ => bail!(
                "standard input, line {}: the selector must be person, crm-customer-id,                  user-id, anonymous-id, phone or email",
                i + 1
            ),
        };
        if value.is_empty() {
            bail!("standard input, line {}: {selector} without a value", i + 1);
        }
        list.push(value.to_owned());
    }
    Ok(())
}

/// An id as given; only an empty one is refused (it would match every row without one).
fn plain(flag: &str, v: &str) -> anyhow::Result<String> {
    if v.trim().is_empty() {
        bail!("{flag}: the value is empty");
    }
    Ok(v.to_owned())
}

/// A phone or e-mail hashed as ingest hashes it.
fn hashed(flag: &str, v: &str, hasher: &PiiHasher, phone: bool) -> anyhow::Result<String> {
    if let Some(h) = v.trim().strip_prefix(HASHED_PREFIX) {
        if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(h.to_ascii_lowercase());
        }
        bail!("{flag}: {HASHED_PREFIX} must be followed by 64 hex digits");
    }
    let r = if phone {
        hasher.hash_phone(v, flag)
    } else {
        hasher.hash_email(v, flag)
    };
    r.map_err(|e| match e {
        zt_model::Error::Pii { field, reason } => anyhow::anyhow!("{field}: {reason}"),
        other => anyhow::anyhow!("{flag}: {other}"),
    })
}

/// Runs `zt erase`.
pub async fn run(settings: &Settings, args: &EraseArgs) -> anyhow::Result<()> {
    let mut args = args.clone();
    if args.stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| anyhow::anyhow!("reading the selectors from standard input: {e}"))?;
        add_selectors(&mut args, &text)?;
    }
    let args = &args;
    let req = request(args, &settings.pii.hasher()?)?;
    let dry_run = args.dry_run || !args.yes;
    let report = zt_ops::erase::erase(
        &settings.kafka,
        &settings.topics,
        &settings.clickhouse,
        &req,
        dry_run,
    )
    .await?;
    print!("{}", render(&report));
    if !args.dry_run && !args.yes {
        bail!(
            "nothing was erased: the plan above would erase {} persons and {} identifiers \
             ({} rows, {} suppression records, {} tombstones); add --yes to erase them",
            report.persons,
            report.identifiers,
            report.rows_total(),
            report.suppressed,
            report.tombstones
        );
    }
    Ok(())
}

/// The plan (dry run) or the outcome, counts only.
pub fn render(r: &ErasureReport) -> String {
    let mut out = String::new();
    let will = |done: &str| {
        if r.dry_run {
            format!("would be {done}")
        } else {
            done.to_owned()
        }
    };
    if r.dry_run {
        let _ = writeln!(out, "dry run: nothing was written or deleted");
    } else {
        let _ = writeln!(out, "erasure {}", r.erasure_id);
    }
    let _ = writeln!(
        out,
        "persons: {}, identifiers besides person ids: {}",
        r.persons, r.identifiers
    );
    let _ = writeln!(
        out,
        "suppression records {}: {}",
        will("written"),
        r.suppressed
    );
    let _ = writeln!(
        out,
        "ClickHouse rows {}: {}",
        will("deleted"),
        r.rows_total()
    );
    let w = r
        .rows_deleted
        .keys()
        .chain(&r.skipped_tables)
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (t, n) in &r.rows_deleted {
        let _ = writeln!(out, "  {t:<w$}  {n:>10}");
    }
    for t in &r.skipped_tables {
        let _ = writeln!(out, "  {t:<w$}  {:>10}", "(missing)");
    }
    let _ = writeln!(out, "tombstones {}: {}", will("written"), r.tombstones);
    if !r.dry_run {
        let _ = writeln!(out, "audit record written (key {})", r.erasure_id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PiiHasher {
        PiiHasher::new(b"test-salt", "86").unwrap()
    }

    #[test]
    fn selectors_from_standard_input() {
        let mut args = EraseArgs::default();
        add_selectors(
            &mut args,
            "# a request\nphone 138 1234 5678\n\n  crm-customer-id   C-1 \nemail li@example.com\n",
        )
        .unwrap();
        assert_eq!(args.phones, vec!["138 1234 5678".to_string()]);
        assert_eq!(args.crm_customer_ids, vec!["C-1".to_string()]);
        assert_eq!(args.emails, vec!["li@example.com".to_string()]);
        let e = add_selectors(&mut args, "phone 1\nmobile 13812345678\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && !e.contains("1381"), "{e}");
        let e = add_selectors(&mut args, "email\n").unwrap_err().to_string();
        assert!(e.contains("line 1: email without a value"), "{e}");
    }

    #[test]
    fn phones_and_emails_are_hashed_like_ingest() {
        let h = hasher();
        let args = EraseArgs {
            phones: vec!["138 1234 5678".into()],
            emails: vec![" Li@Example.com".into()],
            user_ids: vec!["u1".into()],
            persons: vec!["p1".into()],
            ..Default::default()
        };
        let req = request(&args, &h).unwrap();
        assert_eq!(req.persons, vec!["p1".to_string()]);
        assert!(req.identifiers.contains(&(
            "phone_hash".into(),
            h.hash_phone("13812345678", "x").unwrap()
        )));
        assert!(req.identifiers.contains(&(
            "email_hash".into(),
            h.hash_email("li@example.com", "x").unwrap()
        )));
        assert!(req.identifiers.contains(&("user_id".into(), "u1".into())));
        // Raw values never reach the request.
        assert!(
            !req.identifiers
                .iter()
                .any(|(_, v)| v.contains("1234") || v.contains('@'))
        );
        let pre = format!("{HASHED_PREFIX}{}", "AB".repeat(32));
        let args = EraseArgs {
            phones: vec![pre],
            ..Default::default()
        };
        assert_eq!(
            request(&args, &h).unwrap().identifiers[0].1,
            "ab".repeat(32)
        );
    }

    #[test]
    fn errors_name_the_flag_not_the_value() {
        let h = hasher();
        let e = request(
            &EraseArgs {
                phones: vec!["call-me-x".into()],
                ..Default::default()
            },
            &h,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--phone: ") && !e.contains("call-me"), "{e}");
        let e = request(
            &EraseArgs {
                emails: vec!["nobody-at-example".into()],
                ..Default::default()
            },
            &h,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--email: ") && !e.contains("nobody"), "{e}");
        let e = request(
            &EraseArgs {
                user_ids: vec!["".into()],
                ..Default::default()
            },
            &h,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--user-id: "), "{e}");
        assert!(request(&EraseArgs::default(), &h).is_err());
    }

    #[test]
    fn the_report_is_counts_only() {
        let r = ErasureReport {
            erasure_id: "er-20250101T000000Z-0123456789abcdef".into(),
            dry_run: false,
            persons: 2,
            identifiers: 7,
            suppressed: 9,
            rows_deleted: [("events".to_string(), 40u64), ("profiles".into(), 2)].into(),
            tombstones: 13,
            skipped_tables: vec!["experiment_progress".into()],
        };
        let s = render(&r);
        assert!(
            s.contains("erasure er-20250101T000000Z-0123456789abcdef"),
            "{s}"
        );
        assert!(s.contains("ClickHouse rows deleted: 42"), "{s}");
        assert!(s.contains("(missing)"), "{s}");
        let d = render(&ErasureReport { dry_run: true, ..r });
        assert!(
            d.contains("would be deleted: 42") && !d.contains("audit"),
            "{d}"
        );
    }
}
