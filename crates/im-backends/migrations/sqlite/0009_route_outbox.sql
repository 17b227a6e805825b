-- The route outbox: one row per committed batch with private messages,
-- written in the batch's transaction and deleted once the router has settled
-- it (recorded the offline entries of the messages that reached no device).
-- A row left by a node that died is found by age and its entries recorded,
-- so no message to an offline user goes without its entry. `entries` holds
-- the would-be offline entries, "user,conversation,seq,msg_id,time" joined
-- by ';'.
CREATE TABLE route_outbox (
    id         INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    entries    TEXT    NOT NULL
);
CREATE INDEX route_outbox_by_age ON route_outbox (created_ms);
