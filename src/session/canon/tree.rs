//! The reference implementation of the canonical hash: the item is parsed
//! into a small borrowed tree ([`Node`]: strings borrow from the request
//! bytes unless they hold escapes) and walked once, feeding a streaming
//! XXH3-128 hasher with the encoding of `encode`.
//!
//! The proxy hashes items with `scan` (straight from the raw bytes, no tree);
//! this path hashes items given as [`serde_json::Value`]s, and decides every
//! item `scan` declines (errors included). Tests hold the two to the same
//! digests, so keep this one simple rather than fast.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

use super::encode::{
    LONG_STR, TAG_ARR, TAG_F64, TAG_FALSE, TAG_I64, TAG_LONG_STR, TAG_NULL, TAG_OBJ, TAG_STR, TAG_TRUE,
    TAG_U64,
};
use super::kind::{ItemKind, kind_of};

/// A parsed JSON value whose strings borrow from the input where they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    /// A long string that had escapes, kept only as its digest (see `put_str`).
    Digest(u128),
    Arr(Vec<Node<'a>>),
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::I64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        // An escaped string cannot be borrowed; a long one is digested now
        // instead of copied (it hashes the same either way, see `put_str`).
        Ok(owned_str(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(owned_str(&v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element::<Node<'de>>()? {
            out.push(v);
        }
        Ok(Node::Arr(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value::<Node<'de>>()?;
            out.push((k, v));
        }
        // Sorted once here (stable, so duplicate keys keep their order), which
        // lets hashing walk objects without collecting their fields again.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Node::Obj(out))
    }
}

fn owned_str<'a>(v: &str) -> Node<'a> {
    match v.len() > LONG_STR {
        true => Node::Digest(xxh3_128(v.as_bytes())),
        false => Node::Str(Cow::Owned(v.to_owned())),
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Deserializes an object key, borrowing it when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

fn put_len(h: &mut Xxh3Default, tag: u8, len: usize) {
    h.update(&[tag]);
    h.update(&(len as u64).to_le_bytes());
}

fn put_str(h: &mut Xxh3Default, s: &str) {
    if s.len() > LONG_STR {
        put_digest(h, xxh3_128(s.as_bytes()));
    } else {
        put_len(h, TAG_STR, s.len());
        h.update(s.as_bytes());
    }
}

fn put_digest(h: &mut Xxh3Default, d: u128) {
    h.update(&[TAG_LONG_STR]);
    h.update(&d.to_le_bytes());
}

/// Whether an object field is dropped from the canonical form at any depth.
fn dropped_anywhere(key: &str, value: &Node<'_>) -> bool {
    match value {
        Node::Null => true,
        Node::Arr(a) => a.is_empty() && (key == "annotations" || key == "logprobs"),
        _ => false,
    }
}

/// How a field's value is to be hashed.
enum Field<'n, 'a> {
    Plain(&'n Node<'a>),
    /// Message content: a string becomes one `input_text` part; assistant
    /// `output_text` parts become `input_text`.
    Content(&'n Node<'a>, bool),
    /// A constant string (the implied `type:"message"`).
    Const(&'static str),
}

fn hash_fields(h: &mut Xxh3Default, fields: &mut [(&str, Field<'_, '_>)]) {
    fields.sort_by(|a, b| a.0.cmp(b.0));
    put_len(h, TAG_OBJ, fields.len());
    for (k, f) in fields.iter() {
        put_str(h, k);
        match f {
            Field::Plain(n) => hash_node(h, n),
            Field::Content(n, assistant) => hash_content(h, n, *assistant),
            Field::Const(s) => put_str(h, s),
        }
    }
}

/// Hashes any value under the generic rules (sorted keys, dropped nulls).
pub(crate) fn hash_node(h: &mut Xxh3Default, node: &Node<'_>) {
    match node {
        Node::Null => h.update(&[TAG_NULL]),
        Node::Bool(true) => h.update(&[TAG_TRUE]),
        Node::Bool(false) => h.update(&[TAG_FALSE]),
        Node::U64(v) => {
            h.update(&[TAG_U64]);
            h.update(&v.to_le_bytes());
        }
        Node::I64(v) => {
            h.update(&[TAG_I64]);
            h.update(&v.to_le_bytes());
        }
        Node::F64(v) => {
            h.update(&[TAG_F64]);
            h.update(&v.to_bits().to_le_bytes());
        }
        Node::Str(s) => put_str(h, s),
        Node::Digest(d) => put_digest(h, *d),
        Node::Arr(a) => {
            put_len(h, TAG_ARR, a.len());
            for v in a {
                hash_node(h, v);
            }
        }
        Node::Obj(o) => hash_sorted_obj(h, o, false),
    }
}

/// Hashes message content: `"s"` as `[{"type":"input_text","text":"s"}]`.
fn hash_content(h: &mut Xxh3Default, node: &Node<'_>, assistant: bool) {
    match node {
        Node::Str(_) | Node::Digest(_) => {
            put_len(h, TAG_ARR, 1);
            put_len(h, TAG_OBJ, 2);
            put_str(h, "text");
            hash_node(h, node);
            put_str(h, "type");
            put_str(h, "input_text");
        }
        Node::Arr(parts) if assistant => {
            put_len(h, TAG_ARR, parts.len());
            for part in parts {
                hash_assistant_part(h, part);
            }
        }
        other => hash_node(h, other),
    }
}

fn hash_assistant_part(h: &mut Xxh3Default, part: &Node<'_>) {
    match part {
        Node::Obj(o) => hash_sorted_obj(h, o, true),
        other => hash_node(h, other),
    }
}

/// Hashes an object whose fields are already sorted by key (as parsed);
/// `output_text_as_input` maps `type:"output_text"` to `"input_text"`.
fn hash_sorted_obj(h: &mut Xxh3Default, o: &[(Cow<'_, str>, Node<'_>)], output_text_as_input: bool) {
    let kept = o.iter().filter(|(k, v)| !dropped_anywhere(k, v)).count();
    put_len(h, TAG_OBJ, kept);
    for (k, v) in o.iter().filter(|(k, v)| !dropped_anywhere(k, v)) {
        put_str(h, k);
        match v {
            Node::Str(t) if output_text_as_input && k == "type" && t == "output_text" => {
                put_str(h, "input_text")
            }
            v => hash_node(h, v),
        }
    }
}

/// The first `key` field that is a string. A long escaped string was kept
/// only as a digest: it stands as `""`, which the kind rules treat as they
/// treat any long string (an unknown value), so escaping cannot change an
/// item's kind.
fn str_field<'n>(o: &'n [(Cow<'_, str>, Node<'_>)], key: &str) -> Option<&'n str> {
    o.iter().find_map(|(k, v)| match v {
        Node::Str(s) if k == key => Some(s.as_ref()),
        Node::Digest(_) if k == key => Some(""),
        _ => None,
    })
}

/// Hashes one item in canonical form. Items that are not objects still hash
/// (exactly); the caller decides whether to accept them.
pub(crate) fn hash_item(node: &Node<'_>) -> (u128, ItemKind) {
    let mut h = Xxh3Default::new();
    let Node::Obj(o) = node else {
        hash_node(&mut h, node);
        return (h.digest128(), ItemKind::Other);
    };
    // A `type` that is absent or null is missing; one that is not a string
    // makes the item `Other` (hashed exactly).
    let (ty, ty_missing) = match o.iter().find(|(k, _)| k == "type") {
        None | Some((_, Node::Null)) => (None, true),
        Some((_, Node::Str(s))) => (Some(s.as_ref()), false),
        Some(_) => (Some(""), false),
    };
    let role = str_field(o, "role");
    let kind = kind_of(ty, role);
    let is_message = matches!(kind, ItemKind::Message(_));
    let drop_server_fields =
        matches!(kind, ItemKind::Message(_) | ItemKind::FunctionCall | ItemKind::FunctionCallOutput);
    let assistant = is_message && role == Some("assistant");
    let mut fields: Vec<(&str, Field<'_, '_>)> = Vec::with_capacity(o.len() + 1);
    for (k, v) in o {
        let k = k.as_ref();
        if dropped_anywhere(k, v) || (drop_server_fields && (k == "id" || k == "status")) {
            continue;
        }
        let f = if is_message && k == "content" { Field::Content(v, assistant) } else { Field::Plain(v) };
        fields.push((k, f));
    }
    if is_message && ty_missing {
        fields.push(("type", Field::Const("message")));
    }
    hash_fields(&mut h, &mut fields);
    (h.digest128(), kind)
}
