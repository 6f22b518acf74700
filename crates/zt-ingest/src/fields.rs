//! Typed, path-aware access to the fields of one JSON record, with the source's mapping
//! applied (field renames, time format, money unit). Every error names the field by its
//! JSON path and the reason, never the value.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::scan;
use serde_json::{Map, Value};
use time::format_description::OwnedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::config::{AmountUnit, Mapping};
use crate::error::{Reason, Rejection};
use zt_model::pii::PiiHasher;

/// Prefix of an identifier that was hashed already (dead letters carry PII only in this
/// form, so a replayed record is accepted without the raw value).
pub const HASHED_PREFIX: &str = "zt-hashed:";

/// How a source writes times.
#[derive(Debug, Clone)]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 with an offset, e.g. `2026-01-05T10:00:00+08:00`.
    Rfc3339,
    /// Integer milliseconds since the epoch.
    UnixMs,
    /// Integer (or decimal) seconds since the epoch.
    UnixS,
    /// A pattern without offset, read at a fixed offset.
    Pattern(OwnedFormatItem, UtcOffset),
}

impl TimeFormat {
    /// Parses the `time_format` / `time_zone` mapping settings.
    pub fn parse(format: &str, zone: &str) -> Result<TimeFormat, String> {
        match format {
            "rfc3339" => Ok(TimeFormat::Rfc3339),
            "unix_ms" => Ok(TimeFormat::UnixMs),
            "unix_s" => Ok(TimeFormat::UnixS),
            pattern => {
                let mut desc = String::new();
                let mut chars = pattern.chars();
                while let Some(c) = chars.next() {
                    if c != '%' {
                        if c == '[' {
                            desc.push_str("[[");
                        } else {
                            desc.push(c);
                        }
                        continue;
                    }
                    let item = match chars.next() {
                        Some('Y') => "[year]",
                        Some('m') => "[month]",
                        Some('d') => "[day]",
                        Some('H') => "[hour]",
                        Some('M') => "[minute]",
                        Some('S') => "[second]",
                        Some('f') => "[subsecond]",
                        _ => {
                            return Err(format!(
                                "time_format {pattern:?}: only %Y %m %d %H %M %S %f are supported"
                            ));
                        }
                    };
                    desc.push_str(item);
                }
                let items = time::format_description::parse_owned::<2>(&desc)
                    .map_err(|e| format!("time_format {pattern:?}: {e}"))?;
                let offset = parse_offset(zone)
                    .ok_or_else(|| format!("time_zone {zone:?} is not an offset like +08:00"))?;
                Ok(TimeFormat::Pattern(items, offset))
            }
        }
    }
}

fn parse_offset(zone: &str) -> Option<UtcOffset> {
    if zone == "Z" || zone == "UTC" {
        return Some(UtcOffset::UTC);
    }
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1i8, &zone[1..]),
        b'-' => (-1i8, &zone[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

/// Parses an RFC 3339 time to epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(epoch_ms)
}

/// `t` in epoch milliseconds, rounded toward zero as `unix_timestamp_nanos() / 1_000_000`
/// is, without its 128-bit division (a measurable part of reading a time).
fn epoch_ms(t: OffsetDateTime) -> i64 {
    let (secs, nanos) = (t.unix_timestamp(), i64::from(t.nanosecond()));
    // `secs` is floored and `nanos` non-negative: before 1970, a part of a millisecond
    // rounds up toward zero.
    secs * 1000 + nanos / 1_000_000 + i64::from(secs < 0 && nanos % 1_000_000 != 0)
}

/// What the normalisers need besides the record.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The source's mapping.
    pub mapping: &'a Mapping,
    /// Its parsed time format.
    pub time_format: &'a TimeFormat,
    /// PII hasher.
    pub hasher: &'a PiiHasher,
}

/// A JSON object read lazily: its members' names (borrowed from the request body unless
/// they hold escapes) and their values as raw JSON text, each parsed only when a
/// normaliser reads it. Building a `serde_json::Value` tree of the whole record (a `String`
/// per key, a tree node per few members) was the largest single cost of ingest.
///
/// The members are listed by [`crate::scan`] in one pass, or by serde_json where the
/// scanner declines.
#[derive(Debug)]
pub struct Flat<'a> {
    src: &'a str,
    members: scan::MemberList<'a>,
    /// The objects and arrays nested in it, when the scan listed them.
    nested: Option<scan::View<'a, 'a>>,
}

