//! The canonical hash of an item straight from its raw JSON text: one pass
//! over the bytes, no tree.
//!
//! Each value's encoding is appended to a reused buffer as the scanner meets
//! it. An object's members go in document order, each a (key, value) segment,
//! and are then put in key order: a stable sort of their positions (as the
//! tree path's stable sort, so duplicate keys keep their order) and one copy
//! of the object's bytes, only when they were not sorted already. A dropped
//! member is cut off as soon as its value ends. The item's own fields depend
//! on its kind, and `type` or `role` may come after `id` or `content`, so they
//! are kept aside and filtered at the end; `content` is encoded under the rule
//! the fields seen so far imply, and encoded again in the rare case the final
//! kind implies another.
//!
//! The text is a `RawValue`'s, so serde_json has already checked its syntax,
//! that it is UTF-8 and that its strings hold no raw control characters. What
//! that check leaves open (what an escape stands for, whether a number fits,
//! nesting depth) is either done exactly as serde_json does it or declined,
//! and a declined item goes to the tree path, which decides.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_128;

use super::encode::{TAG_ARR, TAG_FALSE, TAG_NULL, TAG_OBJ, TAG_STR, TAG_TRUE, put_len, put_str};
use super::kind::{ContentRule, ItemKind, drops_server_fields, kind_of};
use super::lex::{Declined, Scan, encode_number, encode_string, read_string};

/// Deeper items are left to the tree path (whose parser stops at 128).
const MAX_DEPTH: usize = 100;

/// Buffers reused across the items of one call.
#[derive(Default)]
pub(crate) struct Scratch<'a> {
    out: Vec<u8>,
    tmp: Vec<u8>,
    members: Vec<Member<'a>>,
    contents: Vec<Content>,
}

impl Scratch<'_> {
    /// Buffers sized for items of up to `longest` bytes of text, so the
    /// first item of a call does not grow them step by step. An encoding
    /// is about as long as its text (long strings become 17-byte digests).
    pub(crate) fn for_items(longest: usize) -> Self {
        let bytes = (longest + longest / 2).min(1 << 16);
        Scratch {
            out: Vec::with_capacity(bytes),
            tmp: Vec::with_capacity(bytes),
            members: Vec::with_capacity(16),
            contents: Vec::new(),
        }
    }
}

/// A kept object member: its key and where its encoding lies in `out`.
struct Member<'a> {
    key: Cow<'a, str>,
    start: usize,
    end: usize,
}

/// An item's `content` member, encoded under `rule` from `raw_at`.
struct Content {
    member: usize,
    rule: ContentRule,
    raw_at: usize,
}

/// What the first `type` field of an item held, as the tree path sees it.
enum Ty<'a> {
    Null,
    Str(Cow<'a, str>),
    Other,
}

fn ty_str<'t>(ty: &'t Option<Ty<'_>>) -> Option<&'t str> {
    match ty {
        None | Some(Ty::Null) => None,
        Some(Ty::Str(s)) => Some(s),
        Some(Ty::Other) => Some(""),
    }
}

/// The canonical hash and kind of the object item `text`, or `None` when the
/// tree path must decide (see the module doc).
pub(crate) fn hash_raw_item<'a>(text: &'a str, scratch: &mut Scratch<'a>) -> Option<(u128, ItemKind)> {
    let Scratch { out, tmp, members, contents } = scratch;
    out.clear();
    members.clear();
    contents.clear();
    let mut s = Scanner { text, b: text.as_bytes(), pos: 0, depth: 0, out, tmp, members };
    s.item(contents).ok()
}

struct Scanner<'a, 's> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    depth: usize,
    out: &'s mut Vec<u8>,
    tmp: &'s mut Vec<u8>,
    members: &'s mut Vec<Member<'a>>,
}

const EMPTY_ARR: [u8; 9] = [TAG_ARR, 0, 0, 0, 0, 0, 0, 0, 0];

/// Whether a member is dropped at any depth: a null, or an empty
/// `annotations`/`logprobs` array (`value` is its encoding).
fn dropped(key: &str, value: &[u8]) -> bool {
    value == [TAG_NULL] || (value == EMPTY_ARR && (key == "annotations" || key == "logprobs"))
}

