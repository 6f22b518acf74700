//! A one-pass reader of the JSON that native endpoints take: a body's array of records is
//! split into the records' texts and each record into its members' names and value texts
//! in a single scan, instead of one `serde_json` pass to split the body and another per
//! record to list its members (together about a quarter of ingest's time). A Segment body
//! is read by [`crate::normalize::segment_parts::read_body`], which walks it with this
//! scanner's primitives ([`Scanner`]) and picks out what the normaliser reads as it goes;
//! what that reader declines is read with [`object_nested`], which also lists the members
//! of every object and the elements of every array nested in it ([`Nested`]), so that a
//! call's `context`, `properties` and `traits`, and the objects in them, are read without
//! a second scan.
//!
//! **It never decides what serde_json would decide otherwise.** It accepts only text that
//! `serde_json` accepts the same way (RFC 8259 grammar; strings with control characters,
//! bad escapes or bad numbers refused; member names with escapes decoded by serde_json
//! itself), and answers `None` for anything else, including anything it does not handle
//! (nesting deeper than [`MAX_DEPTH`], text that is not UTF-8): the callers then take the
//! `serde_json` path, which gives the exact result or error. A value's `\u` escapes are
//! checked as serde_json checks them when it decodes a string (four hex digits, surrogates
//! in pairs) but not decoded. serde_json's own skipping of a value (what `RawValue` does)
//! lets a lone surrogate through, which no value tree accepts: the scanner declines it, so
//! a value it passes on as text decodes wherever it is read. The fuzz target `ingest_body`
//! and the unit tests check that every answer agrees with serde_json's.

use std::borrow::Cow;

/// Deepest nesting of arrays and objects scanned (serde_json refuses past 128; deeper
/// text is left to it).
pub const MAX_DEPTH: usize = 100;

/// An object's members in order, duplicates kept: each name (borrowed unless it has
/// escapes) and the text of its value, without surrounding whitespace.
pub type Members<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// An object's members, owned, or borrowed from what a scan listed ([`Nested`]). (A `Cow`
/// of the slice would not do: it would tie the lifetime of what it holds invariantly.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberList<'a> {
    owned: Members<'a>,
    listed: Option<&'a [(Cow<'a, str>, &'a str)]>,
}

impl<'a> std::ops::Deref for MemberList<'a> {
    type Target = [(Cow<'a, str>, &'a str)];
    fn deref(&self) -> &Self::Target {
        self.listed.unwrap_or(&self.owned)
    }
}

impl<'a> MemberList<'a> {
    /// Members of their own.
    pub fn owned(members: Members<'a>) -> Self {
        MemberList {
            owned: members,
            listed: None,
        }
    }

    /// Members a scan listed.
    pub fn listed(members: &'a [(Cow<'a, str>, &'a str)]) -> Self {
        MemberList {
            owned: Vec::new(),
            listed: Some(members),
        }
    }

    /// The members to change, copied first when they are borrowed.
    pub fn to_mut(&mut self) -> &mut Members<'a> {
        if let Some(m) = self.listed.take() {
            self.owned = m.to_vec();
        }
        &mut self.owned
    }

    /// The members as a `Cow` of their slice.
    pub fn into_cow(self) -> Cow<'a, [(Cow<'a, str>, &'a str)]> {
        match self.listed {
            Some(m) => Cow::Borrowed(m),
            None => Cow::Owned(self.owned),
        }
    }
}

/// One element of a scanned array: its text, and its members when it is an object (`None`
/// for other values).
pub type Element<'a> = (&'a str, Option<Members<'a>>);

/// The elements of `src` when it is exactly one JSON array (whitespace around it allowed).
pub fn array(src: &str) -> Option<Vec<Element<'_>>> {
    let mut s = Scanner::new(src);
    s.ws();
    let out = s.array_elements()?;
    s.ws();
    s.at_end().then_some(out)
}