impl<'a> Flat<'a> {
    /// The object `src`, when `src` is one JSON object; `None` for any other JSON value
    /// and for text that is not JSON (the caller's full parse then says what is wrong).
    pub fn parse(src: &'a str) -> Option<Flat<'a>> {
        if src.trim_start().as_bytes().first() != Some(&b'{') {
            return None;
        }
        let members = scan::object(src).or_else(|| serde_members(src))?;
        Some(Flat::from_members(src, members))
    }

    /// The object `src` whose members [`crate::scan`] listed already.
    pub(crate) fn from_members(src: &'a str, members: scan::Members<'a>) -> Flat<'a> {
        Flat::from_listed(src, scan::MemberList::owned(members))
    }

    /// The object whose members the scan of the request listed ([`scan::Nested`]).
    pub(crate) fn from_listed(src: &'a str, members: scan::MemberList<'a>) -> Flat<'a> {
        Flat {
            src,
            members,
            nested: None,
        }
    }

    /// The object with the objects and arrays nested in it listed already (by
    /// [`scan::object_nested`]).
    pub(crate) fn with_nested(self, nested: scan::View<'a, 'a>) -> Flat<'a> {
        Flat {
            nested: Some(nested),
            ..self
        }
    }

    /// The whole object as a value tree.
    pub fn into_value(self) -> Value {
        serde_json::from_str(self.src).unwrap_or(Value::Null)
    }
}

/// A JSON object inside a record, read from its text like [`Flat`], with the
/// [`name_bit`]s of its names: how the Segment normaliser reads a call's `context`,
/// `properties` and `traits` without a value tree. Its members are borrowed from what the
/// scan of the request listed ([`scan::Nested`]) when it did, else scanned here.
#[derive(Debug, Default)]
pub(crate) struct Object<'t> {
    members: Cow<'t, [(Cow<'t, str>, &'t str)]>,
    names: u128,
    nested: Option<scan::View<'t, 't>>,
}

impl<'t> Object<'t> {
    /// The object `src` (raw JSON text), `None` when it is not one JSON object. Its
    /// members (and those of the objects in it) are looked up in `nested` first.
    pub(crate) fn parse(src: &'t str, nested: Option<scan::View<'t, 't>>) -> Option<Object<'t>> {
        let members = match nested.as_ref().and_then(|n| n.object(src)) {
            Some(m) => Cow::Borrowed(m),
            None => Flat::parse(src)?.members.into_cow(),
        };
        Some(Object::of(members, nested))
    }

    /// The object whose members are listed already.
    pub(crate) fn of(
        members: Cow<'t, [(Cow<'t, str>, &'t str)]>,
        nested: Option<scan::View<'t, 't>>,
    ) -> Object<'t> {
        let names = members.iter().fold(0, |acc, (k, _)| acc | name_bit(k));
        Object {
            members,
            names,
            nested,
        }
    }

    /// What the scan listed of the objects and arrays nested in this one.
    pub(crate) fn nested(&self) -> Option<scan::View<'t, 't>> {
        self.nested
    }

    /// The raw value of the last member named `name` (`null` included), as a value tree
    /// keeps the last of repeated names.
    #[inline(always)]
    pub(crate) fn get(&self, name: &str) -> Option<&'t str> {
        find(&self.members, self.names, name)
    }

    /// The members in order, each with whether it is the last of its name (a value
    /// tree keeps only those).
    pub(crate) fn members(&self) -> impl Iterator<Item = (&str, &'t str, bool)> + '_ {
        let members: &[(Cow<'t, str>, &'t str)] = &self.members;
        // Repeated names are rare: find whether there are any in one pass, with the name
        // bits of the members seen so far.
        let mut seen = 0u128;
        let repeats = members.iter().enumerate().any(|(i, (k, _))| {
            let bit = name_bit(k);
            let maybe = seen & bit != 0 && members[..i].iter().any(|(j, _)| j == k);
            seen |= bit;
            maybe
        });
        members.iter().enumerate().map(move |(i, (k, v))| {
            let last = !repeats || !members[i + 1..].iter().any(|(j, _)| j == k);
            (k.as_ref(), *v, last)
        })
    }
}

/// The members of the JSON object `src` as serde_json lists them (names decoded, values
/// as raw text), or `None` when `src` is not one JSON object.
pub fn serde_members(src: &str) -> Option<scan::Members<'_>> {
    let members: Members<'_> = serde_json::from_str(src).ok()?;
    Some(members.0)
}

