//! The `UserStatusBoard` suite. A board spreads what one process publishes
//! to every other process's view, so each case gets two boards over the
//! same place (for the in-process board, the same board twice) and reads
//! the second after writing the first, waiting briefly for a watch.

use std::sync::Arc;
use std::time::Duration;

use im_core::ports::UserStatusBoard;
use im_core::{StatusChange, UserId, UserStatus};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::fixtures::users;

/// How long a status may take to reach another view (the promise
/// is a second in production).
pub const PROPAGATION: Duration = Duration::from_secs(1);

/// Two boards over the same statuses: `writer` as `im-user` holds it,
/// `reader` as a node or gateway does.
pub struct BoardPair {
    pub writer: Arc<dyn UserStatusBoard>,
    pub reader: Arc<dyn UserStatusBoard>,
}

/// Stamps out the `UserStatusBoard` suite; see the [module docs](crate::conformance).
#[macro_export]
macro_rules! user_status_board_suite {
    ($make:path) => {
        $crate::__conformance_cases!(
            user_status_board,
            $make,
            [users_never_changed_have_the_default_status, a_published_status_reaches_the_other_view_and_its_listeners]
        );
    };
}

/// Waits until `board` holds `expected` for `user`; how long that took.
async fn until_status(board: &dyn UserStatusBoard, user: UserId, expected: UserStatus) -> Duration {
    let started = Instant::now();
    while board.status(user) != expected {
        assert!(started.elapsed() < PROPAGATION, "user {user} is {:?}, expected {expected:?}", board.status(user));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

pub async fn users_never_changed_have_the_default_status(boards: BoardPair) {
    let [a] = users();
    assert_eq!(boards.writer.status(a), UserStatus::default());
    assert_eq!(boards.reader.status(a), UserStatus::default());
}

pub async fn a_published_status_reaches_the_other_view_and_its_listeners(boards: BoardPair) {
    let [a, b] = users();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    boards.reader.on_change(Box::new(move |user, status| {
        if user == a || user == b {
            sink.lock().push((user, status));
        }
    }));

    let disabled = UserStatus::default().after(StatusChange::Disable);
    boards.writer.publish(a, disabled).await.unwrap();
    assert_eq!(boards.writer.status(a), disabled, "the writer's own view holds its write at once");
    until_status(&*boards.reader, a, disabled).await;
    assert_eq!(boards.reader.status(b), UserStatus::default(), "other users are untouched");

    let revoked = disabled.after(StatusChange::Enable).after(StatusChange::RevokeTokens);
    boards.writer.publish(a, revoked).await.unwrap();
    until_status(&*boards.reader, a, revoked).await;

    // Back to the default: the entry goes, and a reader hears that too.
    boards.writer.publish(b, disabled).await.unwrap();
    until_status(&*boards.reader, b, disabled).await;
    boards.writer.publish(b, UserStatus::default()).await.unwrap();
    until_status(&*boards.reader, b, UserStatus::default()).await;

    assert_eq!(
        *heard.lock(),
        vec![(a, disabled), (a, revoked), (b, disabled), (b, UserStatus::default())],
        "the reader's listeners hear each change once, in order"
    );
}