/// The members of `src` when it is exactly one JSON object.
pub fn object(src: &str) -> Option<Members<'_>> {
    let mut s = Scanner::new(src);
    s.ws();
    let out = s.object(1)?;
    s.ws();
    s.at_end().then_some(out)
}

/// A nested object or array of a text scanned with [`object_nested`]: an object's
/// members, or an array's elements' texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node<'n, 'a> {
    /// An object's members.
    Object(&'n [(Cow<'a, str>, &'a str)]),
    /// An array's elements.
    Array(&'n [&'a str]),
}

impl<'n, 'a> Node<'n, 'a> {
    /// An object's members, `None` for an array.
    pub fn object(self) -> Option<&'n [(Cow<'a, str>, &'a str)]> {
        match self {
            Node::Object(m) => Some(m),
            Node::Array(_) => None,
        }
    }

    /// An array's elements, `None` for an object.
    pub fn array(self) -> Option<&'n [&'a str]> {
        match self {
            Node::Array(a) => Some(a),
            Node::Object(_) => None,
        }
    }
}

/// Where a node's text is in the source, and where its members or elements are.
#[derive(Debug, Clone, Copy)]
struct At {
    off: usize,
    len: usize,
    object: bool,
    from: usize,
    to: usize,
}

/// The objects and arrays nested in a scanned text, found by their text: a value text
/// read from the scanned source is looked up here instead of being scanned again (a
/// Segment call's `context`, and the `campaign` in it, were scanned three and four times).
/// All members are kept in one list and all elements in another, each node's together,
/// rather than a list per node: a request's nodes all live until it is answered.
#[derive(Debug, Default)]
pub struct Nested<'a> {
    /// The scanned source.
    src: &'a str,
    members: Vec<(Cow<'a, str>, &'a str)>,
    elements: Vec<&'a str>,
    /// The nodes in the order of their offsets.
    nodes: Vec<At>,
}

impl<'a> Nested<'a> {
    /// The node whose text is exactly `text` (a slice of the scanned source), if any.
    pub fn get(&self, text: &str) -> Option<Node<'_, 'a>> {
        self.get_in(text, 0..self.nodes.len())
    }

    /// [`Nested::get`] among the nodes `within` (a range of [`Nested::within`]), then
    /// among all.
    fn get_in(&self, text: &str, within: std::ops::Range<usize>) -> Option<Node<'_, 'a>> {
        // Addresses compared as numbers: a text from anywhere else is out of the range.
        let off = (text.as_ptr() as usize).checked_sub(self.src.as_ptr() as usize)?;
        if off >= self.src.len() {
            return None;
        }
        let search = |range: std::ops::Range<usize>| {
            let nodes = self.nodes.get(range.clone())?;
            let i = nodes.binary_search_by_key(&off, |n| n.off).ok()?;
            Some(range.start + i)
        };
        let i = search(within).or_else(|| search(0..self.nodes.len()))?;
        let at = self.nodes[i];
        if at.len != text.len() {
            return None;
        }
        Some(if at.object {
            Node::Object(&self.members[at.from..at.to])
        } else {
            Node::Array(&self.elements[at.from..at.to])
        })
    }

