//! The byte encoding of a canonical value, written into a buffer that is
//! hashed once (XXH3 gives the same digest as feeding the same bytes to a
//! streaming hasher piece by piece, which is what `tree` does).
//!
//! Every value starts with a one-byte type tag; strings, arrays and objects
//! carry their length (u64, little endian), so two different canonical trees
//! never produce the same bytes. Strings over [`LONG_STR`] bytes are encoded
//! as their own XXH3-128 digest under their own tag, so an escaped one is
//! never kept whole.

use xxhash_rust::xxh3::xxh3_128;

pub(crate) const TAG_NULL: u8 = b'n';
pub(crate) const TAG_TRUE: u8 = b't';
pub(crate) const TAG_FALSE: u8 = b'f';
pub(crate) const TAG_U64: u8 = b'u';
pub(crate) const TAG_I64: u8 = b'i';
pub(crate) const TAG_F64: u8 = b'd';
pub(crate) const TAG_STR: u8 = b's';
pub(crate) const TAG_LONG_STR: u8 = b'S';
pub(crate) const TAG_ARR: u8 = b'[';
pub(crate) const TAG_OBJ: u8 = b'{';

/// Strings longer than this are encoded as their XXH3-128 digest. The choice
/// depends only on the length of the unescaped string, so a string always
/// encodes the same way.
pub(crate) const LONG_STR: usize = 256;

/// A tag followed by a length.
pub(crate) fn put_len(out: &mut Vec<u8>, tag: u8, len: usize) {
    let mut b = [tag; 9];
    b[1..].copy_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&b);
}

/// An (unescaped) string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() > LONG_STR {
        put_digest(out, xxh3_128(s));
    } else {
        put_len(out, TAG_STR, s.len());
        out.extend_from_slice(s);
    }
}

/// A long string, by its digest.
pub(crate) fn put_digest(out: &mut Vec<u8>, d: u128) {
    let mut b = [TAG_LONG_STR; 17];
    b[1..].copy_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&b);
}

/// A tag followed by eight bytes (the numbers).
pub(crate) fn put_word(out: &mut Vec<u8>, tag: u8, word: [u8; 8]) {
    let mut b = [tag; 9];
    b[1..].copy_from_slice(&word);
    out.extend_from_slice(&b);
}
