//! Fan-out accounting of the group workload: which members received each
//! group message, and when the last of them did.
//!
//! Every message has a slot, found from its key (sender index, number) —
//! both known before the run, so the slots are allocated up front and the
//! readers of every member connection update them without a lock: one bit
//! per member (`fetch_or`, which also catches a push received twice), the
//! send time, and the latest receipt (`fetch_max`). After the drain,
//! [`FanoutTracker::check`] compares the slots with the acks: a message is
//! complete when every member but its sender received it, and only complete
//! messages have a latency "to the last member"; the others are counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{new_histogram, record_nanos};
use crate::bench::layout::GroupLayout;

/// One message: when it was sent (from its body) and when the latest member got it.
#[derive(Debug, Default)]
struct Slot {
    sent_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// The messages of one sender, by number − 1.
#[derive(Debug)]
struct SenderMessages {
    slots: Box<[Slot]>,
    /// `words` per message: bit m says member m received it.
    receivers: Box<[AtomicU64]>,
}

#[derive(Debug)]
pub struct FanoutTracker {
    layout: GroupLayout,
    /// Words of receiver bits per message.
    words: usize,
    senders: Vec<SenderMessages>,
    duplicates: AtomicU64,
    strays: AtomicU64,
}

/// Whether every acked group message reached every other member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FanoutCheck {
    /// Acked messages every member but the sender received.
    pub complete: u64,
    /// Acked messages some member (other than the sender) did not receive by the end of the drain.
    pub incomplete: u64,
    /// Of the incomplete ones, those no member received.
    pub reached_none: u64,
    /// Pushes a member received more than once.
    pub duplicate_pushes: u64,
    /// Pushes of a message that is not its group's, or to its sender.
    pub stray_pushes: u64,
    /// Messages members received whose ack the sender never got.
    pub delivered_not_acked: u64,
    pub ok: bool,
}

impl FanoutTracker {
    /// Bytes the slots of `messages` messages take in groups of `layout`.
    pub fn bytes_needed(layout: GroupLayout, messages: u64) -> u64 {
        let per_message = std::mem::size_of::<Slot>() + words(layout.size) * std::mem::size_of::<AtomicU64>();
        messages.saturating_mul(per_message as u64)
    }