    /// The range of nodes inside the node whose text is `text` (itself included), to
    /// look up the nodes of one call among a batch's.
    pub fn within(&self, text: &str) -> std::ops::Range<usize> {
        let off = (text.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        let lo = self.nodes.partition_point(|n| n.off < off);
        let hi = self
            .nodes
            .partition_point(|n| n.off < off.saturating_add(text.len()));
        lo..hi.max(lo)
    }

    /// Every node with its text, in the order of the text.
    pub fn nodes(&self) -> impl Iterator<Item = (&'a str, Node<'_, 'a>)> + '_ {
        self.nodes.iter().filter_map(|at| {
            let text = self.src.get(at.off..at.off + at.len)?;
            Some((text, self.get(text)?))
        })
    }

    /// The elements of the array whose text is `text`.
    pub fn array(&self, text: &str) -> Option<&[&'a str]> {
        self.get(text)?.array()
    }

    /// The members of the object whose text is `text`.
    pub fn object(&self, text: &str) -> Option<&[(Cow<'a, str>, &'a str)]> {
        self.get(text)?.object()
    }
}

/// A view of a [`Nested`] for one part of the source (a call of a batch): look-ups search
/// that part's nodes first.
#[derive(Debug, Clone, Copy)]
pub struct View<'n, 'a> {
    nested: &'n Nested<'a>,
    /// The range of the part's nodes.
    lo: usize,
    hi: usize,
}

impl<'n, 'a> View<'n, 'a> {
    /// The view of the part whose text is `text`.
    pub fn of(nested: &'n Nested<'a>, text: &str) -> View<'n, 'a> {
        let within = nested.within(text);
        View {
            nested,
            lo: within.start,
            hi: within.end,
        }
    }

    /// The members of the object whose text is `text`.
    pub fn object(&self, text: &str) -> Option<&'n [(Cow<'a, str>, &'a str)]> {
        self.nested.get_in(text, self.lo..self.hi)?.object()
    }

    /// The elements of the array whose text is `text`.
    pub fn array(&self, text: &str) -> Option<&'n [&'a str]> {
        self.nested.get_in(text, self.lo..self.hi)?.array()
    }
}

/// [`object`], also listing the members of every object and the elements of every array
/// nested in it ([`Nested`]).
pub fn object_nested(src: &str) -> Option<(Members<'_>, Nested<'_>)> {
    let mut s = Scanner::new(src);
    s.capture = Some(Capture::for_len(src.len()));
    s.ws();
    let out = s.object(1)?;
    s.ws();
    let c = s.capture.take().unwrap_or_default();
    let nested = Nested {
        src,
        members: c.members,
        elements: c.elements,
        nodes: c.nodes,
    };
    s.at_end().then_some((out, nested))
}

/// What a capturing scan lists ([`object_nested`]), with its work stacks: a node's
/// members or elements are gathered on the stack of its depth while its own nested nodes
/// are read (on deeper stacks), then moved to the lists together. The stacks are kept
/// from node to node.
#[derive(Debug, Default)]
struct Capture<'a> {
    members: Vec<(Cow<'a, str>, &'a str)>,
    elements: Vec<&'a str>,
    nodes: Vec<At>,
    member_stacks: Vec<Vec<(Cow<'a, str>, &'a str)>>,
    element_stacks: Vec<Vec<&'a str>>,
}

impl<'a> Capture<'a> {
    /// Lists sized for a source of `len` bytes (about one member in 16 bytes of a
    /// tracking body), so they seldom grow and move.
    fn for_len(len: usize) -> Self {
        Capture {
            members: Vec::with_capacity(len / 16),
            elements: Vec::with_capacity(len / 256),
            nodes: Vec::with_capacity(len / 48),
            member_stacks: Vec::new(),
            element_stacks: Vec::new(),
        }
    }
}

/// The high bit of each byte of `w` that is a quote, a backslash or a control character
/// (below 0x20), exact from the lowest such byte up to the first one (the borrow of the
/// subtraction can mark bytes above it too, which the caller never looks at).
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control) & HIGH
}

/// A string's text between its quotes (`from..to` in the source), and whether it holds
/// escapes.
pub(crate) struct Quoted {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) escaped: bool,
}

/// The brackets of an array and the braces of an object.
pub(crate) const ARRAY: (u8, u8) = (b'[', b']');
pub(crate) const OBJECT: (u8, u8) = (b'{', b'}');