/// An object's members, in order, duplicates kept (the last one is read, as a value
/// tree keeps the last).
struct Members<'a>(scan::Members<'a>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members<'de>, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(16));
                while let Some(Name(k)) = m.next_key()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v.get()));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A member's name, borrowed when it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A record's members: a value tree, or read lazily ([`Flat`]) with the [`name_bit`]s of
/// its names (most names a normaliser asks for are absent; the mask says so without
/// comparing names).
#[derive(Debug)]
enum Obj<'a> {
    Tree(Map<String, Value>),
    Flat {
        members: scan::MemberList<'a>,
        names: u128,
    },
}

/// One of 128 bits standing for a member name (a multiplicative hash of its length and
/// its first, middle and last bytes): a name whose bit is not in a record's mask is not
/// among its members. For a literal name the compiler works the bit out. (64 bits from
/// the length and the last byte let through 7 of the 31 absent names an ERP order asks
/// for; this lets through about one in ten with a dozen members.)
#[inline(always)]
pub(crate) fn name_bit(name: &str) -> u128 {
    let b = name.as_bytes();
    let (first, mid, last) = match b {
        [] => (0, 0, 0),
        [f, ..] => (*f, b[b.len() / 2], b[b.len() - 1]),
    };
    let x = (b.len() as u32)
        ^ (u32::from(first) << 8)
        ^ (u32::from(mid) << 16)
        ^ (u32::from(last) << 24);
    1 << (x.wrapping_mul(0x9E37_79B1) >> 25)
}

/// The text of raw JSON `s` (one valid JSON value) when it is a string without escapes:
/// then the characters between the quotes are the text.
pub(crate) fn plain_string(s: &str) -> Option<&str> {
    match s.as_bytes() {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => Some(&s[1..s.len() - 1]),
        _ => None,
    }
}

/// The number raw JSON `s` (one valid JSON value) holds when it is a non-negative integer
/// of at most 18 digits (so within `i64` too).
fn small_uint(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if (1..=18).contains(&b.len()) && b.iter().all(u8::is_ascii_digit) {
        s.parse().ok()
    } else {
        None
    }
}

/// The value of raw JSON text `s` (one valid JSON value): `None` only for text that is
/// not JSON.
fn parse_raw(s: &str) -> Option<Value> {
    text_val(s).map(|v| v.into_value().into_owned())
}

/// [`Val`] of raw JSON text `s` (one valid JSON value; `null` included): a string
/// without escapes and a small non-negative integer as they are, anything else parsed.
/// `None` only for text that is not JSON.
fn text_val(s: &str) -> Option<Val<'_>> {
    if let Some(t) = plain_string(s) {
        return Some(Val::Str(t));
    }
    if let Some(n) = small_uint(s) {
        return Some(Val::Int(n));
    }
    serde_json::from_str(s)
        .ok()
        .map(|v| Val::Tree(Cow::Owned(v)))
}

/// [`text_val`] of a member's raw value, `None` for `null` (absent).
fn present(raw: &str) -> Option<Val<'_>> {
    text_val(raw).filter(|v| !matches!(v, Val::Tree(t) if t.is_null()))
}

/// A member's value as [`Record::val`] gives it.
enum Val<'v> {
    /// A string without escapes, borrowed from the record's text.
    Str(&'v str),
    /// A non-negative integer of at most 18 digits.
    Int(u64),
    /// Anything else (and every value of a value tree).
    Tree(Cow<'v, Value>),
}

impl<'v> Val<'v> {
    fn into_value(self) -> Cow<'v, Value> {
        match self {
            Val::Str(s) => Cow::Owned(Value::String(s.to_owned())),
            Val::Int(n) => Cow::Owned(Value::from(n)),
            Val::Tree(v) => v,
        }
    }
}

/// The raw value of the last member named `name`.
fn find<'a>(members: &[(Cow<'a, str>, &'a str)], names: u128, name: &str) -> Option<&'a str> {
    if names & name_bit(name) == 0 {
        return None;
    }
    members
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| *v)
}

/// An element of an array of records ([`Record::elements`]).
#[derive(Debug)]
pub enum Elem<'a> {
    /// Read from a value tree.
    Value(Value),
    /// Raw JSON text of a lazily read record.
    Raw(&'a str),
    /// An object of a lazily read record, its members listed already.
    Flat(Flat<'a>),
}

/// One JSON object being read, with its path for error messages.
#[derive(Debug)]
pub struct Record<'a> {
    obj: Obj<'a>,
    path: Path,
    ctx: &'a Ctx<'a>,
    /// What the scan listed of the objects and arrays nested in a lazily read record.
    nested: Option<scan::View<'a, 'a>>,
}

