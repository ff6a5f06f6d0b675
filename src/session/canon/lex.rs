//! Strings and numbers of a raw item, read exactly as serde_json reads them
//! (or declined), for `scan`.

use std::borrow::Cow;

use memchr::memchr2;
use xxhash_rust::xxh3::xxh3_128;

use super::encode::{LONG_STR, TAG_F64, TAG_I64, TAG_STR, TAG_U64, put_digest, put_len, put_str, put_word};
use super::tree::Node;

/// The scan leaves the item to the tree path.
pub(super) struct Declined;

/// A step of the scan.
pub(super) type Scan<T> = Result<T, Declined>;

/// The string value at `*pos` (its opening quote), encoded without being
/// copied unless it has escapes.
pub(super) fn encode_string(b: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Scan<()> {
    let start = *pos + 1;
    let rest = b.get(start..).ok_or(Declined)?;
    let i = memchr2(b'"', b'\\', rest).ok_or(Declined)?;
    if rest[i] == b'"' {
        put_str(out, &rest[..i]);
        *pos = start + i + 1;
        return Ok(());
    }
    let header = out.len();
    put_len(out, TAG_STR, 0);
    let body = out.len();
    out.extend_from_slice(&rest[..i]);
    *pos = start + i;
    unescape(b, pos, out)?;
    let len = out.len() - body;
    if len > LONG_STR {
        let digest = xxh3_128(&out[body..]);
        out.truncate(header);
        put_digest(out, digest);
    } else {
        out[header + 1..body].copy_from_slice(&(len as u64).to_le_bytes());
    }
    Ok(())
}

/// The string at `*pos` (a key, a `type` or a `role`), unescaped.
pub(super) fn read_string<'a>(text: &'a str, pos: &mut usize) -> Scan<Cow<'a, str>> {
    let b = text.as_bytes();
    if b.get(*pos) != Some(&b'"') {
        return Err(Declined);
    }
    let start = *pos + 1;
    let rest = b.get(start..).ok_or(Declined)?;
    let i = memchr2(b'"', b'\\', rest).ok_or(Declined)?;
    if rest[i] == b'"' {
        *pos = start + i + 1;
        return text.get(start..start + i).map(Cow::Borrowed).ok_or(Declined);
    }
    let mut v = rest[..i].to_vec();
    *pos = start + i;
    unescape(b, pos, &mut v)?;
    String::from_utf8(v).map(Cow::Owned).map_err(|_| Declined)
}

/// A number: plain non-negative integers here, any other form through
/// serde_json's own number parser, so every form means what it means to
/// the tree path (`1` is not `1.0`, `-0` is a float, `1e400` is an error).
pub(super) fn encode_number(text: &str, pos: &mut usize, out: &mut Vec<u8>) -> Scan<()> {
    let b = text.as_bytes();
    let start = *pos;
    let len = b[start..]
        .iter()
        .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(b.len() - start);
    let token = &b[start..start + len];
    *pos = start + len;
    // Up to 19 digits always fit a u64.
    if len <= 19 && token.iter().all(u8::is_ascii_digit) && (len == 1 || token[0] != b'0') {
        let v = token.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        put_word(out, TAG_U64, v.to_le_bytes());
        return Ok(());
    }
    let token = text.get(start..start + len).ok_or(Declined)?;
    match serde_json::from_str::<Node<'_>>(token) {
        Ok(Node::U64(v)) => put_word(out, TAG_U64, v.to_le_bytes()),
        Ok(Node::I64(v)) => put_word(out, TAG_I64, v.to_le_bytes()),
        Ok(Node::F64(v)) => put_word(out, TAG_F64, v.to_bits().to_le_bytes()),
        _ => return Err(Declined),
    }
    Ok(())
}

/// Unescapes a string's text from `*pos` (inside the quotes) through its
/// closing quote into `dst`, as serde_json does; declines lone surrogates and
/// unknown escapes, which serde_json rejects.
fn unescape(b: &[u8], pos: &mut usize, dst: &mut Vec<u8>) -> Scan<()> {
    loop {
        let rest = b.get(*pos..).ok_or(Declined)?;
        let i = next_special(rest).ok_or(Declined)?;
        dst.extend_from_slice(&rest[..i]);
        *pos += i + 1;
        if rest[i] == b'"' {
            return Ok(());
        }
        let escape = *b.get(*pos).ok_or(Declined)?;
        *pos += 1;
        let byte = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let c = unicode_escape(b, pos)?;
                dst.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err(Declined),
        };
        dst.push(byte);
    }
}

/// The position of the first `"` or `\\` in `s`. Within an escaped string
/// the next one is usually a few bytes away, where eight bytes at a time
/// beat `memchr2`'s setup.
pub(super) fn next_special(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let has = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut i = 0;
    while let Some(word) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        let found = has(w ^ (ONES * u64::from(b'"'))) | has(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
        if i == 64 {
            // A long plain stretch: hand the rest to memchr2.
            return memchr2(b'"', b'\\', &s[i..]).map(|j| i + j);
        }
    }
    s[i..].iter().position(|c| matches!(c, b'"' | b'\\')).map(|j| i + j)
}

/// The character of a `\u` escape whose four hex digits start at `*pos`
/// (and of the low surrogate escape that must follow a high one).
fn unicode_escape(b: &[u8], pos: &mut usize) -> Scan<char> {
    let high = hex4(b, pos)?;
    let code = match high {
        0xD800..=0xDBFF => {
            if b.get(*pos..*pos + 2) != Some(b"\\u") {
                return Err(Declined);
            }
            *pos += 2;
            let low = hex4(b, pos)?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return Err(Declined);
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        }
        code => code,
    };
    char::from_u32(code).ok_or(Declined)
}

fn hex4(b: &[u8], pos: &mut usize) -> Scan<u32> {
    let digits = b.get(*pos..*pos + 4).ok_or(Declined)?;
    let mut v = 0;
    for d in digits {
        v = v * 16 + char::from(*d).to_digit(16).ok_or(Declined)?;
    }
    *pos += 4;
    Ok(v)
}
