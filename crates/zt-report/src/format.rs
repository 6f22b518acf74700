//! Number, money and text formatting shared by both renderers.

/// What an absent value (SQL NULL) renders as.
pub(crate) const NULL: &str = "-";

/// `s` without control characters and bidirectional overrides (user data must not move
/// the terminal's cursor or reorder the page): each becomes U+FFFD.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Terminal columns of `c`: 2 for East Asian wide and fullwidth characters, 0 for
/// combining marks and zero-width characters, else 1.
fn char_width(c: char) -> usize {
    let u = u32::from(c);
    if matches!(u, 0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F) {
        return 0;
    }
    if matches!(
        u,
        0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x2FFFD
            | 0x30000..=0x3FFFD
    ) {
        return 2;
    }
    1
}

/// Terminal columns of `s`.
pub(crate) fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to at most `max` terminal columns, ending with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// Thousands grouping (`,`) of the decimal digits `digits`.
fn group(digits: &str) -> String {
    let n = digits.len();
    let mut out = String::with_capacity(n + n / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with thousands separators: `12,345`.
pub(crate) fn count(n: u64) -> String {
    group(&n.to_string())
}

/// Appends the currency (when known) to an amount.
fn with_currency(amount: String, currency: &str) -> String {
    let currency = clean(currency);
    if currency.is_empty() {
        amount
    } else {
        format!("{amount} {currency}")
    }
}

/// Integer minor units (fen) as major units with 2 decimals, exactly: `12,345.67 CNY`.
pub(crate) fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    with_currency(
        format!("{sign}{}.{:02}", group(&(abs / 100).to_string()), abs % 100),
        currency,
    )
}

/// Fractional minor units (an average) as major units with 2 decimals; `-` for NULL.
pub(crate) fn money_f(minor: Option<f64>, currency: &str) -> String {
    match minor.filter(|x| x.is_finite()) {
        None => NULL.to_owned(),
        Some(x) => {
            let major = x / 100.0;
            let s = format!("{:.2}", major.abs());
            let (int, frac) = s.split_once('.').unwrap_or((s.as_str(), "00"));
            let sign = if major < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
                "-"
            } else {
                ""
            };
            with_currency(format!("{sign}{}.{frac}", group(int)), currency)
        }
    }
}

/// A number with `decimals` decimals; `-` for NULL.
pub(crate) fn num(x: Option<f64>, decimals: usize) -> String {
    match x.filter(|x| x.is_finite()) {
        None => NULL.to_owned(),
        Some(x) => format!("{x:.decimals$}"),
    }
}

/// A fraction as a percentage with one decimal: `45.3 %`; `-` for NULL.
pub(crate) fn pct(x: Option<f64>) -> String {
    match x.filter(|x| x.is_finite()) {
        None => NULL.to_owned(),
        Some(x) => format!("{:.1} %", x * 100.0),
    }
}

/// A difference of two fractions in percentage points, signed: `+1.2 pp`.
pub(crate) fn pp(x: f64, decimals: usize) -> String {
    if !x.is_finite() {
        return NULL.to_owned();
    }
    let v = x * 100.0;
    let s = format!("{:.decimals$}", v.abs());
    let zero = !s.chars().any(|c| c.is_ascii_digit() && c != '0');
    let sign = if zero {
        "±"
    } else if v < 0.0 {
        "-"
    } else {
        "+"
    };
    format!("{sign}{s} pp")
}

/// A confidence (1 - p) as a percentage that never rounds up to 100 %.
pub(crate) fn confidence(c: f64) -> String {
    if !c.is_finite() {
        NULL.to_owned()
    } else if c >= 0.999 {
        "> 99.9 %".to_owned()
    } else {
        format!("{:.1} %", (c * 1000.0).floor() / 10.0)
    }
}

/// A p-value: 4 decimals, `< 0.0001` below that.
pub(crate) fn p_value(p: f64) -> String {
    if !p.is_finite() {
        NULL.to_owned()
    } else if p < 0.0001 {
        "< 0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

/// `p = 0.0312` or `p < 0.0001`.
pub(crate) fn p_eq(p: f64) -> String {
    let s = p_value(p);
    if s.starts_with('<') {
        format!("p {s}")
    } else {
        format!("p = {s}")
    }
}

/// An optional p-value.
pub(crate) fn p_value_opt(p: Option<f64>) -> String {
    p.map_or_else(|| NULL.to_owned(), p_value)
}

/// `yes` / `no` / `-`.
pub(crate) fn yes_no(b: Option<bool>) -> String {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => NULL,
    }
    .to_owned()
}

/// A string column (channel, carrier, ...): cleaned, `(none)` when empty.
pub(crate) fn label(s: &str) -> String {
    if s.is_empty() {
        "(none)".to_owned()
    } else {
        clean(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_and_grouped() {
        assert_eq!(money(123_456_789, "CNY"), "1,234,567.89 CNY");
        assert_eq!(money(-5, "CNY"), "-0.05 CNY");
        assert_eq!(money(0, ""), "0.00");
        assert_eq!(money(i64::MIN, "CNY"), "-92,233,720,368,547,758.08 CNY");
        assert_eq!(money_f(Some(12_345.6), "CNY"), "123.46 CNY");
        assert_eq!(money_f(Some(-0.1), "CNY"), "0.00 CNY");
        assert_eq!(money_f(Some(-150_000.0), "CNY"), "-1,500.00 CNY");
        assert_eq!(money_f(None, "CNY"), "-");
        assert_eq!(money_f(Some(f64::NAN), "CNY"), "-");
    }

    #[test]
    fn ratios_and_statistics() {
        assert_eq!(pct(Some(0.4531)), "45.3 %");
        assert_eq!(pct(None), "-");
        assert_eq!(pp(0.0123, 1), "+1.2 pp");
        assert_eq!(pp(-0.0123, 2), "-1.23 pp");
        assert_eq!(pp(-0.00001, 1), "±0.0 pp");
        assert_eq!(confidence(0.9749), "97.4 %");
        assert_eq!(confidence(0.99999), "> 99.9 %");
        assert_eq!(p_value(0.00001), "< 0.0001");
        assert_eq!(p_value(0.0312), "0.0312");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
    }

    #[test]
    fn text_is_cleaned_and_measured() {
        assert_eq!(clean("a\u{1b}[31mb\u{202E}"), "a\u{FFFD}[31mb\u{FFFD}");
        assert_eq!(width("重要价值客户"), 12);
        assert_eq!(width("abc"), 3);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("重要价值", 5), "重要…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
