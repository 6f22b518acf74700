//! What the Segment normaliser reads from a call's `context`, `properties` and `traits`
//! ([`Parts`]), and a reader that finds it while it scans a request body ([`read_body`]).
//!
//! [`segment::normalize_into`](super::segment::normalize_into) reads a call in two steps:
//! first the raw value texts it needs from the three objects (the UTM fields of
//! `context.campaign`, the e-commerce properties, the contacts of the traits, ...), then
//! everything else from those texts. The first step is done one of two ways:
//!
//! - [`Parts::read`], by look-ups in the objects (any call, however it was read);
//! - [`read_body`], in the one pass that scans a request body: each member of a call's
//!   three objects is matched against the names the normaliser reads as the scan passes
//!   it. (Listing every member of every object in a body, then looking the names up one by
//!   one, was a third of normalising a tracking call.)
//!
//! **The reader never decides otherwise than the look-ups would.** It reads the grammar
//! with the scanner's own primitives ([`crate::scan`]), so it accepts exactly the text the
//! scanner accepts, and it answers `None` (the body is then read the general way) for
//! anything whose reading depends on more than one member at a time: a repeated member
//! name in `properties`, `traits` or `context.traits` (the last one counts there), a
//! repeated `context`, `properties` or `traits`, or a member name with escapes where names
//! are matched. The fuzz target and the unit tests check that both ways give the same
//! events over the corpus.

use std::borrow::Cow;

use super::segment::{Contact, contact_kind, is_trait_pii_key, scalar_text};
use crate::fields::{Object, name_bit};
use crate::scan::{self, Scanner};

/// A contact found in an object: its key and its value as text.
pub(crate) type Found<'a> = Option<(&'a str, Cow<'a, str>)>;

/// The first phone and the first e-mail of an object (top level only), with their keys:
/// for each, the least key in string order (a value tree's order) among those whose
/// value is a non-empty string or a number.
#[derive(Debug, Default, Clone)]
pub(crate) struct Contacts<'a> {
    pub(crate) phone: Found<'a>,
    pub(crate) email: Found<'a>,
}

impl<'a> Contacts<'a> {
    /// Considers member `k` with raw value `raw` (the last of its name); whether `k` is
    /// a contact key.
    fn offer(&mut self, k: &'a str, raw: &'a str) -> bool {
        let best = match contact_kind(k) {
            Some(Contact::Phone) => &mut self.phone,
            Some(Contact::Email) => &mut self.email,
            None => return false,
        };
        if best.as_ref().is_none_or(|(b, _)| *b > k)
            && let Some(v) = scalar_text(raw)
        {
            *best = Some((k, v));
        }
        true
    }

    /// The contacts of `m`, one pass over its members.
    fn of(m: &'a Object<'_>) -> Contacts<'a> {
        let mut c = Contacts::default();
        for (k, raw, last) in m.members() {
            if last {
                c.offer(k, raw);
            }
        }
        c
    }
}

/// What the normaliser reads from `context`: raw value texts (`null` included), each the
/// last member of its name, `None` when absent; the members of `campaign`, `page`,
/// `device`, `os` and `app` are `None` too when that member is absent or not an object.
#[derive(Debug, Default, Clone)]
pub(crate) struct ContextParts<'a> {
    pub(crate) channel: Option<&'a str>,
    pub(crate) experiments: Option<&'a str>,
    pub(crate) private_domain: Option<&'a str>,
    pub(crate) locale: Option<&'a str>,
    pub(crate) campaign_name: Option<&'a str>,
    pub(crate) campaign_source: Option<&'a str>,
    pub(crate) campaign_medium: Option<&'a str>,
    pub(crate) campaign_term: Option<&'a str>,
    pub(crate) campaign_content: Option<&'a str>,
    pub(crate) page_url: Option<&'a str>,
    pub(crate) page_path: Option<&'a str>,
    pub(crate) page_referrer: Option<&'a str>,
    pub(crate) page_title: Option<&'a str>,
    pub(crate) device_type: Option<&'a str>,
    pub(crate) os_name: Option<&'a str>,
    pub(crate) app_version: Option<&'a str>,
    /// The contacts of `context.traits` (none when it is absent or not an object).
    pub(crate) traits: Contacts<'a>,
}

