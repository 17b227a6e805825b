-- Who read a group message (`ReceiptStore::readers`): the receipts of one
-- conversation at or past a seq, a range scan of this index rather than a
-- visit to every member's receipt.
CREATE INDEX receipts_by_conversation ON receipts (conversation, read_seq);
