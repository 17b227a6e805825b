//! Where each user and connection of the group workload sits.
//!
//! Users are numbered group by group: user index = group × size + member.
//! Member 0 owns its group, and members 0..senders send. Connections (one
//! per member) put every sender first, so a sending connection's index is
//! also its sender index, which keys its messages; the members who only
//! receive follow.

/// `groups` groups of `size` members, `senders` of whom send (senders ≤ size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLayout {
    pub groups: u32,
    pub size: u32,
    pub senders: u32,
}

impl GroupLayout {
    /// Every member of every group: the users, and the connections.
    pub fn users(&self) -> u32 {
        self.groups * self.size
    }

    /// Connections that send: `0..sending_connections()`.
    pub fn sending_connections(&self) -> u32 {
        self.groups * self.senders
    }

    /// The user index of connection `index`.
    pub fn user_of_connection(&self, index: u32) -> u32 {
        let sending = self.sending_connections();
        if index < sending {
            let (group, member) = self.sender_position(index);
            return group * self.size + member;
        }
        let listeners = self.size - self.senders;
        let rest = index - sending;
        (rest / listeners) * self.size + self.senders + rest % listeners
    }

    /// (group, member) of a user index.
    pub fn position(&self, user: u32) -> (u32, u32) {
        (user / self.size, user % self.size)
    }

    /// (group, member) of a sender index (= its connection index).
    pub fn sender_position(&self, sender: u32) -> (u32, u32) {
        (sender / self.senders, sender % self.senders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_come_first_and_every_member_has_one_connection() {
        let layout = GroupLayout { groups: 3, size: 4, senders: 2 };
        let users: Vec<u32> = (0..layout.users()).map(|i| layout.user_of_connection(i)).collect();
        // Senders: members 0 and 1 of each group; then members 2 and 3 of each group.
        assert_eq!(users, [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]);
        for sender in 0..layout.sending_connections() {
            let (group, member) = layout.sender_position(sender);
            assert_eq!(layout.position(layout.user_of_connection(sender)), (group, member));
            assert!(member < layout.senders);
        }
        assert_eq!(layout.position(7), (1, 3));
    }

    #[test]
    fn everyone_may_send() {
        let layout = GroupLayout { groups: 2, size: 3, senders: 3 };
        let users: Vec<u32> = (0..layout.users()).map(|i| layout.user_of_connection(i)).collect();
        assert_eq!(users, [0, 1, 2, 3, 4, 5]);
    }
}
