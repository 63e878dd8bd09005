//! What every section file shares: the [`Section`] trait and the [`Secret`] value type.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret from the config or the environment. It can be read with [`Secret::expose`] but
/// never printed: `Debug` and `Serialize` (so `check-config`) show `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A `[section]` of the configuration: checks what its types cannot express.
pub trait Section {
    /// `Err((key, reason))` for the first value that is out of bounds.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}
