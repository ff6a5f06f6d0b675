//! Tenant identity: a salted 128-bit hash of the credentials a request carries.
//!
//! The raw `Authorization` value never leaves the request handler; the store
//! only sees this hash, and logs only its first 8 hex digits.

use std::fmt;

use xxhash_rust::xxh3::xxh3_128;

/// A tenant: salted XXH3-128 of `Authorization`, `OpenAI-Organization` and
/// `OpenAI-Project`. Two requests are the same tenant iff all three match.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u128);

impl TenantId {
    /// Derives the tenant from the salt and the three credential headers.
    /// Each part is tagged and length-prefixed, so absent and empty differ and
    /// bytes can never move from one header to another.
    pub fn derive(
        salt: &[u8],
        authorization: Option<&[u8]>,
        organization: Option<&[u8]>,
        project: Option<&[u8]>,
    ) -> TenantId {
        const TAG: &[u8] = b"tether/tenant/v1";
        let parts = [Some(salt), authorization, organization, project];
        // Hashed in one call (XXH3 gives the same digest as a streaming
        // hasher fed the same bytes, without its 0.5 KB of state to set up).
        let mut b =
            Vec::with_capacity(TAG.len() + parts.iter().map(|p| 9 + p.map_or(0, <[u8]>::len)).sum::<usize>());
        b.extend_from_slice(TAG);
        for part in parts {
            match part {
                None => b.push(0),
                Some(bytes) => {
                    b.push(1);
                    b.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    b.extend_from_slice(bytes);
                }
            }
        }
        TenantId(xxh3_128(&b))
    }

    /// The first 8 hex digits, for logs and `/debug/sessions`.
    pub fn short(&self) -> String {
        format!("{:08x}", (self.0 >> 96) as u32)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.short())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_unambiguous() {
        let a = TenantId::derive(b"s", Some(b"Bearer k"), None, None);
        assert_eq!(a, TenantId::derive(b"s", Some(b"Bearer k"), None, None));
        assert_ne!(a, TenantId::derive(b"t", Some(b"Bearer k"), None, None));
        assert_ne!(a, TenantId::derive(b"s", Some(b"Bearer k"), Some(b""), None));
        assert_ne!(a, TenantId::derive(b"s", None, Some(b"Bearer k"), None));
        let x = TenantId::derive(b"s", Some(b"ab"), Some(b"c"), None);
        assert_ne!(x, TenantId::derive(b"s", Some(b"a"), Some(b"bc"), None));
        assert_eq!(a.short().len(), 8);
    }

    #[test]
    fn same_digest_as_a_streaming_hasher_fed_the_parts() {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(b"tether/tenant/v1");
        h.update(&[1]);
        h.update(&4u64.to_le_bytes());
        h.update(b"salt");
        h.update(&[1]);
        h.update(&8u64.to_le_bytes());
        h.update(b"Bearer k");
        h.update(&[0]);
        h.update(&[1]);
        h.update(&0u64.to_le_bytes());
        let want = TenantId(h.digest128());
        assert_eq!(TenantId::derive(b"salt", Some(b"Bearer k"), None, Some(b"")), want);
    }
}
