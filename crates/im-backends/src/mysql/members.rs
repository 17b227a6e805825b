//! Rows of `conversation_members`, the table behind `conversations_of`, for
//! the conversations an append does not know to have them
//! ([`crate::sql::KnownConversations`]).

use im_core::ConversationId;

/// `(user_id, conversation)` rows for both members of each private
/// conversation. Groups have none: their members come from the group's
/// membership, and a group message is stored once, not per member.
pub(super) fn member_rows(conversations: &[ConversationId]) -> Vec<(u64, String)> {
    let mut rows = Vec::with_capacity(conversations.len() * 2);
    for conversation in conversations {
        let Some(pair) = conversation.pair() else { continue };
        let text = conversation.to_string();
        for user in pair {
            rows.push((user.0, text.clone()));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::UserId;

    fn private(a: u64, b: u64) -> ConversationId {
        ConversationId::private(UserId(a), UserId(b)).unwrap()
    }

    #[test]
    fn member_rows_name_both_members() {
        let rows = member_rows(&[private(3, 7)]);
        assert_eq!(rows, vec![(3, "p:3:7".to_owned()), (7, "p:3:7".to_owned())]);
    }

    #[test]
    fn groups_have_no_member_rows() {
        let rows = member_rows(&[ConversationId::Group(im_core::GroupId(4)), private(1, 2)]);
        assert_eq!(rows, vec![(1, "p:1:2".to_owned()), (2, "p:1:2".to_owned())]);
    }
}
