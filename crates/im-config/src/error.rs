//! The one error of this crate: every problem found in one load, each naming its key.

use std::fmt;

/// A configuration that cannot be used. `Display` prints one line per problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty(), "a ConfigError without problems");
        Self { problems }
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong with the configuration. Messages never contain a secret's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted config.yaml key (`server.grpc_port`); for a problem with the file as a whole (cannot be
    /// read, not YAML), the file's path.
    pub key: String,
    /// The environment variable the offending value came from, when it came from the environment.
    pub env: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.env {
            // The variable first: it is what the operator typed.
            Some(var) => write!(f, "{var} ({}): {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}