/// Whether `enc` is the encoding of the short string `s`.
fn encodes_str(enc: &[u8], s: &str) -> bool {
    enc.len() == 9 + s.len()
        && enc[0] == TAG_STR
        && enc[1..9] == (s.len() as u64).to_le_bytes()
        && &enc[9..] == s.as_bytes()
}

impl<'a> Scanner<'a, '_> {
    fn item(&mut self, contents: &mut Vec<Content>) -> Scan<(u128, ItemKind)> {
        self.ws();
        self.eat(b'{')?;
        self.depth = 1;
        let mut ty: Option<Ty<'a>> = None;
        let mut role: Option<Cow<'a, str>> = None;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let (key, start, at) = self.member_key()?;
                let raw_at = self.pos;
                let mut rule = None;
                match key.as_ref() {
                    "content" => {
                        let r = ContentRule::of(kind_of(ty_str(&ty), role.as_deref()), role.as_deref());
                        self.content(r)?;
                        rule = Some(r);
                    }
                    "type" | "role" if self.peek() == Some(b'"') => {
                        let value = self.string_cow()?;
                        put_str(self.out, value.as_bytes());
                        if key == "type" && ty.is_none() {
                            ty = Some(Ty::Str(value));
                        } else if key == "role" && role.is_none() {
                            role = Some(value);
                        }
                    }
                    _ => self.value()?,
                }
                if key == "type" && ty.is_none() {
                    ty = Some(if self.out[at..] == [TAG_NULL] { Ty::Null } else { Ty::Other });
                }
                if dropped(&key, &self.out[at..]) {
                    self.out.truncate(start);
                } else {
                    if let Some(rule) = rule {
                        contents.push(Content { member: self.members.len(), rule, raw_at });
                    }
                    self.members.push(Member { key, start, end: self.out.len() });
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(Declined);
        }
        let kind = kind_of(ty_str(&ty), role.as_deref());
        self.finish_item(
            kind,
            ContentRule::of(kind, role.as_deref()),
            !matches!(ty, Some(Ty::Str(_) | Ty::Other)),
            contents,
        )
    }

    /// Applies the item-level rules once the kind is known, then hashes.
    fn finish_item(
        &mut self,
        kind: ItemKind,
        rule: ContentRule,
        ty_missing: bool,
        contents: &[Content],
    ) -> Scan<(u128, ItemKind)> {
        for c in contents.iter().filter(|c| c.rule != rule) {
            self.pos = c.raw_at;
            self.depth = 1;
            let start = self.out.len();
            put_str(self.out, b"content");
            self.content(rule)?;
            let m = &mut self.members[c.member];
            (m.start, m.end) = (start, self.out.len());
        }
        if drops_server_fields(kind) {
            self.members.retain(|m| m.key != "id" && m.key != "status");
        }
        if matches!(kind, ItemKind::Message(_)) && ty_missing {
            let start = self.out.len();
            put_str(self.out, b"type");
            put_str(self.out, b"message");
            self.members.push(Member { key: Cow::Borrowed("type"), start, end: self.out.len() });
        }
        self.members.sort_by(|a, b| a.key.cmp(&b.key));
        self.tmp.clear();
        put_len(self.tmp, TAG_OBJ, self.members.len());
        for m in self.members.iter() {
            self.tmp.extend_from_slice(&self.out[m.start..m.end]);
        }
        Ok((xxh3_128(self.tmp), kind))
    }

    /// Message content: a string as one `input_text` part, an assistant's
    /// parts with `output_text` as `input_text`.
    fn content(&mut self, rule: ContentRule) -> Scan<()> {
        match (rule, self.peek()) {
            (ContentRule::Plain, _) => self.value(),
            (_, Some(b'"')) => {
                put_len(self.out, TAG_ARR, 1);
                put_len(self.out, TAG_OBJ, 2);
                put_str(self.out, b"text");
                self.string()?;
                put_str(self.out, b"type");
                put_str(self.out, b"input_text");
                Ok(())
            }
            (ContentRule::Assistant, Some(b'[')) => self.array(true),
            _ => self.value(),
        }
    }

    fn value(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{') => self.object(false),
            Some(b'[') => self.array(false),
            Some(b't') => self.literal(b"true", TAG_TRUE),
            Some(b'f') => self.literal(b"false", TAG_FALSE),
            Some(b'n') => self.literal(b"null", TAG_NULL),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Declined),
        }
    }

    /// An object; `parts` maps `type:"output_text"` to `"input_text"`.
    fn object(&mut self, parts: bool) -> Scan<()> {
        self.pos += 1;
        self.enter()?;
        let header = self.out.len();
        put_len(self.out, TAG_OBJ, 0);
        let mark = self.members.len();
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let (key, start, at) = self.member_key()?;
                self.value()?;
                if parts && key == "type" && encodes_str(&self.out[at..], "output_text") {
                    self.out.truncate(at);
                    put_str(self.out, b"input_text");
                }
                if dropped(&key, &self.out[at..]) {
                    self.out.truncate(start);
                } else {
                    self.members.push(Member { key, start, end: self.out.len() });
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        let n = self.members.len() - mark;
        self.out[header + 1..header + 9].copy_from_slice(&(n as u64).to_le_bytes());
        self.sort_members(header + 9, mark);
        self.members.truncate(mark);
        self.depth -= 1;
        Ok(())
    }

    /// Puts the members from `mark` on, whose segments tile `out[body..]`,
    /// in key order.
    fn sort_members(&mut self, body: usize, mark: usize) {
        let members = &mut self.members[mark..];
        if members.windows(2).all(|w| w[0].key <= w[1].key) {
            return;
        }
        members.sort_by(|a, b| a.key.cmp(&b.key));
        self.tmp.clear();
        self.tmp.extend_from_slice(&self.out[body..]);
        self.out.truncate(body);
        for m in members.iter() {
            self.out.extend_from_slice(&self.tmp[m.start - body..m.end - body]);
        }
    }

    /// An array; `parts` applies the assistant part rule to its objects.
    fn array(&mut self, parts: bool) -> Scan<()> {
        self.pos += 1;
        self.enter()?;
        let header = self.out.len();
        put_len(self.out, TAG_ARR, 0);
        let mut n = 0usize;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                if parts && self.peek() == Some(b'{') {
                    self.object(true)?;
                } else {
                    self.value()?;
                }
                n += 1;
                if !self.more(b']')? {
                    break;
                }
            }
        }
        self.out[header + 1..header + 9].copy_from_slice(&(n as u64).to_le_bytes());
        self.depth -= 1;
        Ok(())
    }

    /// A member's key and colon; writes the key to `out`. Returns the key,
    /// where the member starts in `out`, and where its value starts.
    fn member_key(&mut self) -> Scan<(Cow<'a, str>, usize, usize)> {
        self.ws();
        let key = self.string_cow()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        let start = self.out.len();
        put_str(self.out, key.as_bytes());
        Ok((key, start, self.out.len()))
    }

    /// After a member or element: `true` on `,`, `false` on `close`.
    fn more(&mut self, close: u8) -> Scan<bool> {
        self.ws();
        match self.next()? {
            b',' => Ok(true),
            c if c == close => Ok(false),
            _ => Err(Declined),
        }
    }

    fn string(&mut self) -> Scan<()> {
        encode_string(self.b, &mut self.pos, self.out)
    }

    fn string_cow(&mut self) -> Scan<Cow<'a, str>> {
        read_string(self.text, &mut self.pos)
    }

    fn number(&mut self) -> Scan<()> {
        encode_number(self.text, &mut self.pos, self.out)
    }

    fn literal(&mut self, word: &[u8], tag: u8) -> Scan<()> {
        if !self.b[self.pos..].starts_with(word) {
            return Err(Declined);
        }
        self.pos += word.len();
        self.out.push(tag);
        Ok(())
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Declined);
        }
        Ok(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn next(&mut self) -> Scan<u8> {
        let c = self.peek().ok_or(Declined)?;
        self.pos += 1;
        Ok(c)
    }

    fn eat(&mut self, c: u8) -> Scan<()> {
        match self.next()? == c {
            true => Ok(()),
            false => Err(Declined),
        }
    }
}
