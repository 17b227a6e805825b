//! The `UserStore` suite, with the `UserStatusStore` and `PasswordStore`
//! cases (every user store keeps its users' standing and passwords).

use std::sync::Arc;

use im_core::ports::{CreateUser, PasswordStore, User, UserStatusStore, UserStore};
use im_core::{StatusChange, UserId, UserStatus};

use super::fixtures::unique_name;

/// Stamps out the `UserStore` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! user_store_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            user_store,
            $make,
            [
                new_users_get_distinct_ids_and_are_found,
                taken_name_is_reported_and_changes_nothing,
                unknown_users_are_not_found,
                a_new_user_has_the_default_status_and_is_not_listed,
                disabling_revoking_and_enabling_are_stored_and_listed,
                changing_an_unknown_user_changes_nothing,
                a_password_hash_is_stored_replaced_and_kept_per_user,
                an_unknown_user_gets_no_password_hash
            ]
        );
    };
}

async fn create<S: UserStore + ?Sized>(store: &S, name: &str) -> User {
    match store.create_user(name).await.unwrap() {
        CreateUser::Created(user) => user,
        CreateUser::NameTaken => panic!("{name} is a fresh name"),
    }
}

pub async fn new_users_get_distinct_ids_and_are_found<S: UserStore + ?Sized>(store: Arc<S>) {
    let alice = create(&*store, &unique_name("alice")).await;
    let bob = create(&*store, &unique_name("bob")).await;
    assert_ne!(alice.id, UserId(0), "user ids start at 1");
    assert_ne!(bob.id, UserId(0));
    assert_ne!(alice.id, bob.id);
    assert!(alice.created_at_ms > 0);
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_name(&bob.name).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(bob.id).await.unwrap(), Some(bob));
}

pub async fn taken_name_is_reported_and_changes_nothing<S: UserStore + ?Sized>(store: Arc<S>) {
    let name = unique_name("carol");
    let carol = create(&*store, &name).await;
    assert_eq!(store.create_user(&name).await.unwrap(), CreateUser::NameTaken);
    assert_eq!(store.user_by_name(&name).await.unwrap(), Some(carol));
}

pub async fn unknown_users_are_not_found<S: UserStore + ?Sized>(store: Arc<S>) {
    assert_eq!(store.user_by_id(UserId(i64::MAX as u64)).await.unwrap(), None);
    assert_eq!(store.user_by_name(&unique_name("nobody")).await.unwrap(), None);
}

pub async fn a_new_user_has_the_default_status_and_is_not_listed<S: UserStore + UserStatusStore + ?Sized>(
    store: Arc<S>,
) {
    let dave = create(&*store, &unique_name("dave")).await;
    assert_eq!(dave.status, UserStatus::default());
    assert!(!store.changed_user_statuses().await.unwrap().iter().any(|(id, _)| *id == dave.id));
}

pub async fn disabling_revoking_and_enabling_are_stored_and_listed<S: UserStore + UserStatusStore + ?Sized>(
    store: Arc<S>,
) {
    let erin = create(&*store, &unique_name("erin")).await;
    let listed = async |store: &S| {
        store.changed_user_statuses().await.unwrap().into_iter().find(|(id, _)| *id == erin.id).map(|(_, s)| s)
    };

    let disabled = UserStatus { disabled: true, token_generation: 0 };
    assert_eq!(store.change_user_status(erin.id, StatusChange::Disable).await.unwrap(), Some(disabled));
    assert_eq!(store.user_by_id(erin.id).await.unwrap().unwrap().status, disabled);
    assert_eq!(listed(&*store).await, Some(disabled));

    // Disabling twice is disabling once; each revocation counts.
    assert_eq!(store.change_user_status(erin.id, StatusChange::Disable).await.unwrap(), Some(disabled));
    store.change_user_status(erin.id, StatusChange::RevokeTokens).await.unwrap();
    let revoked = store.change_user_status(erin.id, StatusChange::RevokeTokens).await.unwrap();
    assert_eq!(revoked, Some(UserStatus { disabled: true, token_generation: 2 }));

    let enabled = UserStatus { disabled: false, token_generation: 2 };
    assert_eq!(store.change_user_status(erin.id, StatusChange::Enable).await.unwrap(), Some(enabled));
    assert_eq!(store.user_by_name(&erin.name).await.unwrap().unwrap().status, enabled);
    assert_eq!(listed(&*store).await, Some(enabled), "a user with revoked tokens stays listed");
}

pub async fn changing_an_unknown_user_changes_nothing<S: UserStore + UserStatusStore + ?Sized>(store: Arc<S>) {
    let nobody = UserId(i64::MAX as u64);
    for change in [StatusChange::Disable, StatusChange::Enable, StatusChange::RevokeTokens] {
        assert_eq!(store.change_user_status(nobody, change).await.unwrap(), None);
    }
    assert!(!store.changed_user_statuses().await.unwrap().iter().any(|(id, _)| *id == nobody));
}

pub async fn a_password_hash_is_stored_replaced_and_kept_per_user<S: UserStore + PasswordStore + ?Sized>(
    store: Arc<S>,
) {
    let frank = create(&*store, &unique_name("frank")).await;
    let grace = create(&*store, &unique_name("grace")).await;
    assert_eq!(store.password_hash(frank.id).await.unwrap(), None, "a new user has no password");

    assert!(store.set_password_hash(frank.id, "$argon2id$v=19$first").await.unwrap());
    assert_eq!(store.password_hash(frank.id).await.unwrap().as_deref(), Some("$argon2id$v=19$first"));
    assert!(store.set_password_hash(frank.id, "$argon2id$v=19$second").await.unwrap());
    assert_eq!(store.password_hash(frank.id).await.unwrap().as_deref(), Some("$argon2id$v=19$second"));
    assert_eq!(store.password_hash(grace.id).await.unwrap(), None, "another user's is untouched");
}

pub async fn an_unknown_user_gets_no_password_hash<S: UserStore + PasswordStore + ?Sized>(store: Arc<S>) {
    let nobody = UserId(i64::MAX as u64);
    assert!(!store.set_password_hash(nobody, "$argon2id$v=19$x").await.unwrap());
    assert_eq!(store.password_hash(nobody).await.unwrap(), None);
}