/// Where a record sits in its item, for error messages. An element of a top-level array
/// (an order line) keeps the array's name and its index, formatted only when an error
/// names one of its fields: formatting `lines[0]` for every line was a measurable part
/// of normalising an order.
#[derive(Debug, Clone)]
enum Path {
    /// A path as text; empty at the top level.
    Text(String),
    /// Element `.1` of the top-level array `.0`.
    Element(&'static str, usize),
}

impl Path {
    /// The path as text (`$` at the top level).
    fn own(&self) -> String {
        match self {
            Path::Text(p) if p.is_empty() => "$".to_owned(),
            Path::Text(p) => p.clone(),
            Path::Element(array, i) => format!("{array}[{i}]"),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Record<'a> {
    /// Wraps an object, applying the mapping's renames. `path` is the record's own path
    /// (empty for the top level).
    pub fn new(value: Value, path: &str, ctx: &'a Ctx<'a>) -> Result<Self, Rejection> {
        Self::new_at(value, Path::Text(path.to_owned()), ctx)
    }

    fn new_at(value: Value, path: Path, ctx: &'a Ctx<'a>) -> Result<Self, Rejection> {
        let Value::Object(mut obj) = value else {
            return Err(Rejection::field(
                Reason::WrongType,
                path.own(),
                format!("expected an object, found {}", type_name(&value)),
            ));
        };
        for (from, to) in &ctx.mapping.renames {
            if let Some(v) = obj.remove(from) {
                obj.insert(to.clone(), v);
            }
        }
        Ok(Record {
            obj: Obj::Tree(obj),
            path,
            ctx,
            nested: None,
        })
    }

    /// Wraps a lazily read object ([`Flat`]), applying the mapping's renames as
    /// [`Record::new`] does: the (last) member named `from` is renamed `to`, replacing any
    /// member already named `to`.
    pub fn from_flat(flat: Flat<'a>, path: &str, ctx: &'a Ctx<'a>) -> Self {
        Self::from_flat_at(flat, Path::Text(path.to_owned()), ctx)
    }

    fn from_flat_at(flat: Flat<'a>, path: Path, ctx: &'a Ctx<'a>) -> Self {
        let mut m = flat.members;
        for (from, to) in &ctx.mapping.renames {
            if let Some(i) = m.iter().rposition(|(k, _)| k.as_ref() == from.as_str()) {
                let v = m[i].1;
                let owned = m.to_mut();
                owned.retain(|(k, _)| k.as_ref() != from.as_str() && k.as_ref() != to.as_str());
                owned.push((Cow::Borrowed(to.as_str()), v));
            }
        }
        let names = m.iter().fold(0, |acc, (k, _)| acc | name_bit(k));
        Record {
            obj: Obj::Flat { members: m, names },
            path,
            ctx,
            nested: flat.nested,
        }
    }

    /// The path of `name` inside this record (`name` itself at the top level).
    pub fn path_of<'n>(&self, name: &'n str) -> Cow<'n, str> {
        match &self.path {
            Path::Text(p) if p.is_empty() => Cow::Borrowed(name),
            Path::Text(p) => Cow::Owned(format!("{p}.{name}")),
            Path::Element(array, i) => Cow::Owned(format!("{array}[{i}].{name}")),
        }
    }

    /// The member `name` unless absent or null: borrowed from a value tree, parsed from a
    /// lazily read object.
    fn get(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.val(name).map(Val::into_value)
    }