/// The scanner; also read by the Segment body reader
/// ([`crate::normalize::segment_parts`]), which walks a body with its primitives.
pub(crate) struct Scanner<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
    /// Set to list nested objects and arrays ([`object_nested`]).
    capture: Option<Capture<'a>>,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        Scanner {
            src,
            b: src.as_bytes(),
            i: 0,
            capture: None,
        }
    }

    /// Where the cursor is.
    pub(crate) fn pos(&self) -> usize {
        self.i
    }

    /// The source text.
    pub(crate) fn src(&self) -> &'a str {
        self.src
    }

    /// A nested object or array at the cursor, listed in `capture`.
    #[inline(never)]
    fn nested(&mut self, depth: usize) -> Option<()> {
        let start = self.i;
        // The slot is taken before the node's own nested nodes, so the list stays in the
        // order of the offsets.
        let c = self.capture.as_mut()?;
        let slot = c.nodes.len();
        c.nodes.push(At {
            off: start,
            len: 0,
            object: false,
            from: 0,
            to: 0,
        });
        let object = self.peek()? == b'{';
        let (from, to) = if object {
            let c = self.capture.as_mut()?;
            if c.member_stacks.len() <= depth {
                c.member_stacks.resize_with(depth + 1, Vec::new);
            }
            let mut stack = std::mem::take(&mut c.member_stacks[depth]);
            stack.clear();
            self.members_onto(depth, &mut stack)?;
            let c = self.capture.as_mut()?;
            let from = c.members.len();
            c.members.append(&mut stack);
            c.member_stacks[depth] = stack;
            (from, c.members.len())
        } else {
            let c = self.capture.as_mut()?;
            if c.element_stacks.len() <= depth {
                c.element_stacks.resize_with(depth + 1, Vec::new);
            }
            let mut stack = std::mem::take(&mut c.element_stacks[depth]);
            stack.clear();
            self.list(ARRAY, depth, |s| {
                let from = s.i;
                s.value(depth + 1)?;
                let src = s.src;
                stack.push(&src[from..s.i]);
                Some(())
            })?;
            let c = self.capture.as_mut()?;
            let from = c.elements.len();
            c.elements.append(&mut stack);
            c.element_stacks[depth] = stack;
            (from, c.elements.len())
        };
        let len = self.i - start;
        let at = self.capture.as_mut()?.nodes.get_mut(slot)?;
        *at = At {
            off: start,
            len,
            object,
            from,
            to,
        };
        Some(())
    }

    /// The members of the object at the cursor, pushed onto `stack`. (Apart from
    /// [`Scanner::nested`], so that the push is compiled inline.)
    #[inline(never)]
    fn members_onto(&mut self, depth: usize, stack: &mut Members<'a>) -> Option<()> {
        self.list(OBJECT, depth, |s| {
            let (name, value) = s.member(depth)?;
            stack.push((s.name(name)?, value));
            Some(())
        })
    }

    pub(crate) fn at_end(&self) -> bool {
        self.i == self.b.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `open item (, item)* close` at the cursor, whitespace allowed around each item: an
    /// array or an object at nesting `depth`, `item` reading one item at the cursor.
    #[inline(always)]
    fn list(
        &mut self,
        (open, close): (u8, u8),
        depth: usize,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(open)?;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            self.ws();
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                c if c == close => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `"name" : value` at the cursor, in an object at nesting `depth`: the name (the
    /// range between its quotes, whether it holds escapes) and the value's text.
    #[inline(always)]
    fn member(&mut self, depth: usize) -> Option<(Quoted, &'a str)> {
        let name = self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        let start = self.i;
        // Strings and numbers (most values) read here, without the call into `value`.
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => self.value(depth + 1)?,
        }
        let src = self.src;
        Some((name, &src[start..self.i]))
    }

    /// `[ elements ]` at the cursor, each object element with its members.
    fn array_elements(&mut self) -> Option<Vec<Element<'a>>> {
        let mut out = Vec::new();
        self.list(ARRAY, 1, |s| {
            let start = s.i;
            let members = if s.peek() == Some(b'{') {
                Some(s.object(2)?)
            } else {
                s.value(2)?;
                None
            };
            let src = s.src;
            out.push((&src[start..s.i], members));
            Some(())
        })?;
        Some(out)
    }

    /// `{ members }` at the cursor.
    fn object(&mut self, depth: usize) -> Option<Members<'a>> {
        let mut out = Vec::with_capacity(16);
        self.list(OBJECT, depth, |s| {
            let (name, value) = s.member(depth)?;
            out.push((s.name(name)?, value));
            Some(())
        })?;
        Some(out)
    }

    /// A member's name: borrowed, or decoded by serde_json when it has escapes.
    #[inline(always)]
    fn name(&self, name: Quoted) -> Option<Cow<'a, str>> {
        let src = self.src;
        Some(if name.escaped {
            let quoted = &src[name.from - 1..name.to + 1];
            Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
        } else {
            Cow::Borrowed(&src[name.from..name.to])
        })
    }

    /// Any value at the cursor.
    pub(crate) fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' if self.capture.is_some() => self.nested(depth),
            b'{' => self.list(OBJECT, depth, |s| s.member(depth).map(|_| ())),
            b'[' => self.list(ARRAY, depth, |s| s.value(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    pub(crate) fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => {
                self.i += 1;
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        // serde_json reads a number to its last digit and then wants a separator: a digit
        // right after a leading zero ("01") is refused there, and here by the caller,
        // which finds no separator.
        Some(())
    }

    /// The four hex digits at `at` as a number.
    fn hex4(&self, at: usize) -> Option<u16> {
        let hex = self.b.get(at..at + 4)?;
        hex.iter().try_fold(0u16, |acc, &c| {
            let d = (c as char).to_digit(16)?;
            Some(acc << 4 | d as u16)
        })
    }

    /// A string at the cursor: the byte range between its quotes, and whether it holds
    /// escapes. Escapes are checked as serde_json checks them when it decodes a string
    /// (four hex digits after `\u`, surrogates in pairs).
    #[inline(always)]
    pub(crate) fn string(&mut self) -> Option<Quoted> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Eight bytes at a time up to the first quote, backslash or control character.
            if let Some(word) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(word.try_into().ok()?);
                let special = special_bytes(w);
                if special == 0 {
                    self.i += 8;
                    continue;
                }
                self.i += (special.trailing_zeros() / 8) as usize;
            }
            let c = self.peek()?;
            if c == b'"' {
                self.i += 1;
                return Some(Quoted {
                    from: start,
                    to: self.i - 1,
                    escaped,
                });
            }
            if c != b'\\' {
                if c < 0x20 {
                    return None;
                }
                self.i += 1;
                continue;
            }
            escaped = true;
            self.i += 1;
            match self.peek()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                b'u' => {
                    let code = self.hex4(self.i + 1)?;
                    self.i += 5;
                    match code {
                        // A leading surrogate needs a trailing one right after it.
                        0xD800..=0xDBFF => {
                            if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                return None;
                            }
                            if !(0xDC00..=0xDFFF).contains(&self.hex4(self.i + 2)?) {
                                return None;
                            }
                            self.i += 6;
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => {}
                    }
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fuzzing::scan_agrees as agrees;

    const CASES: &[&str] = &[
        r#"[]"#,
        r#" [ ] "#,
        r#"[{}]"#,
        r#"[{"a":1,"b":"x","a":[1,{"c":null}],"d":true,"e":false}]"#,
        r#"[ {"a" : 1 } , 2 , "s" , null , [ ] ]"#,
        r#"{"k\"ey":"v\\al","\u0041":"\u00e9\ud83d\ude00","x":-0.5e+3}"#,
        r#"{"lone":"\ud800","\ud800":1}"#,
        r#"[{"\ud800":1},{"a":2}]"#,
        r#"[1.5E-3, -0, 0, 10, 1e400, 123456789012345678901234567890]"#,
        r#"[01]"#,
        r#"[1.]"#,
        r#"[.5]"#,
        r#"[-]"#,
        r#"[1e]"#,
        r#"[+1]"#,
        r#"["a	b"]"#,
        r#"["\x"]"#,
        r#"["\u12g4"]"#,
        r#"[tru]"#,
        r#"[nul, 1]"#,
        r#"[1,]"#,
        r#"[,1]"#,
        r#"[1 2]"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":1} x"#,
        r#"[1]]"#,
        r#"[{"a":"保温杯"}]"#,
        "[{\"a\":1}]\n",
        "\u{feff}[1]",
        r#"[{"a":{"b":{"c":[[[{}]]]}}}]"#,
        // Strings longer than a word: read eight bytes at a time.
        r#"[{"a_long_member_name":"a long value with \"escapes\" and 汉字 in it","b":"0123456789abcdef0123"}]"#,
        // Numbers as member values (read in `member`, not `value`).
        r#"{"a":01}"#,
        r#"{"a":-}"#,
        r#"{"a":-0,"b":1.}"#,
        r#"{"a":1e}"#,
        r#"{"a":-1.5E+3,"b":0}"#,
        r#"[{"a":01}]"#,
        r#"[{"a":"x","b":-}]"#,
    ];

    #[test]
    fn agrees_with_serde_json_on_hand_cases() {
        for case in CASES {
            agrees(case);
        }
        // And it reads what it should, not only agrees by declining.
        for ok in [CASES[0], CASES[3], CASES[4], CASES[8], CASES[28], CASES[32]] {
            assert!(array(ok).is_some(), "{ok}");
        }
        assert!(object(CASES[5]).is_some() && object(CASES[6]).is_none());
        // Nested objects and arrays are listed, found again by their text.
        assert_eq!(
            crate::fuzzing::nested_agrees(r#"{"a":{"b":[1,{"c":[]}]},"d":[{}],"e":"{[","a":[]}"#),
            7
        );
        assert_eq!(crate::fuzzing::nested_agrees(r#"{"a":1}"#), 0);
        // A lone surrogate, which serde_json's skipping passes and no value tree takes.
        assert!(array(CASES[7]).is_none());
        for lone in [
            r#"["\ud800"]"#,
            r#"["\udc00"]"#,
            r#"["\ud800\u0041"]"#,
            r#"["\udbff\ud800"]"#,
        ] {
            assert!(array(lone).is_none(), "{lone}");
        }
        for pair in [
            r#"["\ud800\udc00"]"#,
            r#"["\uDBFF\uDFFF"]"#,
            r#"["\ud7ff\ue000"]"#,
        ] {
            assert!(array(pair).is_some(), "{pair}");
            agrees(pair);
        }
        let deep = format!("[{}1{}]", "[".repeat(150), "]".repeat(150));
        assert!(
            array(&deep).is_none(),
            "deeper than MAX_DEPTH is left to serde_json"
        );
        agrees(&deep);
    }

    #[test]
    fn agrees_with_serde_json_on_every_cut_and_byte_change() {
        // Every prefix of each case, and each case with one byte replaced by each of a
        // set of JSON's structural characters.
        let swaps = b"\"\\{}[]:,0-e. \x01aun";
        let mut n = 0;
        for case in CASES {
            for cut in 0..=case.len() {
                if case.is_char_boundary(cut) {
                    agrees(&case[..cut]);
                    n += 1;
                }
            }
            for at in 0..case.len() {
                if !case.is_char_boundary(at) || !case.is_char_boundary(at + 1) {
                    continue;
                }
                for &b in swaps {
                    let mut s = case.as_bytes().to_vec();
                    s[at] = b;
                    if let Ok(text) = std::str::from_utf8(&s) {
                        agrees(text);
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 5_000, "{n} variants");
    }
}