/// What the normaliser reads from `properties`, as [`ContextParts`].
#[derive(Debug, Default, Clone)]
pub(crate) struct PropertiesParts<'a> {
    pub(crate) channel: Option<&'a str>,
    pub(crate) order_id: Option<&'a str>,
    pub(crate) product_id: Option<&'a str>,
    pub(crate) sku: Option<&'a str>,
    pub(crate) category: Option<&'a str>,
    pub(crate) currency: Option<&'a str>,
    pub(crate) price: Option<&'a str>,
    pub(crate) quantity: Option<&'a str>,
    pub(crate) revenue: Option<&'a str>,
    pub(crate) total: Option<&'a str>,
    pub(crate) url: Option<&'a str>,
    pub(crate) path: Option<&'a str>,
    pub(crate) referrer: Option<&'a str>,
    pub(crate) title: Option<&'a str>,
    pub(crate) private_domain: Option<&'a str>,
    pub(crate) experiment_id: Option<&'a str>,
    pub(crate) variation_name: Option<&'a str>,
    pub(crate) variation_id: Option<&'a str>,
    pub(crate) contacts: Contacts<'a>,
}

impl<'a> PropertiesParts<'a> {
    /// Keeps member `k`'s raw value if the normaliser reads it.
    fn member(&mut self, k: &str, raw: &'a str) {
        let slot = match k {
            "channel" => &mut self.channel,
            "order_id" => &mut self.order_id,
            "product_id" => &mut self.product_id,
            "sku" => &mut self.sku,
            "category" => &mut self.category,
            "currency" => &mut self.currency,
            "price" => &mut self.price,
            "quantity" => &mut self.quantity,
            "revenue" => &mut self.revenue,
            "total" => &mut self.total,
            "url" => &mut self.url,
            "path" => &mut self.path,
            "referrer" => &mut self.referrer,
            "title" => &mut self.title,
            "private_domain" => &mut self.private_domain,
            "experiment_id" => &mut self.experiment_id,
            "variation_name" => &mut self.variation_name,
            "variation_id" => &mut self.variation_id,
            _ => return,
        };
        *slot = Some(raw);
    }
}

/// What the normaliser reads from a call's `context`, `properties` and `traits`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Parts<'a> {
    pub(crate) context: ContextParts<'a>,
    pub(crate) properties: PropertiesParts<'a>,
    /// `traits.customer_id`.
    pub(crate) customer_id: Option<&'a str>,
    /// The contacts of `traits`.
    pub(crate) traits: Contacts<'a>,
    /// `properties` as written into the event is its text as it is (an object of
    /// scalars with no contact key, no repeated name and no white space between its
    /// tokens, or absent: `{}`), so it need not be written member by member.
    pub(crate) properties_as_is: bool,
    /// The same of `traits` (no further personal key either).
    pub(crate) traits_as_is: bool,
}

impl<'a> Parts<'a> {
    /// The parts by look-ups in the call's objects (an absent object is an empty one),
    /// `context_traits` being `context.traits` when it is an object ([`context_object`]).
    pub(crate) fn read(
        context: &'a Object<'_>,
        context_traits: Option<&'a Object<'_>>,
        properties: &'a Object<'_>,
        traits: &'a Object<'_>,
    ) -> Parts<'a> {
        let obj = |k: &str| context_object(context, k);
        let (campaign, page) = (obj("campaign"), obj("page"));
        // One pass over the properties, as the reader makes.
        let mut p = PropertiesParts::default();
        for (k, raw, last) in properties.members() {
            if last {
                p.member(k, raw);
                p.contacts.offer(k, raw);
            }
        }
        Parts {
            context: ContextParts {
                channel: context.get("channel"),
                experiments: context.get("experiments"),
                private_domain: context.get("private_domain"),
                locale: context.get("locale"),
                campaign_name: member_of(&campaign, "name"),
                campaign_source: member_of(&campaign, "source"),
                campaign_medium: member_of(&campaign, "medium"),
                campaign_term: member_of(&campaign, "term"),
                campaign_content: member_of(&campaign, "content"),
                page_url: member_of(&page, "url"),
                page_path: member_of(&page, "path"),
                page_referrer: member_of(&page, "referrer"),
                page_title: member_of(&page, "title"),
                device_type: member_of(&obj("device"), "type"),
                os_name: member_of(&obj("os"), "name"),
                app_version: member_of(&obj("app"), "version"),
                traits: context_traits.map(Contacts::of).unwrap_or_default(),
            },
            properties: p,
            customer_id: traits.get("customer_id"),
            traits: Contacts::of(traits),
            properties_as_is: false,
            traits_as_is: false,
        }
    }
}

/// The member `k` of `m`, when `m` is an object.
fn member_of<'t>(m: &Option<Object<'t>>, k: &str) -> Option<&'t str> {
    m.as_ref().and_then(|m| m.get(k))
}

/// The object member `k` of `m` holds, `None` when absent or not an object.
pub(crate) fn context_object<'t>(m: &Object<'t>, k: &str) -> Option<Object<'t>> {
    m.get(k)
        .filter(|raw| raw.starts_with('{'))
        .and_then(|raw| Object::parse(raw, m.nested()))
}

