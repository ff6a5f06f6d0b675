//! Tenant identity: a salted 128-bit hash of the credentials a request carries.
//!
//! The raw `Authorization` value never leaves the request handler; the store
//! only sees this hash, and logs only its first 8 hex digits.

use std::fmt;

use xxhash_rust::xxh3::Xxh3Default;

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
        let mut h = Xxh3Default::new();
        h.update(b"tether/tenant/v1");
        for part in [Some(salt), authorization, organization, project] {
            match part {
                None => h.update(&[0]),
                Some(bytes) => {
                    h.update(&[1]);
                    h.update(&(bytes.len() as u64).to_le_bytes());
                    h.update(bytes);
                }
            }
        }
        TenantId(h.digest128())
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
}
