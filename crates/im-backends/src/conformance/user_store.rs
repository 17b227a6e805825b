//! The `UserStore` suite.

use std::sync::Arc;

use im_core::UserId;
use im_core::ports::{CreateUser, User, UserStore};

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
                unknown_users_are_not_found
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