    /// The member `name` unless absent or null, as the accessors read it: a lazily read
    /// string without escapes or small non-negative integer as it is, anything else as a
    /// value. (Building a `Value` for every field read was a measurable cost.)
    fn val(&self, name: &str) -> Option<Val<'_>> {
        match &self.obj {
            Obj::Tree(m) => m
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| Val::Tree(Cow::Borrowed(v))),
            Obj::Flat { members, names } => present(find(members, *names, name)?),
        }
    }

    /// True when the record surely has no member `name` (a lazily read record whose
    /// mask of names lacks its bit). The accessors check this inline before anything
    /// else: most names a normaliser asks for are absent, and with the name a literal
    /// the check is a bit test (a call per absent field was about a tenth of normalising).
    #[inline(always)]
    fn surely_absent(&self, name: &str) -> bool {
        match &self.obj {
            Obj::Flat { names, .. } => names & name_bit(name) == 0,
            Obj::Tree(_) => false,
        }
    }

    fn missing(&self, name: &str) -> Rejection {
        Rejection::field(Reason::MissingField, self.path_of(name), "is required")
    }

    fn wrong(&self, name: &str, expected: &str, v: &Value) -> Rejection {
        Rejection::field(
            Reason::WrongType,
            self.path_of(name),
            format!("expected {expected}, found {}", type_name(v)),
        )
    }

    /// The raw value, if present and not null.
    pub fn raw(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.get(name)
    }

    /// What the scan listed of the objects and arrays nested in a lazily read record.
    pub(crate) fn scanned(&self) -> Option<scan::View<'a, 'a>> {
        self.nested
    }

    /// The raw JSON text of the member `name` unless absent or null: borrowed from a
    /// lazily read object, serialised from a value tree.
    pub fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        match &self.obj {
            Obj::Tree(m) => m
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| Cow::Owned(v.to_string())),
            Obj::Flat { members, names } => find(members, *names, name)
                .filter(|raw| *raw != "null")
                .map(Cow::Borrowed),
        }
    }

    /// Removes and returns a raw value.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        match &mut self.obj {
            Obj::Tree(m) => m.remove(name).filter(|v| !v.is_null()),
            Obj::Flat { members, names } => {
                let v = parse_raw(find(members, *names, name)?);
                members.to_mut().retain(|(k, _)| k.as_ref() != name);
                v.filter(|v| !v.is_null())
            }
        }
    }

    /// An optional string; integers are accepted as their decimal text (ids are often
    /// numeric). Empty strings count as absent.
    #[inline(always)]
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, Rejection> {
        Ok(self.opt_text(name)?.map(Cow::into_owned))
    }

    /// [`Record::opt_str`], borrowed from the record where it can be.
    #[inline(always)]
    pub(crate) fn opt_text(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.opt_text_here(name)
    }

    fn opt_text_here(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection> {
        let val = match &self.obj {
            Obj::Flat { members, names } => {
                let Some(raw) = find(members, *names, name) else {
                    return Ok(None);
                };
                // A string without escapes, the common case, straight from its text.
                if let Some(s) = plain_string(raw) {
                    return Ok((!s.is_empty()).then_some(Cow::Borrowed(s)));
                }
                present(raw)
            }
            Obj::Tree(_) => self.val(name),
        };
        match val {
            None => Ok(None),
            Some(Val::Str(s)) => Ok((!s.is_empty()).then_some(Cow::Borrowed(s))),
            Some(Val::Int(n)) => Ok(Some(Cow::Owned(n.to_string()))),
            Some(Val::Tree(Cow::Owned(Value::String(s)))) => {
                Ok((!s.is_empty()).then_some(Cow::Owned(s)))
            }
            Some(Val::Tree(Cow::Borrowed(Value::String(s)))) => {
                Ok((!s.is_empty()).then_some(Cow::Borrowed(s.as_str())))
            }
            Some(Val::Tree(v)) => match v.as_ref() {
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(Cow::Owned(n.to_string()))),
                v => Err(self.wrong(name, "a string", v)),
            },
        }
    }

    /// A required string.
    #[inline(always)]
    pub fn str(&self, name: &str) -> Result<String, Rejection> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    /// [`Record::str`], borrowed from the record where it can be.
    #[inline(always)]
    pub(crate) fn str_text(&self, name: &str) -> Result<Cow<'_, str>, Rejection> {
        self.opt_text(name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional integer; numeric strings are accepted.
    #[inline(always)]
    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.opt_i64_here(name)
    }

    fn opt_i64_here(&self, name: &str) -> Result<Option<i64>, Rejection> {
        let v = match self.val(name) {
            None => return Ok(None),
            // At most 18 digits: within i64.
            Some(Val::Int(n)) => return Ok(i64::try_from(n).ok()),
            Some(v) => v.into_value(),
        };
        match v.as_ref() {
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "must be a whole number within 64 bits")),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(name, "must be a whole number")),
            v => Err(self.wrong(name, "an integer", v)),
        }
    }

    /// An optional 32-bit integer.
    #[inline(always)]
    pub fn opt_i32(&self, name: &str) -> Result<Option<i32>, Rejection> {
        self.opt_i64(name)?
            .map(|v| i32::try_from(v).map_err(|_| self.invalid(name, "out of range")))
            .transpose()
    }

    /// A required 32-bit integer.
    #[inline(always)]
    pub fn i32(&self, name: &str) -> Result<i32, Rejection> {
        self.opt_i32(name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional boolean; `"true"`/`"false"`, 0 and 1 are accepted.
    #[inline(always)]
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.opt_bool_here(name)
    }

    fn opt_bool_here(&self, name: &str) -> Result<Option<bool>, Rejection> {
        match self.get(name).as_deref() {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(v) => Err(self.wrong(name, "a boolean", v)),
        }
    }

    /// An invalid-value rejection for `name`.
    pub fn invalid(&self, name: &str, why: &str) -> Rejection {
        Rejection::field(Reason::InvalidValue, self.path_of(name), why)
    }

    /// An optional time in epoch milliseconds, read with the source's time format.
    #[inline(always)]
    pub fn opt_time(&self, name: &str) -> Result<Option<i64>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.opt_time_here(name)
    }

    fn opt_time_here(&self, name: &str) -> Result<Option<i64>, Rejection> {
        let got = match self.val(name) {
            None => return Ok(None),
            // An RFC 3339 time without escapes, the common case, without a value.
            Some(Val::Str(s)) if matches!(self.ctx.time_format, TimeFormat::Rfc3339) => {
                return parse_rfc3339_ms(s)
                    .map(Some)
                    .ok_or_else(|| self.invalid(name, "is not an RFC 3339 time with offset"));
            }
            Some(v) => v.into_value(),
        };
        let v = got.as_ref();
        let ms = match (self.ctx.time_format, v) {
            (TimeFormat::Rfc3339, Value::String(s)) => parse_rfc3339_ms(s)
                .ok_or_else(|| self.invalid(name, "is not an RFC 3339 time with offset"))?,
            (TimeFormat::UnixMs, Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.invalid(name, "must be integer milliseconds"))?,
            (TimeFormat::UnixS, Value::Number(n)) => n
                .as_f64()
                .map(|s| (s * 1000.0).round() as i64)
                .ok_or_else(|| self.invalid(name, "must be seconds"))?,
            (TimeFormat::UnixMs | TimeFormat::UnixS, Value::String(s)) => {
                let n: f64 = s
                    .trim()
                    .parse()
                    .map_err(|_| self.invalid(name, "must be a number of epoch units"))?;
                if matches!(self.ctx.time_format, TimeFormat::UnixMs) {
                    n as i64
                } else {
                    (n * 1000.0).round() as i64
                }
            }
            (TimeFormat::Pattern(items, offset), Value::String(s)) => {
                PrimitiveDateTime::parse(s, items)
                    .map(|t| epoch_ms(t.assume_offset(*offset)))
                    .map_err(|_| self.invalid(name, "does not match the configured time_format"))?
            }
            (_, v) => return Err(self.wrong(name, "a time", v)),
        };
        Ok(Some(ms))
    }

    /// A required time.
    #[inline(always)]
    pub fn time(&self, name: &str) -> Result<i64, Rejection> {
        self.opt_time(name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional money amount in minor units, read in the source's amount unit.
    #[inline(always)]
    pub fn opt_amount(&self, name: &str) -> Result<Option<i64>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.opt_amount_here(name)
    }

    fn opt_amount_here(&self, name: &str) -> Result<Option<i64>, Rejection> {
        let got = match self.val(name) {
            None => return Ok(None),
            // Whole minor units, the common case: at most 18 digits, within i64.
            Some(Val::Int(n)) if matches!(self.ctx.mapping.amount_unit, AmountUnit::Minor) => {
                return Ok(i64::try_from(n).ok());
            }
            Some(v) => v.into_value(),
        };
        let text = match got.as_ref() {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            v => return Err(self.wrong(name, "an amount", v)),
        };
        let minor = match self.ctx.mapping.amount_unit {
            AmountUnit::Minor => text
                .parse::<i64>()
                .map_err(|_| self.invalid(name, "must be whole minor units (fen)"))?,
            AmountUnit::Major => decimal_to_minor(&text).ok_or_else(|| {
                self.invalid(name, "must be a decimal amount with at most two decimals")
            })?,
        };
        Ok(Some(minor))
    }

    /// An amount that defaults to 0.
    #[inline(always)]
    pub fn amount_or_zero(&self, name: &str) -> Result<i64, Rejection> {
        Ok(self.opt_amount(name)?.unwrap_or(0))
    }

    /// A required amount.
    #[inline(always)]
    pub fn amount(&self, name: &str) -> Result<i64, Rejection> {
        self.opt_amount(name)?.ok_or_else(|| self.missing(name))
    }

    /// A required calendar day `YYYY-MM-DD`, as days since 1970-01-01.
    pub fn day(&self, name: &str) -> Result<i32, Rejection> {
        let s = self.str(name)?;
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let d = Date::parse(&s, &fmt).map_err(|_| self.invalid(name, "must be YYYY-MM-DD"))?;
        Ok(d.to_julian_day()
            - Date::from_calendar_date(1970, time::Month::January, 1)
                .map(|e| e.to_julian_day())
                .unwrap_or(2_440_588))
    }

    /// An optional array (absent = empty).
    pub fn array(&self, name: &str) -> Result<Vec<Value>, Rejection> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Cow::Owned(Value::Array(a))) => Ok(a),
            Some(Cow::Borrowed(Value::Array(a))) => Ok(a.clone()),
            Some(v) => Err(self.wrong(name, "an array", &v)),
        }
    }

    /// An optional array of strings.
    #[inline(always)]
    pub fn strings(&self, name: &str) -> Result<Vec<String>, Rejection> {
        if self.surely_absent(name) {
            return Ok(Vec::new());
        }
        self.strings_here(name)
    }

    fn strings_here(&self, name: &str) -> Result<Vec<String>, Rejection> {
        self.array(name)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                v => Err(Rejection::field(
                    Reason::WrongType,
                    format!("{}[{i}]", self.path_of(name)),
                    format!("expected a string, found {}", type_name(&v)),
                )),
            })
            .collect()
    }

    /// The elements of an optional array of records (absent = empty), each to be read
    /// with [`Record::nested`]: raw JSON text when this record is read lazily, so that a
    /// nested record is read lazily too.
    #[inline(always)]
    pub fn elements(&self, name: &str) -> Result<Vec<Elem<'a>>, Rejection> {
        if self.surely_absent(name) {
            return Ok(Vec::new());
        }
        self.elements_here(name)
    }

    fn elements_here(&self, name: &str) -> Result<Vec<Elem<'a>>, Rejection> {
        let Obj::Flat { members, names } = &self.obj else {
            return Ok(self.array(name)?.into_iter().map(Elem::Value).collect());
        };
        let Some(text) = find(members, *names, name) else {
            return Ok(Vec::new());
        };
        if text.starts_with('[') {
            // One scan lists the elements and the members of those that are objects.
            if let Some(elements) = scan::array(text) {
                return Ok(elements
                    .into_iter()
                    .map(|(t, members)| match members {
                        Some(m) => Elem::Flat(Flat::from_members(t, m)),
                        None => Elem::Raw(t),
                    })
                    .collect());
            }
            if let Ok(texts) = serde_json::from_str::<Vec<&'a RawValue>>(text) {
                return Ok(texts.into_iter().map(|r| Elem::Raw(r.get())).collect());
            }
        }
        // Not an array: null (absent), or the same error as a value tree gives.
        Ok(self.array(name)?.into_iter().map(Elem::Value).collect())
    }

    /// A nested record at `path_of(name)[i]`, from an element of [`Record::elements`].
    pub fn nested(
        &self,
        name: &'static str,
        i: usize,
        elem: Elem<'a>,
    ) -> Result<Record<'a>, Rejection> {
        let path = match &self.path {
            Path::Text(p) if p.is_empty() => Path::Element(name, i),
            _ => Path::Text(format!("{}[{i}]", self.path_of(name))),
        };
        match elem {
            Elem::Flat(flat) => Ok(Record::from_flat_at(flat, path, self.ctx)),
            Elem::Raw(raw) => match Flat::parse(raw) {
                Some(flat) => Ok(Record::from_flat_at(flat, path, self.ctx)),
                None => Record::new_at(parse_raw(raw).unwrap_or(Value::Null), path, self.ctx),
            },
            Elem::Value(v) => Record::new_at(v, path, self.ctx),
        }
    }

    /// The salted hash of an optional phone field.
    #[inline(always)]
    pub fn phone_hash(&self, name: &str) -> Result<Option<String>, Rejection> {
        self.pii_hash(name, true)
    }

    /// The salted hash of an optional e-mail field.
    #[inline(always)]
    pub fn email_hash(&self, name: &str) -> Result<Option<String>, Rejection> {
        self.pii_hash(name, false)
    }

    #[inline(always)]
    fn pii_hash(&self, name: &str, phone: bool) -> Result<Option<String>, Rejection> {
        if self.surely_absent(name) {
            return Ok(None);
        }
        self.pii_hash_here(name, phone)
    }

    fn pii_hash_here(&self, name: &str, phone: bool) -> Result<Option<String>, Rejection> {
        let Some(raw) = self.opt_text(name)? else {
            return Ok(None);
        };
        hash_identifier(self.ctx.hasher, &raw, phone, &self.path_of(name)).map(Some)
    }
}

