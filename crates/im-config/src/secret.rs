//! A string that must not reach logs or error messages (DESIGN.md G7).

use std::fmt;

/// A password, key or key id. `Debug` shows only whether it is set, and there is no `Display`, so the
/// value leaves only through an explicit [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one call that hands it to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whether a secret is set is useful when debugging config and reveals nothing.
        if self.0.is_empty() { f.write_str("Secret(\"\")") } else { f.write_str("Secret(<redacted>)") }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(\"\")");
        assert_eq!(secret.expose(), "hunter2");
    }
}
