//! Newtypes for the names every layer passes around.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job identifier: any non-empty string; generated ids are UUIDv4 strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Wraps an id as given (the caller checks emptiness where it matters).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id, returning the string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for JobId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

macro_rules! prefixed_name {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every full name starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Normalises a bare or full name to the full key: the prefix is
            /// prepended unless the name already starts with it. Surrounding
            /// white space is trimmed.
            pub fn new(name: &str) -> Self {
                let name = name.trim();
                if name.starts_with(Self::PREFIX) {
                    Self(name.to_owned())
                } else {
                    Self(format!("{}{}", Self::PREFIX, name))
                }
            }

            /// Like [`Self::new`] but rejects a name that is empty after trimming.
            pub fn parse(name: &str) -> Option<Self> {
                if name.trim().is_empty() { None } else { Some(Self::new(name)) }
            }

            /// The full key (`prefix` + bare name).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name without its prefix.
            pub fn bare(&self) -> &str {
                &self.0[Self::PREFIX.len()..]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_name!(
    /// A queue, always held as its full key (`default` becomes `rrq:queue:default`).
    QueueName,
    "rrq:queue:"
);
prefixed_name!(
    /// A dead letter queue, always held as its full key (`rrq:dlq:default`).
    DlqName,
    "rrq:dlq:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_normalised_once() {
        assert_eq!(QueueName::new("default").as_str(), "rrq:queue:default");
        assert_eq!(QueueName::new("rrq:queue:mail").as_str(), "rrq:queue:mail");
        assert_eq!(QueueName::new(" low ").bare(), "low");
        assert!(QueueName::parse("  ").is_none());
        assert_eq!(DlqName::new("default").as_str(), "rrq:dlq:default");
    }
}
