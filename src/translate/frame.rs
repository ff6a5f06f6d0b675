//! Cheap parsing of one upstream frame and the byte-preserving rewrite of
//! `response.previous_response_id`.
//!
//! A frame is parsed once into borrowed views; the frame text is only copied
//! when the `previous_response_id` tether sent upstream differs from the
//! client's, and then only the value itself is spliced.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The top level of a frame: its type, and the borrowed `response` object when
/// there is one.
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Kept raw: a frame with an odd `sequence_number` still passes through.
    #[serde(default, borrow)]
    pub sequence_number: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub response: Option<&'a RawValue>,
}

/// A frame in the servers' compact layout:
/// `{"type":"…",["sequence_number":N,]"response":` first, then the Response.
/// Found by reading the head alone; `None` means "parse the frame".
pub(crate) struct Leading<'a> {
    /// The frame's type, written without escapes.
    pub kind: &'a str,
    /// The frame's sequence number, when it comes second.
    pub sequence_number: Option<u64>,
    /// From the Response's first byte to before the frame's closing brace:
    /// the Response alone when it is the frame's last member (a parse of it
    /// as one JSON value tells).
    pub response: &'a str,
}

/// The frame's `type` when it is the first member, written compactly
/// (`{"type":"…"`) and without escapes; `None` means "parse to know".
pub(crate) fn leading_type(frame: &str) -> Option<&str> {
    unescaped_string(frame.strip_prefix(r#"{"type":""#)?)
}

/// The string that starts `rest` (after its opening quote), when it has no
/// escapes (nor control characters, which JSON refuses); `None` otherwise.
pub(crate) fn unescaped_string(rest: &str) -> Option<&str> {
    let end = rest.find(['"', '\\'])?;
    let s = &rest[..end];
    (rest.as_bytes()[end] == b'"' && !s.bytes().any(|b| b < 0x20)).then_some(s)
}

/// The frame's head in the servers' layout; see [`Leading`].
pub(crate) fn leading(frame: &str) -> Option<Leading<'_>> {
    let kind = leading_type(frame)?;
    let rest = frame[r#"{"type":""#.len() + kind.len() + 1..].strip_prefix(',')?;
    let (sequence_number, rest) = match rest.strip_prefix(r#""sequence_number":"#) {
        Some(n) => {
            let digits = n.bytes().take_while(u8::is_ascii_digit).count();
            // JSON has no leading zeros: such a frame is the parser's to refuse.
            if digits == 0 || (digits > 1 && n.starts_with('0')) {
                return None;
            }
            (Some(n[..digits].parse::<u64>().ok()?), n[digits..].strip_prefix(',')?)
        }
        None => (None, rest),
    };
    let response = rest.strip_prefix(r#""response":"#)?.strip_suffix('}')?;
    Some(Leading { kind, sequence_number, response })
}

/// The fields of a Response object that translation needs.
#[derive(Deserialize)]
pub(crate) struct ResponseView<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "raw_even_if_null")]
    pub previous_response_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub output: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
}

/// Keeps a present field as raw text even when it is `null`, so its span
/// can be replaced.
fn raw_even_if_null<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Byte offset of `inner` inside `outer`; `inner` must be a sub-slice.
fn offset_in(outer: &str, inner: &str) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

/// Whether a raw `previous_response_id` value already equals `want`.
fn same_value(raw: Option<&RawValue>, want: Option<&str>) -> bool {
    let have: Option<Cow<'_, str>> = match raw {
        None => None,
        Some(r) => match serde_json::from_str::<Option<Cow<'_, str>>>(r.get()) {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    have.as_deref() == want
}

/// The JSON text of the client's value (a string or `null`).
fn json_value(want: Option<&str>) -> String {
    match want {
        None => "null".to_owned(),
        Some(s) => serde_json::Value::from(s).to_string(),
    }
}

/// Rewrites `previous_response_id` inside the Response object text `resp` to
/// `want`, touching nothing else. Borrowed when no change is needed.
pub(crate) fn rewrite_response<'r>(
    resp: &'r str,
    view: &ResponseView<'_>,
    want: Option<&str>,
) -> Cow<'r, str> {
    if same_value(view.previous_response_id, want) {
        return Cow::Borrowed(resp);
    }
    let value = json_value(want);
    match view.previous_response_id {
        Some(raw) => {
            let start = offset_in(resp, raw.get());
            let end = start + raw.get().len();
            let mut s = String::with_capacity(resp.len() + value.len());
            s.push_str(&resp[..start]);
            s.push_str(&value);
            s.push_str(&resp[end..]);
            Cow::Owned(s)
        }
        None => {
            // Absent field: insert it right after the opening brace.
            let open = resp.find('{').map_or(0, |i| i + 1);
            let rest = &resp[open..];
            let sep = if rest.trim_start().starts_with('}') { "" } else { "," };
            Cow::Owned(format!("{}\"previous_response_id\":{value}{sep}{rest}", &resp[..open]))
        }
    }
}

/// Replaces the sub-slice `old` of `frame` with `new`.
pub(crate) fn splice(frame: &str, old: &str, new: &str) -> String {
    let start = offset_in(frame, old);
    let mut s = String::with_capacity(frame.len() - old.len() + new.len());
    s.push_str(&frame[..start]);
    s.push_str(new);
    s.push_str(&frame[start + old.len()..]);
    s
}
