//! A user's standing: whether an admin disabled it, and which of its tokens
//! still count. Tokens are signed and carry no state, so stopping a user is
//! a fact every process checks beside the signature: a disabled user is
//! refused whatever its token, and a token issued before the user's last
//! revocation (its generation is below the user's) is refused while newer
//! ones are accepted.

use crate::{ErrorCode, ErrorReason, ImError};

/// What every node and gateway needs to know of a user to accept its token.
/// The default (enabled, generation 0) is every user nobody has stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserStatus {
    pub disabled: bool,
    /// Raised by one at each revocation; a token carries the generation it
    /// was issued at.
    pub token_generation: u64,
}

/// An admin's change to a user's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    Disable,
    Enable,
    /// Every token issued so far stops counting; tokens issued afterwards
    /// work (the user is not disabled by this).
    RevokeTokens,
}

impl UserStatus {
    /// The status after `change`.
    pub fn after(self, change: StatusChange) -> Self {
        match change {
            StatusChange::Disable => Self { disabled: true, ..self },
            StatusChange::Enable => Self { disabled: false, ..self },
            StatusChange::RevokeTokens => Self { token_generation: self.token_generation.saturating_add(1), ..self },
        }
    }

    /// Whether nothing was ever changed: such users need no record anywhere.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Accepts a token issued at `token_generation`, or says why not.
    pub fn admits(&self, token_generation: u64) -> Result<(), ImError> {
        if self.disabled {
            return Err(ImError::new(ErrorCode::PermissionDenied, "this user is disabled")
                .with_reason(ErrorReason::UserDisabled));
        }
        if token_generation < self.token_generation {
            return Err(ImError::unauthenticated("this token was revoked; ask for a new one")
                .with_reason(ErrorReason::TokenRevoked));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_user_admits_its_tokens() {
        assert!(UserStatus::default().admits(0).is_ok());
        assert!(UserStatus::default().is_default());
    }

    #[test]
    fn a_disabled_user_admits_no_token_until_enabled() {
        let disabled = UserStatus::default().after(StatusChange::Disable);
        let refused = disabled.admits(7).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::PermissionDenied, Some(ErrorReason::UserDisabled)));
        let enabled = disabled.after(StatusChange::Enable);
        assert!(enabled.admits(0).is_ok());
        assert!(enabled.is_default());
    }

    #[test]
    fn a_revocation_refuses_older_tokens_only_and_keeps_the_user_enabled() {
        let revoked = UserStatus::default().after(StatusChange::RevokeTokens).after(StatusChange::RevokeTokens);
        assert_eq!(revoked.token_generation, 2);
        let refused = revoked.admits(1).unwrap_err();
        assert_eq!((refused.code, refused.reason), (ErrorCode::Unauthenticated, Some(ErrorReason::TokenRevoked)));
        assert!(revoked.admits(2).is_ok());
        assert!(!revoked.disabled);
    }

    #[test]
    fn disabling_keeps_the_generation() {
        let status = UserStatus { disabled: false, token_generation: 3 };
        assert_eq!(status.after(StatusChange::Disable).token_generation, 3);
    }
}
