//! Typed DICOM UIDs. A path segment or a parsed attribute becomes a `StudyUid`, `SeriesUid` or
//! `SopInstanceUid` only through [`Uid::parse`], so every file path and index key built from one
//! is safe: 1 to 64 characters, digits and dots only.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A checked UID: 1–64 characters of digits and dots, no empty component at either end.
///
/// Real files sometimes carry leading zeros in a component; those are accepted (what real files
/// contain matters more than the full PS3.5 9.1 grammar). Trailing NUL and space padding is
/// stripped before checking.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Uid(String);

/// Why a string is not a UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is longer than 64 characters")]
    TooLong,
    #[error("UID may hold only digits and dots")]
    BadCharacter,
    #[error("UID has an empty component")]
    EmptyComponent,
}

impl Uid {
    pub fn parse(raw: &str) -> Result<Self, UidError> {
        let s = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if s.is_empty() {
            return Err(UidError::Empty);
        }
        if s.len() > 64 {
            return Err(UidError::TooLong);
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UidError::BadCharacter);
        }
        if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
            return Err(UidError::EmptyComponent);
        }
        Ok(Uid(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uid::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid UID {s:?}: {e}")))
    }
}

macro_rules! uid_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uid);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, UidError> {
                Uid::parse(raw).map($name)
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

uid_newtype!(
    /// Study Instance UID (0020,000D).
    StudyUid
);
uid_newtype!(
    /// Series Instance UID (0020,000E).
    SeriesUid
);
uid_newtype!(
    /// SOP Instance UID (0008,0018).
    SopInstanceUid
);
uid_newtype!(
    /// SOP Class UID (0008,0016).
    SopClassUid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_uids_and_strips_padding() {
        assert_eq!(
            Uid::parse("1.2.840.10008.1.2\0").unwrap().as_str(),
            "1.2.840.10008.1.2"
        );
        assert_eq!(Uid::parse("1.2.3 ").unwrap().as_str(), "1.2.3");
        assert!(Uid::parse(&"1".repeat(64)).is_ok());
    }

    #[test]
    fn refuses_what_could_escape_a_path() {
        assert_eq!(Uid::parse(""), Err(UidError::Empty));
        assert_eq!(Uid::parse("\0"), Err(UidError::Empty));
        assert_eq!(Uid::parse(&"1".repeat(65)), Err(UidError::TooLong));
        assert_eq!(Uid::parse("../etc"), Err(UidError::BadCharacter));
        assert_eq!(Uid::parse("1.2/3"), Err(UidError::BadCharacter));
        assert_eq!(Uid::parse("1..2"), Err(UidError::EmptyComponent));
        assert_eq!(Uid::parse(".1"), Err(UidError::EmptyComponent));
        assert_eq!(Uid::parse("1.2."), Err(UidError::EmptyComponent));
    }

    #[test]
    fn deserialize_refuses_bad_uid() {
        let ok: StudyUid = serde_json::from_str("\"1.2.3\"").unwrap();
        assert_eq!(ok.as_str(), "1.2.3");
        assert!(serde_json::from_str::<StudyUid>("\"1.2.x\"").is_err());
    }
}