/// How many batch-level members (`context`, `integrations`, `sentAt`) a call of a batch
/// may be given: [`read_body`] leaves room for them after each call's own members, so that
/// giving them copies nothing.
pub(crate) const BATCH_LEVEL_ROOM: usize = 3;

/// A Segment body read in one pass ([`read_body`]).
#[derive(Debug, Default)]
pub(crate) struct ReadBody<'a> {
    /// The body's members (for a single call, the call's own).
    pub(crate) top: scan::Members<'a>,
    /// Each call: its text, and where its members are in `members`.
    pub(crate) calls: Vec<(&'a str, std::ops::Range<usize>)>,
    /// Each call's parts.
    pub(crate) parts: Vec<Parts<'a>>,
    /// The members of every call, one call after another (in a batch, each followed by
    /// [`BATCH_LEVEL_ROOM`] empty ones).
    pub(crate) members: scan::Members<'a>,
    /// The parts of the batch-level `context`, when it is an object.
    pub(crate) batch_context: Option<ContextParts<'a>>,
}

/// Reads a Segment request body (`single`: one call, else a `{"batch": [...]}` body) in
/// one pass: the body's members, each call's members, and each call's [`Parts`]. `None`
/// for text the scanner does not read and for what the reader leaves to the look-ups (see
/// the module's doc), and for a batch whose `batch` is not an array of objects.
pub(crate) fn read_body(text: &str, single: bool) -> Option<ReadBody<'_>> {
    let mut r = Reader {
        s: Scanner::new(text),
        names: Vec::new(),
    };
    let mut out = ReadBody::default();
    r.s.ws();
    if single {
        let parts = r.call(1, &mut out.members)?;
        out.top = out.members.clone();
        // The call's text is the whole body, as the look-ups' split has it.
        out.calls.push((text, 0..out.members.len()));
        out.parts.push(parts);
    } else {
        let (mut batch, mut context) = (false, false);
        // Room for calls of 256 bytes and members of 24 (a tracking call has some 360 and
        // 28, with the room left after its own): the lists seldom grow and move.
        let (mut top, mut members) = (Vec::new(), Vec::with_capacity(text.len() / 24));
        let mut calls = Vec::with_capacity(text.len() / 256);
        let mut parts = Vec::with_capacity(text.len() / 256);
        let mut batch_context = None;
        r.object(1, |r, k| {
            let start = r.s.pos();
            match k {
                "batch" => {
                    if std::mem::replace(&mut batch, true) || r.s.peek()? != b'[' {
                        return None;
                    }
                    r.list_of(b'[', b']', 2, |r| {
                        let from = r.s.pos();
                        let m = members.len();
                        if r.s.peek()? != b'{' {
                            return None;
                        }
                        parts.push(r.call(3, &mut members)?);
                        calls.push((&r.s.src()[from..r.s.pos()], m..members.len()));
                        // Room for the batch-level members the call may be given.
                        for _ in 0..BATCH_LEVEL_ROOM {
                            members.push((Cow::Borrowed(""), ""));
                        }
                        Some(())
                    })?;
                }
                "context" => {
                    if std::mem::replace(&mut context, true) {
                        return None;
                    }
                    if r.s.peek()? == b'{' {
                        let mut c = ContextParts::default();
                        r.context(2, &mut c)?;
                        batch_context = Some(c);
                    } else {
                        r.skip(2)?;
                    }
                }
                _ => {
                    r.skip(2)?;
                }
            }
            top.push((Cow::Borrowed(k), &r.s.src()[start..r.s.pos()]));
            Some(())
        })?;
        out = ReadBody {
            top,
            calls,
            parts,
            members,
            batch_context,
        };
    }
    r.s.ws();
    r.s.at_end().then_some(out)
}

/// The reader of [`read_body`]: the scanner, and the names of the object being read.
struct Reader<'a> {
    s: Scanner<'a>,
    names: Vec<&'a str>,
}

