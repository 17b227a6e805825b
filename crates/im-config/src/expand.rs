//! `${VAR}` and `${VAR:-default}` in config.yaml values, taken from the same environment map as the
//! overrides.
//!
//! Expansion runs on each string value after the YAML is parsed, not on the file's text. So a value can
//! never change the document's structure (a password holding `#`, `: ` or a quote would otherwise be cut
//! short or break the file), a `${…}` inside a comment is ignored, and every error names its key. The
//! cost: a reference cannot produce a list or mapping, except that lists also accept a comma-separated
//! string (`brokers: ${BROKERS}`), and inside a YAML flow sequence (`[${A}, ${B}]`) the items must be
//! quoted.
//!
//! - `${VAR}`: the variable's value; set-but-empty gives an empty string. **Unset is an error**, never a
//!   silent empty string: `password: ${DB_PASSWORD}` with no `DB_PASSWORD` is a deployment mistake.
//!   The error is only reported when the value is used, i.e. the key is not overridden by its own
//!   environment variable.
//! - `${VAR:-default}`: `default` when `VAR` is unset or empty (as in POSIX shells). `${VAR:-}` makes an
//!   unset variable explicitly empty.
//! - `$${` is a literal `${`. Any other `$` is kept as it is, so `pa$$word` needs no escaping.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_yaml::Value;

/// Expands the references in one string.
pub(crate) fn expand_str<'a>(text: &'a str, env: &HashMap<String, String>) -> Result<Cow<'a, str>, Vec<String>> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let from_dollar = &rest[dollar..];
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(reference) = from_dollar.strip_prefix("${") else {
            out.push('$');
            rest = &from_dollar[1..];
            continue;
        };
        let Some(close) = reference.find('}') else {
            errors.push("`${` without a closing `}` (write `$${` for a literal `${`)".to_owned());
            rest = "";
            break;
        };
        let body = &reference[..close];
        rest = &reference[close + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_variable_name(name) {
            errors.push(format!("`${{{body}}}` is not a variable reference: a name is letters, digits and `_`"));
            continue;
        }
        match (env.get(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(format!(
                "environment variable {name} is not set (used as `${{{name}}}`; write `${{{name}:-}}` to allow it to be empty)"
            )),
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(Cow::Owned(out)) } else { Err(errors) }
}

/// Expands every string in a key's value (a scalar, or the items of a list).
pub(crate) fn expand_value(value: &Value, env: &HashMap<String, String>) -> Result<Value, Vec<String>> {
    match value {
        Value::String(text) => expand_str(text, env).map(|expanded| Value::String(expanded.into_owned())),
        Value::Sequence(items) => {
            let mut expanded = Vec::with_capacity(items.len());
            let mut errors = Vec::new();
            for item in items {
                match expand_value(item, env) {
                    Ok(item) => expanded.push(item),
                    Err(item_errors) => errors.extend(item_errors),
                }
            }
            if errors.is_empty() { Ok(Value::Sequence(expanded)) } else { Err(errors) }
        }
        other => Ok(other.clone()),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn expand(text: &str, pairs: &[(&str, &str)]) -> Result<String, Vec<String>> {
        expand_str(text, &env(pairs)).map(Cow::into_owned)
    }

    #[test]
    fn substitutes_set_variables() {
        assert_eq!(expand("${A}", &[("A", "x")]), Ok("x".to_owned()));
        assert_eq!(expand("pre-${A}-${B_2}-post", &[("A", "x"), ("B_2", "y")]), Ok("pre-x-y-post".to_owned()));
        assert_eq!(expand("${A}", &[("A", "")]), Ok(String::new()));
        // The value is not expanded again.
        assert_eq!(expand("${A}", &[("A", "${B}")]), Ok("${B}".to_owned()));
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(expand("${A:-9094}", &[]), Ok("9094".to_owned()));
        assert_eq!(expand("${A:-9094}", &[("A", "")]), Ok("9094".to_owned()));
        assert_eq!(expand("${A:-9094}", &[("A", "1")]), Ok("1".to_owned()));
        assert_eq!(expand("${A:-}", &[]), Ok(String::new()));
        assert_eq!(expand("${A:-a:-b}", &[]), Ok("a:-b".to_owned()));
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let errors = expand("${DB_PASSWORD}", &[]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("DB_PASSWORD is not set"), "{errors:?}");
        assert_eq!(expand("${A}${B}", &[]).unwrap_err().len(), 2);
    }

    #[test]
    fn dollars_outside_references_are_kept() {
        assert_eq!(expand("pa$$word$", &[]), Ok("pa$$word$".to_owned()));
        assert_eq!(expand("$${A} ${A}", &[("A", "x")]), Ok("${A} x".to_owned()));
        assert_eq!(expand("cost: $5", &[]), Ok("cost: $5".to_owned()));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand("${A", &[("A", "x")]).unwrap_err()[0].contains("closing"));
        assert!(expand("${}", &[]).unwrap_err()[0].contains("not a variable reference"));
        assert!(expand("${ A }", &[("A", "x")]).unwrap_err()[0].contains("not a variable reference"));
        assert!(expand("${1A}", &[]).is_err());
    }

    #[test]
    fn expands_list_items() {
        let value: Value = serde_yaml::from_str("['${A}', b]").unwrap();
        let expanded = expand_value(&value, &env(&[("A", "a")])).unwrap();
        assert_eq!(expanded, serde_yaml::from_str::<Value>("[a, b]").unwrap());
        assert!(expand_value(&value, &env(&[])).is_err());
    }
}
