//! The open-file limit: every connection of a run is a socket. Raised up to
//! the hard limit when the run needs more; a run the hard limit cannot hold
//! fails before it creates anything, saying what to change.

use anyhow::bail;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors besides the WebSockets: stdio, gRPC channels, the runtime.
pub const SPARE: u64 = 64;

/// What to do about the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Enough,
    /// Raise the soft limit to this.
    Raise(u64),
    /// Even the hard limit is too low.
    TooLow {
        hard: u64,
    },
}

/// Decides for `needed` descriptors under a (soft, hard) limit; `None` is unlimited.
pub fn decide(needed: u64, soft: Option<u64>, hard: Option<u64>) -> Action {
    match (soft, hard) {
        (None, _) => Action::Enough,
        (Some(soft), _) if soft >= needed => Action::Enough,
        (_, Some(hard)) if hard < needed => Action::TooLow { hard },
        // Up to the hard limit: the process may open more than the sockets counted here.
        (_, Some(hard)) => Action::Raise(hard),
        (_, None) => Action::Raise(needed),
    }
}

/// Makes room for `connections` open connections at once.
pub fn ensure_room_for(connections: u64) -> anyhow::Result<()> {
    let needed = connections + SPARE;
    let limit = getrlimit(Resource::Nofile);
    match decide(needed, limit.current, limit.maximum) {
        Action::Enough => Ok(()),
        Action::Raise(to) => {
            if let Err(e) = setrlimit(Resource::Nofile, Rlimit { current: Some(to), maximum: limit.maximum }) {
                bail!(
                    "{connections} connections need about {needed} open files, the limit is {} and raising it \
                     failed ({e}): raise it with `ulimit -n {needed}`",
                    limit.current.unwrap_or(0)
                );
            }
            eprintln!("raised the open file limit from {} to {to}", limit.current.unwrap_or(0));
            Ok(())
        }
        Action::TooLow { hard } => bail!(
            "{connections} connections need about {needed} open files, but the hard limit is {hard}: raise it \
             (`ulimit -Hn`, as root, or LimitNOFILE / limits.conf) or run fewer connections"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_to_the_hard_limit_only_when_needed() {
        assert_eq!(decide(1_000, Some(1_024), Some(4_096)), Action::Enough);
        assert_eq!(decide(2_000, Some(1_024), Some(4_096)), Action::Raise(4_096));
        assert_eq!(decide(2_000, Some(1_024), None), Action::Raise(2_000));
        assert_eq!(decide(5_000, Some(1_024), Some(4_096)), Action::TooLow { hard: 4_096 });
        assert_eq!(decide(5_000, None, None), Action::Enough);
    }

    #[test]
    fn a_small_run_fits_the_current_limit() {
        ensure_room_for(1).unwrap();
    }
}