/// Hashes a phone (or e-mail) value, or passes through an already hashed one.
pub fn hash_identifier(
    hasher: &PiiHasher,
    raw: &str,
    phone: bool,
    field: &str,
) -> Result<String, Rejection> {
    let mut out = String::with_capacity(64);
    hash_identifier_into(hasher, raw, phone, field, &mut out)?;
    Ok(out)
}

/// [`hash_identifier`] written over what `out` held, keeping its buffer.
pub(crate) fn hash_identifier_into(
    hasher: &PiiHasher,
    raw: &str,
    phone: bool,
    field: &str,
    out: &mut String,
) -> Result<(), Rejection> {
    if let Some(h) = raw.strip_prefix(HASHED_PREFIX)
        && h.len() == 64
        && h.bytes().all(|b| b.is_ascii_hexdigit())
    {
        out.clear();
        out.push_str(h);
        out.make_ascii_lowercase();
        return Ok(());
    }
    let r = if phone {
        hasher.hash_phone_into(raw, field, out)
    } else {
        hasher.hash_email_into(raw, field, out)
    };
    r.map_err(|e| match e {
        zt_model::Error::Pii { field, reason } => {
            Rejection::field(Reason::InvalidValue, field, reason)
        }
        other => Rejection::field(Reason::InvalidValue, field, other.to_string()),
    })
}