impl<'a> Reader<'a> {
    /// The value at the cursor, read at nesting `depth` and skipped; its text.
    fn skip(&mut self, depth: usize) -> Option<&'a str> {
        let start = self.s.pos();
        match self.s.peek()? {
            b'"' => {
                self.s.string()?;
            }
            b'-' | b'0'..=b'9' => self.s.number()?,
            _ => self.s.value(depth)?,
        }
        Some(&self.s.src()[start..self.s.pos()])
    }

    /// `open item (, item)* close` at the cursor, at nesting `depth`, as the scanner
    /// reads a list.
    fn list_of(
        &mut self,
        open: u8,
        close: u8,
        depth: usize,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > scan::MAX_DEPTH {
            return None;
        }
        self.s.eat(open)?;
        self.s.ws();
        if self.s.eat(close).is_some() {
            return Some(());
        }
        loop {
            self.s.ws();
            item(self)?;
            self.s.ws();
            match self.s.peek()? {
                b',' => self.s.eat(b',')?,
                c if c == close => {
                    self.s.eat(close)?;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The object at the cursor, at nesting `depth`: `f` is called with each member's
    /// name, the cursor on its value (to read at `depth + 1`). `None` for a name with
    /// escapes.
    fn object(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.list_of(b'{', b'}', depth, |r| {
            let q = r.s.string()?;
            if q.escaped {
                return None;
            }
            let name = &r.s.src()[q.from..q.to];
            r.s.ws();
            r.s.eat(b':')?;
            r.s.ws();
            f(r, name)
        })
    }

    /// An object of `context` (`campaign`, `page`, ...) at the cursor, at nesting
    /// `depth` (`is_object`: else any value): each of `slots` is set to the raw value of
    /// the member of its name, `None` without one (or when the value is not an object).
    fn sub_object(
        &mut self,
        depth: usize,
        is_object: bool,
        slots: &mut [(&str, &mut Option<&'a str>)],
    ) -> Option<()> {
        for (_, slot) in slots.iter_mut() {
            **slot = None;
        }
        if !is_object {
            self.skip(depth)?;
            return Some(());
        }
        self.object(depth, |r, k| {
            let v = r.skip(depth + 1)?;
            if let Some((_, slot)) = slots.iter_mut().find(|(name, _)| *name == k) {
                **slot = Some(v);
            }
            Some(())
        })
    }

    /// A `properties`, `traits` or `context.traits` object at the cursor (at nesting
    /// `depth`): each member given to `each`; its contacts; whether it is written as it
    /// is ([`Parts::properties_as_is`]; with `pii`, the further personal keys of traits
    /// are not). `None` for a repeated name.
    fn contact_object(
        &mut self,
        depth: usize,
        pii: bool,
        mut each: impl FnMut(&'a str, &'a str),
    ) -> Option<(Contacts<'a>, bool)> {
        let start = self.s.pos();
        let mut contacts = Contacts::default();
        let mut as_is = true;
        // The length the object's text has without white space.
        let (mut n, mut compact) = (0usize, 2usize);
        let mut seen = 0u128;
        self.names.clear();
        self.object(depth, |r, k| {
            let bit = name_bit(k);
            if seen & bit != 0 && r.names.contains(&k) {
                return None;
            }
            seen |= bit;
            r.names.push(k);
            let v = r.skip(depth + 1)?;
            each(k, v);
            n += 1;
            compact += k.len() + 3 + v.len();
            let is_contact = contacts.offer(k, v);
            if is_contact
                || matches!(v.as_bytes().first(), Some(b'{' | b'['))
                || (pii && is_trait_pii_key(k))
            {
                as_is = false;
            }
            Some(())
        })?;
        let len = self.s.pos() - start;
        Some((contacts, as_is && len == compact + n.saturating_sub(1)))
    }

    /// A `context` object at the cursor, at nesting `depth`.
    fn context(&mut self, depth: usize, c: &mut ContextParts<'a>) -> Option<()> {
        let d = depth + 1;
        self.object(depth, |r, k| {
            let is_object = r.s.peek()? == b'{';
            match k {
                "channel" => c.channel = Some(r.skip(d)?),
                "experiments" => c.experiments = Some(r.skip(d)?),
                "private_domain" => c.private_domain = Some(r.skip(d)?),
                "locale" => c.locale = Some(r.skip(d)?),
                // The last member of each of these names counts: each one read resets what
                // the one before it gave.
                "campaign" => r.sub_object(
                    d,
                    is_object,
                    &mut [
                        ("name", &mut c.campaign_name),
                        ("source", &mut c.campaign_source),
                        ("medium", &mut c.campaign_medium),
                        ("term", &mut c.campaign_term),
                        ("content", &mut c.campaign_content),
                    ],
                )?,
                "page" => r.sub_object(
                    d,
                    is_object,
                    &mut [
                        ("url", &mut c.page_url),
                        ("path", &mut c.page_path),
                        ("referrer", &mut c.page_referrer),
                        ("title", &mut c.page_title),
                    ],
                )?,
                "device" => r.sub_object(d, is_object, &mut [("type", &mut c.device_type)])?,
                "os" => r.sub_object(d, is_object, &mut [("name", &mut c.os_name)])?,
                "app" => r.sub_object(d, is_object, &mut [("version", &mut c.app_version)])?,
                "traits" => {
                    c.traits = Contacts::default();
                    if !is_object {
                        r.skip(d)?;
                        return Some(());
                    }
                    c.traits = r.contact_object(d, false, |_, _| {})?.0;
                }
                _ => {
                    r.skip(d)?;
                }
            }
            Some(())
        })
    }

    /// A call at the cursor (an object at nesting `depth`): its members pushed onto
    /// `members`, and its parts.
    fn call(&mut self, depth: usize, members: &mut scan::Members<'a>) -> Option<Parts<'a>> {
        let d = depth + 1;
        let mut p = Parts {
            properties_as_is: true,
            traits_as_is: true,
            ..Parts::default()
        };
        let (mut context, mut properties, mut traits) = (false, false, false);
        self.object(depth, |r, k| {
            let start = r.s.pos();
            let is_object = r.s.peek()? == b'{';
            let seen = match k {
                "context" => &mut context,
                "properties" => &mut properties,
                "traits" => &mut traits,
                _ => {
                    r.skip(d)?;
                    members.push((Cow::Borrowed(k), &r.s.src()[start..r.s.pos()]));
                    return Some(());
                }
            };
            // A repeated one is left to the look-ups (the last counts).
            if std::mem::replace(seen, true) {
                return None;
            }
            match (k, is_object) {
                ("context", true) => r.context(d, &mut p.context)?,
                ("properties", true) => {
                    let props = &mut p.properties;
                    let (contacts, as_is) =
                        r.contact_object(d, false, |k, v| props.member(k, v))?;
                    p.properties.contacts = contacts;
                    p.properties_as_is = as_is;
                }
                ("traits", true) => {
                    let customer_id = &mut p.customer_id;
                    let (contacts, as_is) = r.contact_object(d, true, |k, v| {
                        if k == "customer_id" {
                            *customer_id = Some(v);
                        }
                    })?;
                    p.traits = contacts;
                    p.traits_as_is = as_is;
                }
                // Not an object: the normaliser refuses it (or reads `null` as absent).
                _ => {
                    r.skip(d)?;
                }
            }
            members.push((Cow::Borrowed(k), &r.s.src()[start..r.s.pos()]));
            Some(())
        })?;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::{segment_agrees, segment_read_agrees};
    use crate::items::{Parsed, split_segment_read, split_segment_scanned};

    const BASE: &str = r#""type":"track","event":"E","userId":"u1","messageId":"m""#;

    fn batch(call: &str) -> String {
        format!(r#"{{"batch":[{call}],"sentAt":"2026-01-01T00:00:01Z"}}"#)
    }

    /// What the reader reads, and what it leaves to the look-ups: either way the calls
    /// normalise as the look-ups and the reference normaliser do.
    #[test]
    fn reads_what_one_member_at_a_time_decides_and_declines_the_rest() {
        let read = [
            // The last member of a repeated name in context and its objects counts.
            format!(
                r#"{{{BASE},"context":{{"campaign":{{"source":"a","name":"n"}},"campaign":"gone","channel":"x","channel":"y","device":{{"type":"pc"}},"device":{{"type":"mobile","type":"tablet"}}}}}}"#
            ),
            format!(
                r#"{{{BASE},"context":{{"campaign":"s","campaign":{{"source":"b","medium":"m"}},"page":{{"url":"u"}},"page":null,"os":{{"name":"iOS"}},"app":[1]}}}}"#
            ),
            // Contacts in all three objects, nested objects and arrays in properties.
            format!(
                r#"{{{BASE},"traits":{{"Email":"A@b.cn","name":"x","customer_id":7}},"context":{{"traits":{{"phone":"13800138000","email":"c@d.cn"}}}},"properties":{{"products":[{{"email":"x@y.cn","sku":"S"}}],"price":"9.5","mobile":"13900139000"}}}}"#
            ),
            // White space between tokens: written member by member.
            format!(r#"{{{BASE}, "properties" : {{ "sku" : "S" , "n" : 1 }} }}"#),
            // Null and absent objects; a call with an object of another type is refused.
            format!(r#"{{{BASE},"properties":null,"traits":null,"context":null}}"#),
            format!(r#"{{{BASE},"properties":[1]}}"#),
            // Escapes in values (not names) are read.
            format!(r#"{{{BASE},"properties":{{"sku":"S\u0031","title":"a\"b"}}}}"#),
        ];
        for call in &read {
            let body = batch(call);
            assert!(segment_read_agrees(body.as_bytes(), false, 10), "{call}");
            assert!(segment_agrees(body.as_bytes(), false, 10), "{call}");
        }
        let declined = [
            // A repeated name in properties or traits (the last counts), a repeated
            // object, a name with escapes where names are matched.
            format!(r#"{{{BASE},"properties":{{"sku":"a","sku":"b"}}}}"#),
            format!(r#"{{{BASE},"traits":{{"email":"a@b.cn","email":null}}}}"#),
            format!(r#"{{{BASE},"context":{{"traits":{{"tel":"1","tel":"2"}}}}}}"#),
            format!(r#"{{{BASE},"properties":{{}},"properties":{{"sku":"b"}}}}"#),
            format!(r#"{{{BASE},"context":{{}},"context":null}}"#),
            format!(r#"{{{BASE},"properties":{{"\u0065mail":"x@y.cn"}}}}"#),
            format!(r#"{{{BASE},"context":{{"c\u0061mpaign":{{"source":"s"}}}}}}"#),
            r#"{"\u0074ype":"track","event":"E","userId":"u"}"#.to_owned(),
        ];
        for call in &declined {
            let body = batch(call);
            assert!(split_segment_read(&body, false, 10).is_none(), "{call}");
            assert!(split_segment_scanned(&body, false, 10).is_some(), "{call}");
            assert!(segment_agrees(body.as_bytes(), false, 10), "{call}");
        }
        // A batch-level context is every call's that has none of its own.
        let body = format!(
            r#"{{"batch":[{{{BASE}}},{{{BASE},"context":{{"channel":"own"}}}}],"context":{{"channel":"batch","campaign":{{"source":"s"}}}}}}"#
        );
        assert!(
            split_segment_read(&body, false, 10).is_none(),
            "both have a context"
        );
        let body = format!(
            r#"{{"batch":[{{{BASE}}},{{{BASE},"properties":{{"a":1}}}}],"context":{{"channel":"batch","campaign":{{"source":"s"}}}}}}"#
        );
        assert!(segment_read_agrees(body.as_bytes(), false, 10));
        assert!(segment_agrees(body.as_bytes(), false, 10));
    }

    /// An object written as it is must be what writing it member by member gives: the
    /// check compares the events byte for byte, and fails when the reader says so of an
    /// object with a contact key (the negative control of `segment_read_agrees`).
    #[test]
    fn an_object_is_written_as_it_is_only_when_writing_it_member_by_member_gives_the_same() {
        let body = batch(&format!(
            r#"{{{BASE},"properties":{{"sku":"S","price":9.5}},"traits":{{"plan":"gold"}}}}"#
        ));
        let read = split_segment_read(&body, false, 10).expect("read in one pass");
        assert!(read.parts[0].properties_as_is && read.parts[0].traits_as_is);
        let with_email = batch(&format!(
            r#"{{{BASE},"properties":{{"sku":"S","email":"a@b.cn"}}}}"#
        ));
        let mut read = split_segment_read(&with_email, false, 10).expect("read in one pass");
        assert!(!read.parts[0].properties_as_is);
        assert!(segment_read_agrees(with_email.as_bytes(), false, 10));
        // Said wrongly, the e-mail would be kept, and the comparison fails.
        read.parts[0].properties_as_is = true;
        let scanned = split_segment_scanned(&with_email, false, 10).expect("scanned");
        let (h, mapping) = (
            zt_model::pii::PiiHasher::new(b"salt", "86").unwrap(),
            crate::config::Mapping::default(),
        );
        let tf = crate::fields::TimeFormat::parse("rfc3339", "+08:00").unwrap();
        let ctx = crate::fields::Ctx {
            mapping: &mapping,
            time_format: &tf,
            hasher: &h,
        };
        let norm = |v: Result<Parsed<'_>, crate::error::Rejection>| {
            let env = crate::normalize::Envelope {
                received_at: 1,
                raw: b"",
                private_channels: &[],
            };
            crate::normalize::normalize_parsed(
                zt_model::Source::Tracking,
                v.unwrap(),
                None,
                &ctx,
                env,
            )
            .unwrap()
        };
        let wrong = norm(read.item(&read.calls[0]).value);
        let right = norm(scanned.item(&scanned.calls[0]).value);
        assert_ne!(wrong, right);
        let zt_model::Payload::Tracking(t) = &wrong.payload else {
            panic!("a tracking payload")
        };
        assert!(t.properties_json.contains("a@b.cn"));
    }

    /// With renames configured for the tracking source, other members of a call can
    /// become its `context`, `properties` or `traits`: what the reader kept is not used,
    /// and the call normalises as its value tree does.
    #[test]
    fn renames_leave_the_reader_aside() {
        let mut mapping = crate::config::Mapping::default();
        mapping.renames.insert("ctx".into(), "context".into());
        mapping.renames.insert("props".into(), "properties".into());
        let tf = crate::fields::TimeFormat::parse("rfc3339", "+08:00").unwrap();
        let h = zt_model::pii::PiiHasher::new(b"salt", "86").unwrap();
        let ctx = crate::fields::Ctx {
            mapping: &mapping,
            time_format: &tf,
            hasher: &h,
        };
        let body = batch(&format!(
            r#"{{{BASE},"ctx":{{"campaign":{{"source":"s"}}}},"props":{{"sku":"S","email":"a@b.cn"}},"context":{{"campaign":{{"source":"gone"}}}}}}"#
        ));
        let read = split_segment_read(&body, false, 10).expect("read in one pass");
        let item = read.item(&read.calls[0]);
        assert!(matches!(item.value, Ok(Parsed::Call(..))));
        let env = || crate::normalize::Envelope {
            received_at: 1,
            raw: item.raw,
            private_channels: &[],
        };
        let source = zt_model::Source::Tracking;
        let lazy =
            crate::normalize::normalize_parsed(source, item.value.unwrap(), None, &ctx, env())
                .unwrap();
        let tree: serde_json::Value = serde_json::from_slice(item.raw).unwrap();
        let tree = crate::normalize::normalize(source, tree, None, &ctx, env()).unwrap();
        assert_eq!(lazy, tree);
        assert_eq!(lazy.context.utm_source.as_deref(), Some("s"));
        assert_eq!(lazy.identities.email_hash, tree.identities.email_hash);
        assert!(lazy.identities.email_hash.is_some());
    }

    /// A small generator of Segment bodies (xorshift): calls of every type with the
    /// members the normaliser reads, contact keys in their spellings, repeated names,
    /// nested objects and arrays, escapes, white space and batch-level fields.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'s>(&mut self, xs: &[&'s str]) -> &'s str {
            xs[self.below(xs.len())]
        }
        fn ws(&mut self) -> &'static str {
            if self.below(12) == 0 { " " } else { "" }
        }
        fn scalar(&mut self) -> String {
            match self.below(12) {
                0 => "null".into(),
                1 => "true".into(),
                2 => "12".into(),
                3 => "-3.50".into(),
                4 => "1e2".into(),
                5 => r#""""#.into(),
                6 => r#""a\"b\u0041""#.into(),
                7 => r#""li.lei@example.cn""#.into(),
                8 => r#""+86 138-0013-8000""#.into(),
                9 => r#""13912345678""#.into(),
                10 => r#""2026-01-05T02:00:00.000Z""#.into(),
                _ => format!(r#""v{}""#, self.below(5)),
            }
        }
        fn key(&mut self, keys: &[&str]) -> String {
            let k = self.pick(keys);
            if self.below(40) == 0 {
                // A name with an escape.
                format!(r#""\u00{:02x}{}""#, k.as_bytes()[0], &k[1..])
            } else {
                format!(r#""{k}""#)
            }
        }
        fn object(&mut self, keys: &[&str], depth: usize) -> String {
            let n = self.below(6);
            let mut members = Vec::new();
            let mut used = Vec::new();
            for _ in 0..n {
                let mut k = self.key(keys);
                // Names seldom repeat.
                while used.contains(&k) && self.below(15) > 0 {
                    k = self.key(keys);
                }
                used.push(k.clone());
                let v = if depth < 2 && self.below(8) == 0 {
                    if self.below(2) == 0 {
                        self.object(keys, depth + 1)
                    } else {
                        let inner = self.object(keys, depth + 1);
                        format!("[{inner},{}]", self.scalar())
                    }
                } else {
                    self.scalar()
                };
                let (a, b) = (self.ws(), self.ws());
                members.push(format!("{a}{k}{b}:{v}"));
            }
            format!("{{{}}}", members.join(","))
        }
        fn context(&mut self) -> String {
            const SUB: &[&str] = &[
                "name", "source", "medium", "term", "content", "url", "path", "referrer", "title",
                "type", "version", "x",
            ];
            const TRAITS: &[&str] = &["email", "E-Mail", "phone", "Mobile", "tel", "plan"];
            let n = 1 + self.below(6);
            let mut members = Vec::new();
            for _ in 0..n {
                let k = self.pick(&[
                    "channel",
                    "experiments",
                    "private_domain",
                    "locale",
                    "campaign",
                    "page",
                    "device",
                    "os",
                    "app",
                    "traits",
                    "ip",
                ]);
                let v = match k {
                    "campaign" | "page" | "device" | "os" | "app" if self.below(6) > 0 => {
                        self.object(SUB, 1)
                    }
                    "traits" if self.below(6) > 0 => self.object(TRAITS, 1),
                    "experiments" if self.below(2) == 0 => r#"{"exp1":"a","exp2":"b"}"#.to_owned(),
                    "private_domain" if self.below(2) == 0 => r#""true""#.to_owned(),
                    _ => self.scalar(),
                };
                members.push(format!(r#""{k}":{v}"#));
            }
            format!("{{{}}}", members.join(","))
        }
        fn call(&mut self) -> String {
            const PROPS: &[&str] = &[
                "email",
                "e_mail",
                "phone_number",
                "mobile",
                "tel",
                "product_id",
                "sku",
                "price",
                "quantity",
                "revenue",
                "total",
                "currency",
                "order_id",
                "url",
                "path",
                "referrer",
                "title",
                "category",
                "channel",
                "private_domain",
                "experiment_id",
                "variation_name",
                "variation_id",
                "products",
                "misc",
            ];
            const TRAITS: &[&str] = &[
                "email",
                "E-Mail",
                "phone",
                "Mobile",
                "name",
                "first_name",
                "address",
                "customer_id",
                "plan",
                "tel",
            ];
            let kind = self.pick(&[
                "track", "track", "track", "identify", "page", "screen", "alias", "group",
            ]);
            let mut members = vec![
                format!(r#""type":"{kind}""#),
                format!(r#""messageId":"m{}""#, self.below(1000)),
            ];
            for (k, v) in [
                ("userId", r#""u1""#),
                ("anonymousId", r#""a1""#),
                ("event", r#""Product Added""#),
                ("event", r#""Experiment Viewed""#),
                ("name", r#""Home""#),
                ("previousId", r#""p1""#),
                ("groupId", r#""g1""#),
                ("timestamp", r#""2026-01-05T02:00:00.000Z""#),
                ("originalTimestamp", r#""2026-01-05T01:59:00+08:00""#),
                ("sentAt", r#""2026-01-05T02:00:01Z""#),
            ] {
                if self.below(3) > 0 {
                    members.push(format!(r#""{k}":{v}"#));
                }
            }
            if self.below(5) > 0 {
                let c = self.context();
                members.push(format!(r#""context":{c}"#));
            }
            if self.below(5) > 0 {
                let p = self.object(PROPS, 0);
                members.push(format!(r#""properties"{}:{p}"#, self.ws()));
            }
            if self.below(3) == 0 {
                let t = self.object(TRAITS, 0);
                members.push(format!(r#""traits":{t}"#));
            }
            if self.below(30) == 0 {
                // A repeated object.
                members.push(r#""properties":{"sku":"again"}"#.to_owned());
            }
            if self.below(10) == 0 {
                members.push(format!(r#""integrations":{{"All":{}}}"#, self.scalar()));
            }
            // Some order.
            let n = members.len();
            for i in (1..n).rev() {
                let j = self.below(i + 1);
                members.swap(i, j);
            }
            format!("{{{}}}", members.join(","))
        }
        fn body(&mut self) -> String {
            let calls: Vec<String> = (0..1 + self.below(4)).map(|_| self.call()).collect();
            let mut members = vec![format!("\"batch\":[{}]", calls.join(","))];
            if self.below(2) == 0 {
                members.push(r#""sentAt":"2026-01-05T02:00:03Z""#.to_owned());
            }
            if self.below(8) == 0 {
                let c = self.context();
                members.push(format!(r#""context":{c}"#));
            }
            if self.below(4) == 0 {
                members.push(r#""writeKey":"k""#.to_owned());
            }
            let n = members.len();
            for i in (1..n).rev() {
                let j = self.below(i + 1);
                members.swap(i, j);
            }
            format!("{{{}}}", members.join(","))
        }
    }

    /// Generated bodies (and calls on their own) read in one pass normalise exactly as
    /// the look-ups and the reference normaliser do; most of them are read in one pass
    /// (so the comparison is made), some are declined.
    #[test]
    fn generated_bodies_read_in_one_pass_agree_with_the_look_ups() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let (mut read, mut declined, mut single) = (0, 0, 0);
        for _ in 0..3000 {
            let body = g.body();
            assert!(
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                "not JSON: {body}"
            );
            if segment_read_agrees(body.as_bytes(), false, 3) {
                read += 1;
            } else {
                declined += 1;
            }
            segment_agrees(body.as_bytes(), false, 3);
            // A call on its own, as `/v1/track` takes it.
            let call = g.call();
            if segment_read_agrees(call.as_bytes(), true, 1) {
                single += 1;
            }
            segment_agrees(call.as_bytes(), true, 1);
        }
        assert!(
            read > 1500 && declined > 100,
            "read {read}, declined {declined}"
        );
        assert!(single > 2000, "single calls read in one pass: {single}");
    }
}
