//! The GUID shape (`8-4-4-4-12` hexadecimal digits) and [`Guid`], a string proven to have it.
//!
//! Entra names tenants, objects and applications by GUID and writes them in lowercase in every
//! token; configuration and policies may spell them in any case. This module owns the one
//! definition of the shape, so settings, token checks, policy comparison and the dev issuer
//! cannot disagree on what a GUID is. Braces (`{…}`), URNs and the 32-digit form without
//! hyphens are refused: no Entra claim uses them.

use std::fmt;

/// Byte offsets of the four hyphens.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];
/// Length of a GUID in `8-4-4-4-12` form.
const LEN: usize = 36;

/// A GUID in canonical (lowercase) form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(String);

/// Why a string is not a [`Guid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuidError {
    /// Not `8-4-4-4-12` hexadecimal digits.
    #[error("not a GUID (8-4-4-4-12 hexadecimal digits)")]
    Shape,
    /// A GUID, but with uppercase digits where only the canonical form is accepted.
    #[error("not a lowercase GUID")]
    NotLowercase,
}

impl Guid {
    /// Parses a GUID written in any case; it is kept in lowercase.
    pub fn parse(text: &str) -> Result<Self, GuidError> {
        if is_guid(text) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(GuidError::Shape)
        }
    }

    /// Parses a GUID that must already be lowercase: for values Entra guarantees to write so
    /// (`tid` and the tenant in `iss`), where another case means the value was not written by
    /// Entra.
    pub fn parse_canonical(text: &str) -> Result<Self, GuidError> {
        if is_canonical(text) {
            Ok(Self(text.to_owned()))
        } else if is_guid(text) {
            Err(GuidError::NotLowercase)
        } else {
            Err(GuidError::Shape)
        }
    }

    /// The GUID, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Guid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Guid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// True for `8-4-4-4-12` hexadecimal digits in any case. Allocates nothing, for the request
/// path.
pub fn is_guid(text: &str) -> bool {
    has_shape(text, |byte| byte.is_ascii_hexdigit())
}

/// True for a GUID in canonical form: `8-4-4-4-12` lowercase hexadecimal digits, the form Entra
/// writes in `tid`.
pub fn is_canonical(text: &str) -> bool {
    has_shape(text, |byte| {
        byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
    })
}

fn has_shape(text: &str, digit: impl Fn(u8) -> bool) -> bool {
    text.len() == LEN
        && text.bytes().enumerate().all(|(index, byte)| {
            if HYPHENS.contains(&index) {
                byte == b'-'
            } else {
                digit(byte)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43";

    #[test]
    fn parse_accepts_any_case_and_keeps_lowercase() {
        let upper = Guid::parse(&GUID.to_uppercase()).unwrap();
        assert_eq!(upper.as_str(), GUID);
        assert_eq!(upper.to_string(), GUID);
        assert_eq!(upper, Guid::parse(GUID).unwrap());
        assert!(&upper == GUID);
    }

    #[test]
    fn parse_canonical_refuses_uppercase_and_says_so() {
        assert_eq!(Guid::parse_canonical(GUID).unwrap().as_str(), GUID);
        assert_eq!(
            Guid::parse_canonical("C3D9E1A7-2b4f-4c8e-9a61-0f5d7b2e8c43"),
            Err(GuidError::NotLowercase)
        );
        assert_eq!(Guid::parse_canonical("nope"), Err(GuidError::Shape));
        assert!(is_canonical(GUID));
        assert!(!is_canonical(&GUID.to_uppercase()));
    }

    #[test]
    fn the_shape_is_exact() {
        assert!(is_guid(GUID));
        assert!(is_guid(&GUID.to_uppercase()));
        for bad in [
            "",
            // 35 and 37 characters.
            "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c4",
            "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c433",
            // Hyphens in the wrong places, or missing.
            "c3d9e1a72b4f-4c8e-9a61-0f5d7b2e8c43-",
            "c3d9e1a7-2b4f4-c8e-9a61-0f5d7b2e8c43",
            "c3d9e1a72b4f4c8e9a610f5d7b2e8c43",
            "c3d9e1a7_2b4f_4c8e_9a61_0f5d7b2e8c43",
            // A non-hex digit.
            "g3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43",
            // Braces, a URN, surrounding space.
            "{c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43}",
            "urn:uuid:c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43",
            " c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43",
            // Multi-byte characters of the right byte length.
            "c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8cé",
        ] {
            assert!(!is_guid(bad), "{bad}");
            assert!(!is_canonical(bad), "{bad}");
            assert_eq!(Guid::parse(bad), Err(GuidError::Shape), "{bad}");
        }
    }
}