/// `"12.3"` → 1230, `"-0.05"` → -5, `"7"` → 700; more than two decimals, exponents and
/// overflow are refused.
pub fn decimal_to_minor(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    if frac.len() == 1 {
        f *= 10;
    }
    let v = int.parse::<i64>().ok()?.checked_mul(100)?.checked_add(f)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(decimal_to_minor("99.99"), Some(9999));
        assert_eq!(decimal_to_minor("0.1"), Some(10));
        assert_eq!(decimal_to_minor("7"), Some(700));
        assert_eq!(decimal_to_minor("12.50"), Some(1250));
        assert_eq!(decimal_to_minor("-0.05"), Some(-5));
        assert_eq!(decimal_to_minor("1.005"), None);
        assert_eq!(decimal_to_minor("1e3"), None);
        assert_eq!(decimal_to_minor(""), None);
        assert_eq!(decimal_to_minor("99999999999999999999"), None);
    }

    #[test]
    fn epoch_ms_rounds_as_the_nanosecond_division_does() {
        let mut n = 0;
        for secs in [
            -62_135_596_800i64,
            -86_401,
            -2,
            -1,
            0,
            1,
            1_767_232_800,
            253_402_300_799,
        ] {
            for nanos in [
                0u32,
                1,
                999_999,
                1_000_000,
                1_000_001,
                500_000_000,
                999_999_999,
            ] {
                let t = OffsetDateTime::from_unix_timestamp(secs)
                    .unwrap()
                    .replace_nanosecond(nanos)
                    .unwrap();
                assert_eq!(
                    epoch_ms(t),
                    (t.unix_timestamp_nanos() / 1_000_000) as i64,
                    "{secs} s {nanos} ns"
                );
                n += 1;
            }
        }
        assert_eq!(n, 56);
    }

    #[test]
    fn time_formats() {
        let m = Mapping::default();
        let h = PiiHasher::new(b"s", "86").unwrap();
        let check = |fmt: &str, v: Value, want: Option<i64>| {
            let tf = TimeFormat::parse(fmt, "+08:00").unwrap();
            let ctx = Ctx {
                mapping: &m,
                time_format: &tf,
                hasher: &h,
            };
            let r = Record::new(serde_json::json!({ "t": v }), "", &ctx).unwrap();
            assert_eq!(r.opt_time("t").ok().flatten(), want, "{fmt}");
        };
        let want = Some(1_767_232_800_000); // 2026-01-01T02:00:00Z
        check("rfc3339", "2026-01-01T10:00:00+08:00".into(), want);
        check("rfc3339", "2026-01-01T02:00:00Z".into(), want);
        check("unix_ms", 1_767_232_800_000i64.into(), want);
        check("unix_s", 1_767_232_800i64.into(), want);
        check("%Y-%m-%d %H:%M:%S", "2026-01-01 10:00:00".into(), want);
        check("%Y/%m/%d %H:%M:%S", "2026-01-01 10:00:00".into(), None);
        check("rfc3339", "yesterday".into(), None);
        assert!(TimeFormat::parse("%Q", "+08:00").is_err());
        assert!(TimeFormat::parse("%Y", "Asia/Shanghai").is_err());
    }
}