    /// Slots for sender i's messages 1..=`messages_per_sender[i]`.
    pub fn new(layout: GroupLayout, messages_per_sender: &[u32]) -> Self {
        let words = words(layout.size);
        let senders = messages_per_sender
            .iter()
            .map(|&n| SenderMessages {
                slots: (0..n).map(|_| Slot::default()).collect(),
                receivers: (0..n as usize * words).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        Self { layout, words, senders, duplicates: AtomicU64::new(0), strays: AtomicU64::new(0) }
    }

    /// The member with user index `user` received message `key` (sent at
    /// `sent_ns`, per its body) at `now_ns`.
    pub fn record(&self, key: u64, user: u32, sent_ns: u64, now_ns: u64) {
        let (sender, number) = ((key >> 32) as u32, key as u32);
        let (group, member) = self.layout.position(user);
        let found = self.senders.get(sender as usize).and_then(|m| Some((m, number.checked_sub(1)? as usize)));
        let Some((messages, index)) = found.filter(|(m, index)| *index < m.slots.len()) else {
            self.strays.fetch_add(1, Relaxed);
            return;
        };
        let (sender_group, sender_member) = self.layout.sender_position(sender);
        if group != sender_group || member == sender_member {
            self.strays.fetch_add(1, Relaxed);
            return;
        }
        let bit = 1u64 << (member % 64);
        let word = &messages.receivers[index * self.words + member as usize / 64];
        if word.fetch_or(bit, Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Relaxed);
            return;
        }
        let slot = &messages.slots[index];
        // Every push of a message carries the same send time.
        if slot.sent_ns.load(Relaxed) == 0 {
            slot.sent_ns.store(sent_ns, Relaxed);
        }
        slot.last_ns.fetch_max(now_ns, Relaxed);
    }

    /// Checks every acked message (keys in `acked`) for completeness, and
    /// returns the latency to the last member of the complete ones whose send
    /// time passes `measured` (in µs).
    pub fn check(
        &self,
        acked: impl IntoIterator<Item = u64>,
        measured: impl Fn(u64) -> bool,
    ) -> (FanoutCheck, Histogram<u64>) {
        let mut check = FanoutCheck::default();
        let mut was_acked: Vec<Vec<bool>> = self.senders.iter().map(|m| vec![false; m.slots.len()]).collect();
        for key in acked {
            let (sender, number) = ((key >> 32) as usize, key as u32);
            match was_acked.get_mut(sender).and_then(|flags| flags.get_mut(number.checked_sub(1)? as usize)) {
                Some(flag) => *flag = true,
                // An ack of a message without a slot cannot be checked: never call it complete.
                None => {
                    check.incomplete += 1;
                    check.reached_none += 1;
                }
            }
        }
        let others = u64::from(self.layout.size - 1);
        let mut last_member = new_histogram();
        for (messages, acked) in self.senders.iter().zip(&was_acked) {
            for (index, (slot, &acked)) in messages.slots.iter().zip(acked).enumerate() {
                let bits = &messages.receivers[index * self.words..(index + 1) * self.words];
                let receivers: u64 = bits.iter().map(|w| u64::from(w.load(Relaxed).count_ones())).sum();
                match (acked, receivers) {
                    (false, 0) => {}
                    (false, _) => check.delivered_not_acked += 1,
                    (true, n) if n == others => {
                        check.complete += 1;
                        let sent = slot.sent_ns.load(Relaxed);
                        if measured(sent) {
                            record_nanos(&mut last_member, slot.last_ns.load(Relaxed).saturating_sub(sent));
                        }
                    }
                    (true, n) => {
                        check.incomplete += 1;
                        check.reached_none += u64::from(n == 0);
                    }
                }
            }
        }
        check.duplicate_pushes = self.duplicates.load(Relaxed);
        check.stray_pushes = self.strays.load(Relaxed);
        check.ok = check.incomplete == 0;
        (check, last_member)
    }
}

fn words(size: u32) -> usize {
    (size as usize).div_ceil(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::message_key;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_message_is_complete_when_every_other_member_got_it_and_its_latency_is_the_last_ones() {
        // One group of 4, members 0 and 1 send; sender 0 sent 2 messages, sender 1 one.
        let layout = GroupLayout { groups: 1, size: 4, senders: 2 };
        let t = FanoutTracker::new(layout, &[2, 1]);
        // Message 0/1, sent at 10 ms: members 1, 2, 3 get it at 12, 19 and 15 ms.
        for (member, at) in [(1, 12), (2, 19), (3, 15)] {
            t.record(message_key(0, 1), member, 10 * MS, at * MS);
        }
        // Message 0/2 reaches members 1 and 2 only; message 1/1 reaches nobody.
        t.record(message_key(0, 2), 1, 20 * MS, 21 * MS);
        t.record(message_key(0, 2), 2, 20 * MS, 22 * MS);
        let acked = [message_key(0, 1), message_key(0, 2), message_key(1, 1)];
        let (check, last) = t.check(acked, |_| true);
        assert_eq!(
            check,
            FanoutCheck { complete: 1, incomplete: 2, reached_none: 1, ok: false, ..FanoutCheck::default() }
        );
        assert_eq!(last.len(), 1, "only complete messages have a last-member latency");
        assert_eq!(last.max(), last.value_at_quantile(0.5));
        assert!((8_990..=9_010).contains(&last.max()), "9 ms to the last member, got {} µs", last.max());
    }

    #[test]
    fn only_messages_sent_in_the_measured_window_are_timed() {
        let layout = GroupLayout { groups: 1, size: 2, senders: 1 };
        let t = FanoutTracker::new(layout, &[2]);
        t.record(message_key(0, 1), 1, 5 * MS, 6 * MS); // warm-up
        t.record(message_key(0, 2), 1, 50 * MS, 53 * MS);
        let (check, last) = t.check([message_key(0, 1), message_key(0, 2)], |sent| sent >= 10 * MS);
        assert_eq!((check.complete, check.ok), (2, true));
        assert_eq!(last.len(), 1);
        assert!((2_990..=3_010).contains(&last.max()), "{}", last.max());
    }

    #[test]
    fn duplicates_strays_and_unacked_deliveries_are_counted_not_mixed_in() {
        // Two groups of 3, one sender each: sender 0 is member 0 of group 0 (user 0), sender 1 of group 1 (user 3).
        let layout = GroupLayout { groups: 2, size: 3, senders: 1 };
        let t = FanoutTracker::new(layout, &[1, 1]);
        t.record(message_key(0, 1), 1, MS, 2 * MS);
        t.record(message_key(0, 1), 1, MS, 3 * MS); // the same member again
        t.record(message_key(0, 1), 4, MS, 3 * MS); // a member of the other group
        t.record(message_key(0, 1), 0, MS, 3 * MS); // the sender itself
        t.record(message_key(0, 9), 2, MS, 3 * MS); // no such message
        t.record(message_key(7, 1), 2, MS, 3 * MS); // no such sender
        t.record(message_key(0, 1), 2, MS, 4 * MS);
        t.record(message_key(1, 1), 4, MS, 2 * MS); // never acked
        let (check, last) = t.check([message_key(0, 1)], |_| true);
        assert_eq!(
            check,
            FanoutCheck {
                complete: 1,
                duplicate_pushes: 1,
                stray_pushes: 4,
                delivered_not_acked: 1,
                ok: true,
                ..FanoutCheck::default()
            }
        );
        assert!((2_990..=3_010).contains(&last.max()), "{}", last.max());
    }

    #[test]
    fn members_beyond_one_word_of_bits_are_tracked() {
        let layout = GroupLayout { groups: 1, size: 130, senders: 1 };
        let t = FanoutTracker::new(layout, &[1]);
        for member in 1..130 {
            t.record(message_key(0, 1), member, MS, MS + u64::from(member) * 1_000);
        }
        let (check, last) = t.check([message_key(0, 1)], |_| true);
        assert_eq!((check.complete, check.incomplete), (1, 0));
        assert_eq!(last.max(), 129);
    }

    #[test]
    fn an_ack_without_a_slot_is_never_complete() {
        let t = FanoutTracker::new(GroupLayout { groups: 1, size: 2, senders: 1 }, &[1]);
        let (check, _) = t.check([message_key(0, 5)], |_| true);
        assert_eq!((check.incomplete, check.reached_none, check.ok), (1, 1, false));
    }

    #[test]
    fn memory_is_one_slot_and_a_bit_per_member_per_message() {
        let layout = GroupLayout { groups: 1, size: 5_000, senders: 1 };
        // 79 words of bits + 16 bytes of times per message.
        assert_eq!(FanoutTracker::bytes_needed(layout, 1_000), 1_000 * (79 * 8 + 16));
    }
}
