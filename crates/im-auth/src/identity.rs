//! Who a verified token acts as: a user, an admin (an operator's tool), or a
//! service of this deployment calling one API of another.
//!
//! A service credential names the one API it may call ([`Scope`]) and is
//! neither admin nor a user: a node that can push to gateways cannot manage
//! users, and an operator's admin token cannot push messages "from" anyone.

use std::fmt;

use im_core::{ImError, UserId};

/// The API one service may call on another: one per service-to-service API.
/// Closed on purpose: a server accepts exactly the scope of what it offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The gateway's push API (`im.gateway.v1.PushService`): a node delivers
    /// messages and events to the devices connected there.
    Push,
    /// im-user's group directory (`im.user.v1.GroupDirectory`): a node acts
    /// for a user it authenticated, naming that user and the seq boundary.
    Groups,
    /// im-user's user lookups (`im.user.v1.UserService.GetUser`): a node
    /// checks that a recipient exists and reads its status.
    Users,
    /// The IM service's relay (`im.v1.RelayService`): a gateway forwards
    /// the sends of the users it authenticated, naming each one.
    Relay,
}

impl Scope {
    /// Every scope, for tests and help texts.
    pub const ALL: [Scope; 4] = [Scope::Push, Scope::Groups, Scope::Users, Scope::Relay];

    /// The value of the token's `svc` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Push => "push",
            Scope::Groups => "groups",
            Scope::Users => "users",
            Scope::Relay => "relay",
        }
    }

    /// The scope a `svc` claim names; `None` for one this version does not
    /// know (a newer peer's), which is refused rather than guessed.
    pub fn parse(claim: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == claim)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of credential a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A user's token: the only kind that acts as a user, and the only kind
    /// the users' standing (disabled, token generation) applies to.
    User,
    /// An operator's credential (`admin.token`, imctl): user management and
    /// the admin APIs.
    Admin,
    /// A service calling the API of its scope, and nothing else.
    Service(Scope),
}

/// Who a verified token acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The acting user; [`crate::ADMIN_SUBJECT`] for admin and service
    /// credentials, which are no user: check [`Identity::is_user`] first.
    pub user: UserId,
    pub name: String,
    pub role: Role,
    /// The user's token generation when the token was issued (0 for admin
    /// and service credentials).
    pub token_generation: u64,
}

impl Identity {
    /// Whether this token acts as a user (neither admin nor a service).
    pub fn is_user(&self) -> bool {
        self.role == Role::User
    }

    /// Whether this is an admin credential.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The scope of a service credential; `None` for a user or an admin.
    pub fn service_scope(&self) -> Option<Scope> {
        match self.role {
            Role::Service(scope) => Some(scope),
            Role::User | Role::Admin => None,
        }
    }

    /// Accepts only a service credential of `scope`; anything else is
    /// `PERMISSION_DENIED`, naming the scope needed and what was presented.
    pub fn require_service(&self, scope: Scope) -> Result<(), ImError> {
        if self.service_scope() == Some(scope) {
            Ok(())
        } else {
            Err(ImError::denied(format!(
                "this call needs a service credential of scope `{scope}`, not {}",
                self.described()
            )))
        }
    }

    /// What this credential is, for refusals.
    pub fn described(&self) -> String {
        match self.role {
            Role::User => "a user's token".to_owned(),
            Role::Admin => "an admin credential".to_owned(),
            Role::Service(scope) => format!("a service credential of scope `{scope}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::ErrorCode;

    fn with_role(role: Role) -> Identity {
        Identity { user: UserId(0), name: String::new(), role, token_generation: 0 }
    }

    #[test]
    fn scopes_round_trip_through_their_claim_and_unknown_ones_are_none() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("admin"), None);
        assert_eq!(Scope::parse(""), None);
    }

    #[test]
    fn only_a_service_of_the_scope_passes_and_a_refusal_names_the_scope() {
        assert!(with_role(Role::Service(Scope::Push)).require_service(Scope::Push).is_ok());
        for other in [Role::Admin, Role::User, Role::Service(Scope::Groups)] {
            let refused = with_role(other).require_service(Scope::Push).unwrap_err();
            assert_eq!(refused.code, ErrorCode::PermissionDenied);
            assert!(refused.message.contains("scope `push`"), "{}", refused.message);
        }
        let admin = with_role(Role::Admin).require_service(Scope::Groups).unwrap_err();
        assert!(admin.message.ends_with("not an admin credential"), "{}", admin.message);
    }

    #[test]
    fn a_service_is_neither_user_nor_admin() {
        let service = with_role(Role::Service(Scope::Users));
        assert!(!service.is_user() && !service.is_admin());
        assert_eq!(service.service_scope(), Some(Scope::Users));
        assert_eq!(with_role(Role::Admin).service_scope(), None);
        assert_eq!(with_role(Role::User).service_scope(), None);
    }
}
