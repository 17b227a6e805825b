//! How each field type is read and written. Environment variables and YAML scalars go through the same
//! text parser, so `SERVER_GRPC_PORT=9094` and `grpc_port: "9094"` mean the same, and a `${VAR}` that
//! expands to `true` is a boolean. Only lists read YAML differently (a sequence, or a comma-separated
//! string as in the environment).

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use crate::duration;
use crate::schema::{
    AutoOffsetReset, DbTlsMode, FilterAction, KafkaSaslMechanism, KafkaSecurityProtocol, LogFormat, LogLevel, Ratio,
    TraceSampler,
};
use crate::secret::Secret;

pub(crate) trait ConfigValue: Sized {
    /// What the reference calls this type.
    fn kind() -> String;

    /// Reads an environment variable or a YAML scalar's text.
    fn parse_str(text: &str) -> Result<Self, String>;

    fn from_yaml(value: &Value) -> Result<Self, String> {
        Self::parse_str(&scalar_text(value)?)
    }

    /// The value as a YAML scalar, for the reference and the example config. Secrets are redacted.
    fn to_yaml(&self) -> String;
}

/// The text of a YAML scalar. A key with nothing after the colon (`host:`) is an empty string, the
/// same as `host: ""`.
pub(crate) fn scalar_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Null => Ok(String::new()),
        Value::Sequence(_) => Err("expected a single value, found a list".to_owned()),
        Value::Mapping(_) => Err("expected a single value, found a mapping".to_owned()),
        Value::Tagged(tagged) => Err(format!("YAML tags are not supported (found {})", tagged.tag)),
    }
}

fn yaml_string(text: &str) -> String {
    if text.is_empty() {
        return "\"\"".to_owned();
    }
    // serde_yaml quotes exactly when a plain scalar would read back as something else.
    serde_yaml::to_string(text).map(|yaml| yaml.trim_end().to_owned()).unwrap_or_else(|_| format!("{text:?}"))
}

macro_rules! integer_value {
    ($($ty:ty),+) => {$(
        impl ConfigValue for $ty {
            fn kind() -> String {
                "integer".to_owned()
            }

            fn parse_str(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| {
                    format!("invalid value {text:?}: expected a whole number from 0 to {}", <$ty>::MAX)
                })
            }

            fn to_yaml(&self) -> String {
                self.to_string()
            }
        }
    )+};
}

integer_value!(u16, u32, u64, usize);

impl ConfigValue for bool {
    fn kind() -> String {
        "bool".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            word if word.eq_ignore_ascii_case("true") || word == "1" => Ok(true),
            word if word.eq_ignore_ascii_case("false") || word == "0" => Ok(false),
            _ => Err(format!("invalid value {text:?}: expected true or false (or 1 or 0)")),
        }
    }

    fn to_yaml(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    fn kind() -> String {
        "string".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn to_yaml(&self) -> String {
        yaml_string(self)
    }
}

impl ConfigValue for Secret {
    fn kind() -> String {
        "secret".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        // Not trimmed: a secret is exactly what was given.
        Ok(Secret::new(text))
    }

    fn to_yaml(&self) -> String {
        if self.is_empty() { "\"\"".to_owned() } else { "\"<redacted>\"".to_owned() }
    }
}

impl ConfigValue for PathBuf {
    fn kind() -> String {
        "path".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn to_yaml(&self) -> String {
        yaml_string(&self.to_string_lossy())
    }
}

/// An optional path: empty means not set.
impl ConfigValue for Option<PathBuf> {
    fn kind() -> String {
        "path".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }

    fn to_yaml(&self) -> String {
        self.as_deref().map_or_else(|| yaml_string(""), |path| yaml_string(&path.to_string_lossy()))
    }
}

impl ConfigValue for Duration {
    fn kind() -> String {
        "duration".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        duration::parse(text)
    }

    fn to_yaml(&self) -> String {
        duration::format(*self)
    }
}

/// A list of addresses. Items are trimmed and empty items dropped, so `a, b,` is `[a, b]` and an
/// empty string is an empty list (the embedded backend).
impl ConfigValue for Vec<String> {
    fn kind() -> String {
        "list".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        Ok(text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
    }

    fn from_yaml(value: &Value) -> Result<Self, String> {
        let Value::Sequence(items) = value else {
            return Self::parse_str(&scalar_text(value)?);
        };
        let mut list = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let text = scalar_text(item).map_err(|error| format!("item {index}: {error}"))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("item {index} is empty"));
            }
            list.push(text.to_owned());
        }
        Ok(list)
    }

    fn to_yaml(&self) -> String {
        let items: Vec<String> = self.iter().map(|item| yaml_string(item)).collect();
        format!("[{}]", items.join(", "))
    }
}

