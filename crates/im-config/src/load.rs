//! Defaults < config.yaml < environment, collecting every problem instead of stopping at the first.
//!
//! serde's derive stops at the first error, so the file is parsed into a `serde_yaml::Value` and walked
//! against the key table: unknown keys are reported with their dotted path, and every known key is parsed
//! on its own. A key whose environment variable is set takes that value, and its file value (including
//! any `${VAR}` in it) is not looked at. Validation runs last, on the merged result.

use std::collections::HashMap;

use serde_yaml::{Mapping, Value};

use crate::error::{ConfigError, Problem};
use crate::expand::expand_value;
use crate::keys::{self, KEYS};
use crate::schema::Config;
use crate::validate::validate;

/// A config file's text and the name its problems are reported under.
pub(crate) struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

pub(crate) fn build(
    file: Option<Source<'_>>,
    env: &HashMap<String, String>,
    mut problems: Vec<Problem>,
) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let document = file.and_then(|file| match serde_yaml::from_str::<Value>(file.text) {
        Ok(document) => Some((file.name, document)),
        Err(error) => {
            problems.push(file_problem(file.name, format!("not valid YAML: {error}")));
            None
        }
    });
    let mut leaves: HashMap<&'static str, &Value> = HashMap::new();
    if let Some((name, document)) = &document {
        match document {
            Value::Mapping(mapping) => walk(name, "", mapping, &mut leaves, &mut problems),
            // An empty file configures nothing.
            Value::Null => {}
            other => {
                problems.push(file_problem(name, format!("expected a mapping of sections, found {}", kind(other))))
            }
        }
    }

    let mut from_env: HashMap<&'static str, &'static str> = HashMap::new();
    for key in KEYS {
        if let Some(text) = env.get(key.env) {
            from_env.insert(key.path, key.env);
            if let Err(message) = (key.from_env)(&mut config, text) {
                problems.push(Problem { key: key.path.to_owned(), env: Some(key.env), message });
            }
        } else if let Some(value) = leaves.get(key.path) {
            let parsed =
                expand_value(value, env).and_then(|value| (key.from_yaml)(&mut config, &value).map_err(|e| vec![e]));
            if let Err(messages) = parsed {
                problems.extend(messages.into_iter().map(|message| Problem {
                    key: key.path.to_owned(),
                    env: None,
                    message,
                }));
            }
        }
    }

    for (path, message) in validate(&config) {
        // A value that failed to parse kept its default; judging that default would only add noise.
        if problems.iter().any(|problem| problem.key == path) {
            continue;
        }
        problems.push(Problem { key: path.to_owned(), env: from_env.get(path).copied(), message });
    }

    if problems.is_empty() { Ok(config) } else { Err(ConfigError::new(problems)) }
}

pub(crate) fn file_problem(name: &str, message: String) -> Problem {
    Problem { key: name.to_owned(), env: None, message }
}

/// Records the value of every known key under `prefix` and reports every unknown one.
fn walk<'v>(
    file: &str,
    prefix: &str,
    mapping: &'v Mapping,
    leaves: &mut HashMap<&'static str, &'v Value>,
    problems: &mut Vec<Problem>,
) {
    for (name, value) in mapping {
        let Some(name) = name.as_str() else {
            let at = if prefix.is_empty() { file } else { prefix };
            problems.push(file_problem(at, format!("keys must be strings, found {}", kind(name))));
            continue;
        };
        let path = if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
        if let Some(key) = keys::by_path(&path) {
            leaves.insert(key.path, value);
        } else if keys::is_section(&path) {
            match value {
                Value::Mapping(inner) => walk(file, &path, inner, leaves, problems),
                // `redis:` with nothing under it.
                Value::Null => {}
                other => problems.push(Problem {
                    key: path,
                    env: None,
                    message: format!("expected a mapping of keys, found {}", kind(other)),
                }),
            }
        } else {
            let message = format!("unknown key in {file}{}", suggestion(prefix, name));
            problems.push(Problem { key: path, env: None, message });
        }
    }
}

/// A hint for an unknown key: the guide's env-style names written as YAML keys, a key put in the wrong
/// section, or a misspelling.
fn suggestion(prefix: &str, name: &str) -> String {
    if let Some(key) = KEYS.iter().find(|key| key.env.eq_ignore_ascii_case(name)) {
        return format!("; {} is an environment variable, its config.yaml key is {}", key.env, key.path);
    }
    let closest = keys::children(prefix)
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    match closest {
        Some((_, candidate)) if prefix.is_empty() => return format!("; did you mean {candidate}?"),
        Some((_, candidate)) => return format!("; did you mean {prefix}.{candidate}?"),
        None => {}
    }
    match KEYS.iter().find(|key| key.path.rsplit('.').next() == Some(name)) {
        Some(key) => format!("; did you mean {}?", key.path),
        None => String::new(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_changes() {
        assert_eq!(edit_distance("grcp_port", "grpc_port"), 2);
        assert_eq!(edit_distance("grpc_prt", "grpc_port"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("server", "grpc_prot"), "; did you mean server.grpc_port?");
        assert_eq!(
            suggestion("", "DB_HOST"),
            "; DB_HOST is an environment variable, its config.yaml key is database.host"
        );
        assert_eq!(suggestion("", "grpc_port"), "; did you mean server.grpc_port?");
        assert_eq!(suggestion("", "databse"), "; did you mean database?");
        assert_eq!(suggestion("server", "colour"), "");
    }
}