macro_rules! enum_value {
    ($($ty:ty),+) => {$(
        impl ConfigValue for $ty {
            fn kind() -> String {
                <$ty>::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(" / ")
            }

            fn parse_str(text: &str) -> Result<Self, String> {
                text.parse()
            }

            fn to_yaml(&self) -> String {
                self.as_str().to_owned()
            }
        }
    )+};
}

enum_value!(
    AutoOffsetReset,
    FilterAction,
    LogLevel,
    LogFormat,
    TraceSampler,
    DbTlsMode,
    KafkaSecurityProtocol,
    KafkaSaslMechanism
);

impl ConfigValue for Ratio {
    fn kind() -> String {
        "number from 0 to 1".to_owned()
    }

    fn parse_str(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .ok()
            .and_then(Ratio::new)
            .ok_or_else(|| format!("invalid value {text:?}: expected a number from 0 to 1"))
    }

    fn to_yaml(&self) -> String {
        // `{:?}` keeps the decimal point (1.0, not 1): YAML reads it back as a float.
        format!("{:?}", self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_numbers_from_zero_to_one() {
        assert_eq!(Ratio::parse_str(" 0.01 ").map(Ratio::get), Ok(0.01));
        assert_eq!(Ratio::from_yaml(&Value::Number(1.into())).map(Ratio::get), Ok(1.0));
        for bad in ["1.5", "-0.1", "NaN", "inf", "", "one"] {
            assert!(Ratio::parse_str(bad).is_err(), "{bad}");
        }
        assert_eq!(Ratio::ONE.to_yaml(), "1.0");
    }

    #[test]
    fn booleans_accept_words_and_digits() {
        for (text, want) in [("true", true), ("TRUE", true), ("1", true), ("false", false), (" 0 ", false)] {
            assert_eq!(bool::parse_str(text), Ok(want), "{text}");
        }
        assert!(bool::parse_str("yes").unwrap_err().contains("\"yes\""));
        assert_eq!(bool::from_yaml(&Value::Bool(true)), Ok(true));
    }

    #[test]
    fn integers_are_range_checked_by_type() {
        assert_eq!(u16::parse_str("9094"), Ok(9094));
        assert!(u16::parse_str("70000").unwrap_err().contains("0 to 65535"));
        assert!(u16::parse_str("abc").is_err());
        assert!(u32::parse_str("-1").is_err());
        assert!(u32::from_yaml(&serde_yaml::from_str("1.5").unwrap()).is_err());
    }

    #[test]
    fn lists_come_from_sequences_or_commas() {
        let sequence: Value = serde_yaml::from_str("[a:1, ' b:2 ']").unwrap();
        assert_eq!(Vec::<String>::from_yaml(&sequence), Ok(vec!["a:1".to_owned(), "b:2".to_owned()]));
        assert_eq!(Vec::<String>::parse_str("a:1, b:2,"), Ok(vec!["a:1".to_owned(), "b:2".to_owned()]));
        assert_eq!(Vec::<String>::parse_str(""), Ok(vec![]));
        assert_eq!(Vec::<String>::from_yaml(&Value::Null), Ok(vec![]));
        let nested: Value = serde_yaml::from_str("[[a]]").unwrap();
        assert!(Vec::<String>::from_yaml(&nested).unwrap_err().contains("item 0"));
    }

    #[test]
    fn enums_name_the_accepted_words() {
        assert_eq!(FilterAction::parse_str("Block"), Ok(FilterAction::Block));
        let error = FilterAction::parse_str("nuke").unwrap_err();
        assert_eq!(error, "invalid value \"nuke\": expected one of block, replace, audit");
    }

    #[test]
    fn yaml_rendering_quotes_only_when_needed() {
        assert_eq!(String::new().to_yaml(), "\"\"");
        assert_eq!("127.0.0.1".to_owned().to_yaml(), "127.0.0.1");
        assert_eq!("true".to_owned().to_yaml(), "'true'");
        assert_eq!(Secret::new("x").to_yaml(), "\"<redacted>\"");
        assert_eq!(vec!["a:1".to_owned()].to_yaml(), "[a:1]");
    }
}
