/*
 * app.js — the browser client of the IM gateway ("web app").
 *
 * Served by the gateway at /app.js (with /, /app.css) under a strict
 * Content-Security-Policy: no inline code or styles, no eval, nothing from
 * other origins. Plain modern JavaScript, no framework, no build step.
 *
 * It signs in with POST /login, keeps the token in sessionStorage (one
 * session and one device id per tab), and speaks the client protocol
 * (docs/protocol.md, proto/im/client/v1/client.proto) over one WebSocket in
 * its proto3 JSON form (subprotocol "im.v1.json"): lowerCamelCase fields,
 * 64-bit integers as strings, bodies as base64, default values left out.
 *
 * Everything from the server or the user is put on the page with
 * textContent / createElement, never as HTML.
 *
 * Sections: constants and helpers · storage · state · connection ·
 * requests · users and groups · conversation list · open conversation ·
 * sending (outbox) · reading · group panel · rendering · forms and events ·
 * session.
 */
"use strict";

(() => {
  // ===================================================================
  // Constants and small helpers
  // ===================================================================

  const PAGE = 50; // messages per sync page in the conversation view
  const PING_INTERVAL_MS = 20000;
  const PING_TIMEOUT_MS = 10000; // no pong by then: the connection is dead
  const REQUEST_TIMEOUT_MS = 30000;
  // The gateway allows 128 requests in flight per connection; stay below,
  // queueing the rest, so a burst (one sync per conversation) never trips it.
  const MAX_IN_FLIGHT = 100;
  const USERS_BATCH = 256; // at most 256 ids + names per `users` request
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  // Group membership changes are not pushed (someone adding you to a group
  // tells you nothing until a message arrives), so the lists are re-read
  // now and then.
  const REFRESH_INTERVAL_MS = 15000;
  const SEND_RETRY_MIN_MS = 1000;
  const SUBPROTOCOL = "im.v1.json";
  const TOKEN_SUBPROTOCOL_PREFIX = "im.token.";
  const CLOSE_REPLACED = 4000; // another connection with our device id took over
  const CLOSE_REVOKED = 4003; // token revoked or user disabled

  const KEY = {
    token: "im.token",
    userId: "im.userId",
    name: "im.name",
    device: "im.device",
    pending: "im.pending",
    open: "im.open",
  };

  const $ = (selector) => document.querySelector(selector);

  /** A new element with an optional class name and text. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  /** Sets text only when it changed (keeps the DOM quiet). */
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /** A proto3 JSON number (string, number or missing) as a JS number. */
  function num(value) {
    const n = Number(value ?? 0);
    return Number.isFinite(n) ? n : 0;
  }

  /** A proto3 JSON id (uint64 as string, or missing) as a decimal string. */
  function id(value) {
    return value == null || value === "" ? "0" : String(value);
  }

  /** Compares two decimal ids exactly (they may exceed 2^53). */
  function compareIds(a, b) {
    try {
      const x = BigInt(a);
      const y = BigInt(b);
      return x < y ? -1 : x > y ? 1 : 0;
    } catch {
      return a < b ? -1 : a > b ? 1 : 0;
    }
  }

  /** The private conversation of two users: p:{smaller}:{larger}. */
  function privateConversationId(a, b) {
    return compareIds(a, b) <= 0 ? `p:${a}:${b}` : `p:${b}:${a}`;
  }

  function parseConversationId(conversationId) {
    let m = /^p:(\d+):(\d+)$/.exec(conversationId);
    if (m) return { kind: "p", a: m[1], b: m[2] };
    m = /^g:(\d+)$/.exec(conversationId);
    if (m) return { kind: "g", groupId: m[1] };
    return null;
  }

  /** `length` characters of A-Za-z0-9 from the CSPRNG (no modulo bias). */
  function randomString(length) {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let out = "";
    while (out.length < length) {
      for (const byte of crypto.getRandomValues(new Uint8Array(length * 2))) {
        if (byte < 248 && out.length < length) out += alphabet[byte % 62]; // 248 = 4 × 62
      }
    }
    return out;
  }

  /** A v4 UUID. crypto.randomUUID exists only in secure contexts (https or
   *  localhost); a gateway reached over plain http elsewhere still works. */
  function uuid() {
    if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** UTF-8 text as base64 (btoa alone only takes Latin-1). */
  function encodeText(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function decodeBase64(b64) {
    const binary = atob(b64 || "");
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  /** What to show for a message's body: its text, or a placeholder for
   *  content that is not text. */
  function messageText(message) {
    const contentType = message.contentType || "";
    let bytes;
    try {
      bytes = decodeBase64(message.body);
    } catch {
      return "[unreadable body]";
    }
    if (contentType === "" || contentType.toLowerCase().startsWith("text/")) {
      return new TextDecoder("utf-8").decode(bytes);
    }
    return `[${contentType}, ${bytes.length} bytes]`;
  }

  function formatTime(ms) {
    if (!ms) return "";
    const date = new Date(ms);
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (date.toDateString() === new Date().toDateString()) return time;
    return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  function oneLine(text) {
    return text.replace(/\s+/g, " ").trim();
  }

  /** "alice, bob ,, carol" → ["alice", "bob", "carol"], each once. */
  function splitNames(text) {
    return [...new Set(text.split(",").map((s) => s.trim()).filter(Boolean))];
  }

  function debounce(fn, ms) {
    let timer = 0;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  /** Runs `task` once at a time; a call while it runs makes it run once
   *  more afterwards (so the latest state is always read). Returns the
   *  running promise, which never rejects. */
  function coalesce(task) {
    let running = null;
    let again = false;
    return function run() {
      if (running) {
        again = true;
        return running;
      }
      running = (async () => {
        try {
          do {
            again = false;
            await task();
          } while (again && session);
        } catch (error) {
          if (!isDisconnected(error)) console.warn(error);
        } finally {
          running = null;
        }
      })();
      return running;
    };
  }

  // ===================================================================
  // Storage (sessionStorage: per tab, gone when the tab closes)
  // ===================================================================

  const storage = {
    get(key) {
      try {
        return sessionStorage.getItem(key);
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        sessionStorage.setItem(key, value);
      } catch {
        /* storage full or disabled: the app works without it */
      }
    },
    remove(key) {
      try {
        sessionStorage.removeItem(key);
      } catch {
        /* ignore */
      }
    },
  };

  /** This tab's device id: "web-" + random, 1–64 bytes of A-Za-z0-9 (the
   *  gateway allows `A-Z a-z 0-9 _ . -`). */
  function deviceId() {
    let device = storage.get(KEY.device);
    if (!device || !/^[A-Za-z0-9_.-]{1,64}$/.test(device)) {
      device = `web-${randomString(24)}`;
      storage.set(KEY.device, device);
    }
    return device;
  }

  function newDeviceId() {
    storage.remove(KEY.device);
    return deviceId();
  }

  // ===================================================================
  // State
  // ===================================================================

  /** { token, userId, name } while signed in, else null. */
  let session = null;

  /**
   * conversations: id → {
   *   id, kind: "p" | "g", peer, groupId,
   *   maxSeq, readSeq, unread,       // from list_conversations, kept current
   *   peerReadSeq,                   // the other user's read position (list, receipts)
   *   last: { seq, text, fromUser, time } | null,
   *   lastFetchedFor,                // the maxSeq whose last message was asked
   *   activity,                      // ms, for sorting the list
   *   listed,                        // the server has listed it
   * }
   * users: id → name. groups: groupId → { groupId, name, owner, role, createdAtMs }.
   * outbox: clientMsgId → pending message (see Sending), in creation order.
   * open: the open conversation's view state (see openConversation), or null.
   */
  let state = freshState();

  function freshState() {
    return {
      conversations: new Map(),
      users: new Map(),
      groups: new Map(),
      outbox: new Map(),
      open: null,
    };
  }

  function me() {
    return session ? session.userId : "";
  }

  function ensureConversation(conversationId) {
    let conv = state.conversations.get(conversationId);
    if (conv) return conv;
    const parsed = parseConversationId(conversationId);
    if (!parsed || !session) return null;
    conv = {
      id: conversationId,
      kind: parsed.kind,
      peer: parsed.kind === "p" ? (parsed.a === me() ? parsed.b : parsed.a) : "0",
      groupId: parsed.kind === "g" ? parsed.groupId : "0",
      maxSeq: 0,
      readSeq: 0,
      unread: 0,
      peerReadSeq: 0,
      last: null,
      lastFetchedFor: 0,
      activity: 0,
      listed: false,
    };
    state.conversations.set(conversationId, conv);
    return conv;
  }

  /** Remembers `message` as the conversation's last one when it is the newest. */
  function noteLastMessage(conv, message) {
    const seq = num(message.seq);
    if (!seq) return;
    if (seq > conv.maxSeq) conv.maxSeq = seq;
    if (!conv.last || seq >= conv.last.seq) {
      const time = num(message.serverTimeMs);
      conv.last = {
        seq,
        text: message.text ?? messageText(message),
        fromUser: id(message.fromUser),
        time,
      };
      if (time > conv.activity) conv.activity = time;
    }
  }

  function dropConversation(conversationId) {
    state.conversations.delete(conversationId);
    for (const [clientMsgId, pending] of state.outbox) {
      if (pending.conversationId === conversationId) state.outbox.delete(clientMsgId);
    }
    persistOutbox();
    if (state.open && state.open.id === conversationId) closeConversation();
    scheduleRender();
  }

  // ===================================================================
  // Connection
  // ===================================================================

  const conn = {
    ws: null,
    opened: false,
    backoffMs: BACKOFF_MIN_MS,
    reconnectTimer: 0,
    pingTimer: 0,
    failedOpens: 0, // closes before open in a row (maybe an expired token)
    nextReqId: 1,
    inflight: new Map(), // reqId → { kind, body, resolve, reject, timer }
    waiting: [], // requests beyond MAX_IN_FLIGHT
  };

  function isOnline() {
    return !!conn.ws && conn.opened && conn.ws.readyState === WebSocket.OPEN;
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws?device=${deviceId()}`;
  }

  /** The subprotocols offered: JSON frames (the one the gateway agrees
   *  to), and the token. A page cannot set an Authorization header on a
   *  WebSocket; in a header the token stays out of proxies' access logs,
   *  where a ?token= in the URL would land. */
  function socketProtocols() {
    return [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + session.token];
  }

  function connect() {
    clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = 0;
    if (!session || conn.ws) return;
    let sock;
    try {
      sock = new WebSocket(socketUrl(), socketProtocols());
    } catch (error) {
      console.warn(error);
      setStatus("offline");
      scheduleReconnect();
      return;
    }
    conn.ws = sock;
    conn.opened = false;
    setStatus("connecting");
    // Each handler first checks that `sock` is still the current socket: an
    // abandoned one (ping timeout, sign-out) may still fire events.
    sock.onopen = () => {
      if (conn.ws === sock) onOpen();
    };
    sock.onmessage = (event) => {
      if (conn.ws === sock) onFrame(event.data);
    };
    sock.onclose = (event) => {
      if (conn.ws === sock) onSocketGone(event.code);
    };
    sock.onerror = () => {
      /* a close event follows */
    };
  }

  function onOpen() {
    conn.opened = true;
    conn.backoffMs = BACKOFF_MIN_MS;
    conn.failedOpens = 0;
    hideNotice();
    setStatus("online");
    startPing();
    onConnected();
  }

  /** The socket closed (or was given up): fail what was asked on it and
   *  reconnect, unless the server said the session is over. */
  function onSocketGone(code) {
    const wasOpen = conn.opened;
    conn.ws = null;
    conn.opened = false;
    stopPing();
    failAllRequests();
    if (!session) return;
    if (code === CLOSE_REVOKED) {
      signOut("Your session has ended (signed out by an administrator, or the account was disabled). Please sign in again.");
      return;
    }
    // Another connection took our device id: most likely this tab was
    // duplicated (sessionStorage is copied with it). Take a new id so the
    // two tabs stop replacing each other.
    if (code === CLOSE_REPLACED) newDeviceId();
    if (!wasOpen && navigator.onLine !== false) {
      // The gateway refuses a bad or expired token with HTTP 401 before the
      // upgrade, which a page cannot see: it looks like a close before open.
      conn.failedOpens += 1;
      if (conn.failedOpens >= 3) {
        showNotice("Cannot connect. The server may be down, or your sign-in may have expired.");
      }
    }
    setStatus("offline");
    scheduleReconnect();
  }

  /** Gives up on `sock` at once (a dead TCP connection can take minutes to
   *  report its close). */
  function dropSocket(sock) {
    if (conn.ws !== sock) return;
    try {
      sock.close(1000, "no answer");
    } catch {
      /* ignore */
    }
    onSocketGone(1006);
  }

  function scheduleReconnect() {
    if (conn.reconnectTimer || !session) return;
    const base = Math.min(conn.backoffMs, BACKOFF_MAX_MS);
    conn.backoffMs = Math.min(conn.backoffMs * 2, BACKOFF_MAX_MS);
    const delay = base / 2 + (Math.random() * base) / 2; // jitter: spread reconnecting tabs
    conn.reconnectTimer = setTimeout(() => {
      conn.reconnectTimer = 0;
      connect();
    }, delay);
  }

  /** Reconnects now instead of waiting for the backoff (the network came
   *  back, the tab became visible). */
  function reconnectSoon() {
    if (!session || conn.ws) return;
    conn.backoffMs = BACKOFF_MIN_MS;
    connect();
  }

  /** A ping; no pong within `timeoutMs` means the connection is dead. */
  function checkConnection(timeoutMs = PING_TIMEOUT_MS) {
    const sock = conn.ws;
    request("ping", { nonce: String(Date.now()) }, timeoutMs).catch((error) => {
      if (error.code === "TIMEOUT") dropSocket(sock);
    });
  }

  function startPing() {
    stopPing();
    conn.pingTimer = setInterval(() => checkConnection(), PING_INTERVAL_MS);
  }

  function stopPing() {
    clearInterval(conn.pingTimer);
    conn.pingTimer = 0;
  }

  /** After every (re)connect: lists, names, the open conversation, and
   *  every message not yet acknowledged (resent with the same id). */
  function onConnected() {
    flushUsers();
    refreshGroups();
    refreshConversations().then(() => {
      const open = state.open;
      if (!open || !isOnline()) return;
      if (open.loaded) syncForward();
      else loadLatest();
      if (!$("#group-panel").hidden) loadMembers();
      requestReadBy();
    });
    pumpAll();
  }

  // ===================================================================
  // Requests
  // ===================================================================

  class RequestError extends Error {
    constructor(error) {
      super(error.message || error.code || "request failed");
      this.code = error.code || "ERROR_CODE_UNSPECIFIED";
      this.reason = error.reason || "";
      this.retryAfterMs = num(error.retryAfterMs);
    }
  }

  const disconnectedError = () => new RequestError({ code: "DISCONNECTED", message: "not connected" });

  function isDisconnected(error) {
    return !!error && error.code === "DISCONNECTED";
  }

  /**
   * Sends `{reqId, [kind]: body}` and resolves with the answer frame (read
   * its one field: `frame.sync`, `frame.ack`, …), or rejects with a
   * RequestError: the server's error, DISCONNECTED (not connected, or the
   * connection dropped before the answer) or TIMEOUT.
   */
  function request(kind, body = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!isOnline()) {
        reject(disconnectedError());
        return;
      }
      const job = { kind, body, resolve, reject, timeoutMs, timer: 0 };
      if (conn.inflight.size >= MAX_IN_FLIGHT) conn.waiting.push(job);
      else dispatch(job);
    });
  }

  function dispatch(job) {
    const reqId = String(conn.nextReqId++);
    job.timer = setTimeout(() => settle(reqId, null, new RequestError({ code: "TIMEOUT", message: "no answer from the server" })), job.timeoutMs);
    conn.inflight.set(reqId, job);
    try {
      conn.ws.send(JSON.stringify({ reqId, [job.kind]: job.body }));
    } catch {
      settle(reqId, null, disconnectedError());
    }
  }

  /** Ends request `reqId` with `frame` or `failure`; false if unknown. */
  function settle(reqId, frame, failure) {
    const job = conn.inflight.get(reqId);
    if (!job) return false;
    conn.inflight.delete(reqId);
    clearTimeout(job.timer);
    if (failure) job.reject(failure);
    else if (frame.error) job.reject(new RequestError(frame.error));
    else job.resolve(frame);
    while (conn.waiting.length && conn.inflight.size < MAX_IN_FLIGHT && isOnline()) dispatch(conn.waiting.shift());
    return true;
  }

  function failAllRequests() {
    for (const reqId of [...conn.inflight.keys()]) settle(reqId, null, disconnectedError());
    const waiting = conn.waiting.splice(0);
    for (const job of waiting) job.reject(disconnectedError());
  }

  /** One frame from the server: an answer (reqId set) or an event. */
  function onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("unreadable frame", data);
      return;
    }
    const reqId = frame.reqId ? String(frame.reqId) : "0";
    if (reqId !== "0" && settle(reqId, frame)) return;
    if (frame.push) onPush(frame.push);
    else if (frame.receipt) onReceipt(frame.receipt);
    else if (frame.error) console.warn("server error", frame.error);
  }

  /** A person-readable text for a failed request. */
  function errorText(error) {
    if (isDisconnected(error)) return "You are offline. Try again when the connection is back.";
    if (error && error.code === "TIMEOUT") return "The server did not answer. Try again.";
    return (error && error.message) || "Something went wrong.";
  }

  // ===================================================================
  // Users and groups
  // ===================================================================

  const userFetch = {
    wanted: new Set(), // ids to ask for
    asking: new Set(), // ids asked, no answer yet
    unknown: new Set(), // ids the server did not know
    timer: 0,
  };

  function userName(userId) {
    const name = state.users.get(userId);
    if (name) return name;
    needUser(userId);
    return `user ${userId}`;
  }

  function rememberUser(user) {
    const userId = id(user.id);
    if (userId !== "0" && user.name) state.users.set(userId, user.name);
  }

  /** Asks for the user's name soon, batched with the others wanted. */
  function needUser(userId) {
    if (!userId || userId === "0" || state.users.has(userId)) return;
    if (userFetch.asking.has(userId) || userFetch.unknown.has(userId)) return;
    userFetch.wanted.add(userId);
    if (!userFetch.timer) userFetch.timer = setTimeout(flushUsers, 0);
  }

  function flushUsers() {
    clearTimeout(userFetch.timer);
    userFetch.timer = 0;
    if (!isOnline()) return; // onConnected flushes again
    while (userFetch.wanted.size) {
      const ids = [...userFetch.wanted].slice(0, USERS_BATCH);
      for (const userId of ids) {
        userFetch.wanted.delete(userId);
        userFetch.asking.add(userId);
      }
      request("users", { ids })
        .then(
          (frame) => {
            for (const user of (frame.users && frame.users.users) || []) rememberUser(user);
            for (const userId of ids) if (!state.users.has(userId)) userFetch.unknown.add(userId);
            scheduleRender();
          },
          (error) => {
            if (!session) return; // signed out meanwhile
            // Asked again on the next connect; a refusal is not retried.
            for (const userId of ids) (isDisconnected(error) ? userFetch.wanted : userFetch.unknown).add(userId);
          },
        )
        .finally(() => {
          for (const userId of ids) userFetch.asking.delete(userId);
        });
    }
  }

  /** Names → ids via `users {names}`. Returns { ids: Map name → id, missing }. */
  async function resolveNames(names) {
    const found = [];
    for (let i = 0; i < names.length; i += USERS_BATCH) {
      const frame = await request("users", { names: names.slice(i, i + USERS_BATCH) });
      for (const user of (frame.users && frame.users.users) || []) {
        rememberUser(user);
        found.push({ id: id(user.id), name: user.name || "" });
      }
    }
    const ids = new Map();
    const missing = [];
    for (const name of names) {
      // The exact name first; then one that differs only in case, in case
      // the directory matches names that way.
      const match =
        found.find((user) => user.name === name) ||
        found.find((user) => user.name.toLowerCase() === name.toLowerCase());
      if (match) ids.set(name, match.id);
      else missing.push(name);
    }
    return { ids, missing };
  }

  function noSuchUsers(missing) {
    return missing.length === 1 ? `No user named ${missing[0]}` : `No users named ${missing.join(", ")}`;
  }

  function rememberGroup(info, role) {
    if (!info) return null;
    const groupId = id(info.groupId);
    if (groupId === "0") return null;
    const group = state.groups.get(groupId) || { groupId, role: "" };
    group.name = info.name || "";
    group.owner = id(info.owner);
    group.createdAtMs = num(info.createdAtMs);
    if (role) group.role = role;
    state.groups.set(groupId, group);
    const conv = ensureConversation(`g:${groupId}`);
    if (conv && !conv.activity) conv.activity = group.createdAtMs;
    return group;
  }

  const refreshGroups = coalesce(async () => {
    const frame = await request("listGroups", {});
    for (const membership of (frame.groups && frame.groups.groups) || []) {
      rememberGroup(membership.group, membership.role || "");
    }
    scheduleRender();
  });

  const groupAsked = new Map(); // groupId → when list_groups was last run for it

  /** Asks for the groups when this one is not known yet (for each group at
   *  most every 5 s: one that list_groups does not have is not asked for
   *  in a loop). */
  function needGroup(groupId) {
    if (state.groups.has(groupId) || !isOnline()) return;
    if (Date.now() - (groupAsked.get(groupId) || 0) < 5000) return;
    groupAsked.set(groupId, Date.now());
    refreshGroups();
  }

  function groupName(groupId) {
    const group = state.groups.get(groupId);
    if (group && group.name) return group.name;
    needGroup(groupId);
    return `group ${groupId}`;
  }

  function conversationTitle(conv) {
    return conv.kind === "g" ? groupName(conv.groupId) : userName(conv.peer);
  }

  // ===================================================================
  // Conversation list
  // ===================================================================

  let groupsUncheckedTimer = 0;

  const refreshConversations = coalesce(async () => {
    const frame = await request("listConversations", {});
    const list = frame.conversations || {};
    const seen = new Set();
    for (const summary of list.conversations || []) {
      const conv = ensureConversation(summary.conversationId || "");
      if (!conv) continue;
      seen.add(conv.id);
      conv.listed = true;
      // max: a push that arrived meanwhile may already know a newer seq.
      conv.maxSeq = Math.max(conv.maxSeq, num(summary.maxSeq));
      conv.readSeq = Math.max(conv.readSeq, num(summary.readSeq));
      // How far the peer read, also after a reload (receipts only tell what
      // happens while the page is open).
      conv.peerReadSeq = Math.max(conv.peerReadSeq, num(summary.peerReadSeq));
      conv.unread = num(summary.unread);
      if (summary.peer) conv.peer = id(summary.peer);
      if (summary.groupId) conv.groupId = id(summary.groupId);
    }
    // A group that was listed and is no more: we left or were removed.
    // (Private conversations never go away; one started here stays until
    // its first message.) With groupsUnchecked the group list is partial.
    if (!list.groupsUnchecked) {
      for (const conv of [...state.conversations.values()]) {
        if (conv.kind === "g" && conv.listed && !seen.has(conv.id)) {
          state.groups.delete(conv.groupId);
          if (state.open && state.open.id === conv.id) showError(`You are no longer a member of ${conversationTitle(conv)}.`);
          dropConversation(conv.id);
        }
      }
    } else if (!groupsUncheckedTimer) {
      groupsUncheckedTimer = setTimeout(() => {
        groupsUncheckedTimer = 0;
        if (isOnline()) refreshConversations();
      }, 5000);
    }
    for (const conv of state.conversations.values()) {
      if (conv.maxSeq > 0 && conv.lastFetchedFor < conv.maxSeq && (!conv.last || conv.last.seq < conv.maxSeq)) {
        fetchLastMessage(conv);
      }
      if (conv.kind === "g") needGroup(conv.groupId);
    }
    const open = state.open;
    if (open && open.loaded && state.conversations.has(open.id)) {
      // Pushes can be missed: catch up when the list knows more.
      if (state.conversations.get(open.id).maxSeq > open.syncedUpTo) syncForward();
    }
    maybeMarkRead();
    scheduleRender();
  });

  /** The conversation's newest message, for the list's preview line. */
  async function fetchLastMessage(conv) {
    const target = conv.maxSeq;
    conv.lastFetchedFor = target;
    try {
      const frame = await request("sync", { conversationId: conv.id, afterSeq: String(target - 1), limit: 1 });
      for (const message of (frame.sync && frame.sync.messages) || []) {
        noteLastMessage(conv, message);
        needUser(id(message.fromUser));
      }
      scheduleRender();
    } catch (error) {
      if (isDisconnected(error) || error.code === "TIMEOUT") conv.lastFetchedFor = 0; // ask again later
    }
  }

  /** The newest pending (unacknowledged) message of a conversation. */
  function newestPending(conversationId) {
    let newest = null;
    for (const pending of state.outbox.values()) {
      if (pending.conversationId === conversationId && (!newest || pending.createdMs >= newest.createdMs)) newest = pending;
    }
    return newest;
  }

  function conversationActivity(conv) {
    const pending = newestPending(conv.id);
    return Math.max(conv.activity, pending ? pending.createdMs : 0);
  }

  function sortedConversations() {
    return [...state.conversations.values()]
      .map((conv) => ({ conv, activity: conversationActivity(conv) }))
      .sort((x, y) => y.activity - x.activity || y.conv.maxSeq - x.conv.maxSeq || (x.conv.id < y.conv.id ? -1 : 1))
      .map((entry) => entry.conv);
  }

  // ===================================================================
  // Pushes and receipts
  // ===================================================================

  function onPush(message) {
    if (!session) return;
    const conversationId = message.conversationId || "";
    const known = state.conversations.get(conversationId);
    const conv = ensureConversation(conversationId);
    if (!conv) return;
    const seq = num(message.seq);
    const fromUser = id(message.fromUser);
    const isNew = seq > conv.maxSeq;
    noteLastMessage(conv, message);
    needUser(fromUser);
    // Unread counts the others' messages after our read position; a seq we
    // already knew of was counted by the list.
    if (fromUser !== me() && isNew && seq > conv.readSeq) conv.unread += 1;
    const open = state.open;
    if (open && open.id === conversationId) {
      addMessages(open, [message]);
      if (open.loaded) {
        if (seq === open.syncedUpTo + 1 && !open.syncing) open.syncedUpTo = seq;
        else if (seq > open.syncedUpTo) syncForward(); // a gap (or seqs skipped): sync it
      }
      maybeMarkRead();
    }
    if (!known || !known.listed) refreshConversations();
    if (conv.kind === "g") needGroup(conv.groupId);
    scheduleRender();
  }

  function onReceipt(receipt) {
    if (!session) return;
    const conv = state.conversations.get(receipt.conversationId || "");
    if (!conv) return;
    const reader = id(receipt.reader);
    const readSeq = num(receipt.readSeq);
    if (reader === me()) {
      // Our other device read: our own unread count goes down.
      if (readSeq > conv.readSeq) conv.readSeq = readSeq;
      if (conv.readSeq >= conv.maxSeq) conv.unread = 0;
      else refreshConversations(); // the exact count is the server's
    } else if (readSeq > conv.peerReadSeq) {
      conv.peerReadSeq = readSeq;
    }
    scheduleRender();
  }

  // ===================================================================
  // The open conversation
  // ===================================================================

  let openGeneration = 0;

  function openConversation(conversationId, { focus = true } = {}) {
    const conv = ensureConversation(conversationId);
    if (!conv) return;
    if (state.open && state.open.id === conversationId) {
      if (focus && !isNarrow()) $("#compose-input").focus();
      return;
    }
    closeGroupPanel(false);
    state.open = {
      id: conversationId,
      generation: ++openGeneration,
      bySeq: new Map(), // seq → { seq, fromUser, clientMsgId, text, time }
      topSeq: 0, // the highest seq shown
      floor: 0, // every message with floor < seq ≤ syncedUpTo is loaded
      syncedUpTo: 0,
      loaded: false, // the latest page came
      loading: false,
      syncing: false,
      syncAgain: false,
      loadingOlder: false,
      hasOlder: false,
      markedSeq: 0, // the highest seq a mark_read was sent for
      stickBottom: true, // scroll to the bottom at the next render
      keepFromBottom: false, // older messages were put on top: keep the view still
      readBy: null, // { seq, count } for the last own message of a group
      roster: null, // { members: [{ user, role }], version }
    };
    storage.set(KEY.open, conversationId);
    messageEls.clear();
    $("#messages").replaceChildren();
    renderNow();
    loadLatest();
    if (focus && !isNarrow()) $("#compose-input").focus();
  }

  /** One-column layout (see app.css): focusing the compose box there
   *  would pop up the on-screen keyboard over the messages. */
  function isNarrow() {
    return window.matchMedia("(max-width: 640px)").matches;
  }

  function closeConversation() {
    closeGroupPanel(false);
    state.open = null;
    storage.remove(KEY.open);
    messageEls.clear();
    $("#messages").replaceChildren();
    scheduleRender();
  }

  /** The latest page: the last PAGE seqs, then forward while has_more. */
  async function loadLatest() {
    const open = state.open;
    if (!open || open.loading) return;
    const conv = state.conversations.get(open.id);
    open.loading = true;
    const after = Math.max(0, conv.maxSeq - PAGE);
    open.floor = after;
    open.syncedUpTo = after;
    open.hasOlder = after > 0;
    open.stickBottom = true;
    try {
      if ((await syncForward()) && state.open === open) {
        open.loaded = true;
        requestReadBy();
        scheduleRender(); // may load older messages to fill the view
      }
    } finally {
      open.loading = false;
    }
  }

  /** Syncs the open conversation from `syncedUpTo` to its end. Also fills
   *  gaps: sync returns every stored seq above afterSeq. */
  async function syncForward() {
    const open = state.open;
    if (!open) return false;
    if (open.syncing) {
      open.syncAgain = true;
      return true;
    }
    open.syncing = true;
    try {
      do {
        open.syncAgain = false;
        let more = true;
        while (more) {
          const frame = await request("sync", { conversationId: open.id, afterSeq: String(open.syncedUpTo), limit: PAGE });
          if (state.open !== open) return false;
          const page = frame.sync || {};
          const messages = page.messages || [];
          addMessages(open, messages);
          if (messages.length) open.syncedUpTo = Math.max(open.syncedUpTo, num(messages[messages.length - 1].seq));
          more = !!page.hasMore && messages.length > 0;
        }
      } while (open.syncAgain);
      return true;
    } catch (error) {
      conversationFailed(open, error);
      return false;
    } finally {
      open.syncing = false;
      maybeMarkRead();
      scheduleRender();
    }
  }

  /** Loads the PAGE seqs below what is shown, paging forward up to it;
   *  when that range holds nothing (a gap, or deleted), goes further down. */
  async function loadOlder() {
    const open = state.open;
    if (!open || !open.loaded || !open.hasOlder || open.loadingOlder) return;
    open.loadingOlder = true;
    try {
      let added = 0;
      for (let round = 0; round < 10 && open.hasOlder && added === 0; round++) {
        const target = open.floor; // everything above it is shown
        const after = Math.max(0, target - PAGE);
        const before = open.bySeq.size;
        let cursor = after;
        for (;;) {
          const frame = await request("sync", { conversationId: open.id, afterSeq: String(cursor), limit: PAGE });
          if (state.open !== open) return;
          const page = frame.sync || {};
          const messages = page.messages || [];
          open.keepFromBottom = true;
          addMessages(open, messages.filter((m) => num(m.seq) <= target));
          if (!messages.length) break;
          cursor = num(messages[messages.length - 1].seq);
          if (!page.hasMore || cursor >= target) break;
        }
        open.floor = after;
        open.hasOlder = after > 0;
        added = open.bySeq.size - before;
      }
    } catch (error) {
      conversationFailed(open, error);
    } finally {
      open.loadingOlder = false;
      scheduleRender();
    }
  }

  function conversationFailed(open, error) {
    if (isDisconnected(error) || state.open !== open) return; // the reconnect syncs again
    if (error.code === "NOT_FOUND" || error.code === "PERMISSION_DENIED") {
      const conv = state.conversations.get(open.id);
      showError(error.message || "This conversation is not available.");
      if (conv && conv.kind === "g") {
        state.groups.delete(conv.groupId);
        dropConversation(open.id);
      }
      refreshConversations();
      return;
    }
    showError(errorText(error));
  }

  /** Adds synced or pushed messages to the open view (deduplicated by seq). */
  function addMessages(open, messages) {
    const conv = state.conversations.get(open.id);
    let outboxChanged = false;
    for (const message of messages) {
      const seq = num(message.seq);
      if (!seq) continue;
      const record = {
        seq,
        fromUser: id(message.fromUser),
        clientMsgId: message.clientMsgId || "",
        text: messageText(message),
        time: num(message.serverTimeMs),
      };
      open.bySeq.set(seq, record); // replaces: the stored text may be masked
      if (seq > open.topSeq) open.topSeq = seq;
      needUser(record.fromUser);
      // Our message stored while its ack was lost (a reconnect): it is sent.
      if (record.fromUser === me() && record.clientMsgId && state.outbox.has(record.clientMsgId)) {
        state.outbox.delete(record.clientMsgId);
        outboxChanged = true;
      }
      if (conv) noteLastMessage(conv, message);
    }
    if (outboxChanged) persistOutbox();
    scheduleRender();
  }

  // ===================================================================
  // Sending (the outbox)
  // ===================================================================

  /*
   * A message typed here goes into the outbox and shows as "sending…" at
   * once. Each conversation's outbox is sent one message at a time, in
   * order, so the seqs follow the typing order; a message stays in the
   * outbox until its ack (also across reconnects and reloads: the outbox is
   * in sessionStorage). A resend keeps its clientMsgId, which the server
   * answers with the first ack.
   *
   * pending: { clientMsgId, conversationId, toUser, toGroup, text,
   *            createdMs, status: "sending" | "failed", error, newIdOnRetry,
   *            retries }
   */

  const sendingConversations = new Set();
  const sendRetryTimers = new Map(); // conversationId → timer

  function queueMessage(text) {
    const open = state.open;
    if (!open) return;
    const conv = state.conversations.get(open.id);
    const pending = {
      clientMsgId: uuid(),
      conversationId: conv.id,
      toUser: conv.kind === "p" ? conv.peer : "",
      toGroup: conv.kind === "g" ? conv.groupId : "",
      text,
      createdMs: Date.now(),
      status: "sending",
      error: "",
      newIdOnRetry: false,
      retries: 0,
    };
    state.outbox.set(pending.clientMsgId, pending);
    persistOutbox();
    open.stickBottom = true;
    scheduleRender();
    pump(conv.id);
  }

  function pumpAll() {
    for (const conversationId of new Set([...state.outbox.values()].map((p) => p.conversationId))) pump(conversationId);
  }

  async function pump(conversationId) {
    if (!isOnline() || sendingConversations.has(conversationId) || sendRetryTimers.has(conversationId)) return;
    let pending = null;
    for (const candidate of state.outbox.values()) {
      if (candidate.conversationId === conversationId && candidate.status === "sending") {
        pending = candidate;
        break;
      }
    }
    if (!pending) return;
    sendingConversations.add(conversationId);
    let retryInMs = -1; // -1: go on with the next; 0: stop until reconnect
    try {
      const frame = await request("send", sendBody(pending));
      onAck(pending, frame.ack || {});
    } catch (error) {
      retryInMs = onSendError(pending, error);
    } finally {
      sendingConversations.delete(conversationId);
    }
    if (!session) return;
    if (retryInMs > 0) {
      sendRetryTimers.set(
        conversationId,
        setTimeout(() => {
          sendRetryTimers.delete(conversationId);
          pump(conversationId);
        }, retryInMs),
      );
    } else if (retryInMs < 0) {
      pump(conversationId);
    }
  }

  function sendBody(pending) {
    const body = { clientMsgId: pending.clientMsgId, body: encodeText(pending.text), contentType: "text/plain" };
    if (pending.toGroup) body.toGroup = pending.toGroup;
    else body.toUser = pending.toUser;
    return body;
  }

  /** What to do after a refused send: the delay before a retry with the
   *  same id, 0 to wait for the next connection, -1 when it failed for good. */
  function onSendError(pending, error) {
    if (isDisconnected(error)) return 0;
    if (error.reason === "rate_limited") return Math.max(error.retryAfterMs, 100);
    if (error.code === "UNAVAILABLE" || error.code === "TIMEOUT") {
      pending.retries += 1;
      return error.retryAfterMs || Math.min(SEND_RETRY_MIN_MS * 2 ** pending.retries, BACKOFF_MAX_MS);
    }
    pending.status = "failed";
    pending.error = error.message || error.code;
    // The same id with another body is refused for good: a retry needs a new id.
    pending.newIdOnRetry = error.reason === "client_msg_id_reused";
    persistOutbox();
    scheduleRender();
    return -1;
  }

  function onAck(pending, ack) {
    const seq = num(ack.seq);
    const conversationId = ack.conversationId || pending.conversationId;
    state.outbox.delete(pending.clientMsgId);
    persistOutbox();
    const record = {
      seq,
      fromUser: me(),
      clientMsgId: pending.clientMsgId,
      text: pending.text,
      time: num(ack.serverTimeMs) || Date.now(),
    };
    const conv = ensureConversation(conversationId);
    if (conv && seq) {
      noteLastMessage(conv, { seq, text: record.text, fromUser: record.fromUser, serverTimeMs: record.time });
      if (!conv.listed) refreshConversations();
    }
    const open = state.open;
    if (open && open.id === conversationId && seq) {
      // A sync may have brought it first, with the text as stored: keep that.
      if (!open.bySeq.has(seq)) open.bySeq.set(seq, record);
      if (seq > open.topSeq) open.topSeq = seq;
      if (open.loaded) {
        if (seq === open.syncedUpTo + 1 && !open.syncing) open.syncedUpTo = seq;
        else if (seq > open.syncedUpTo) syncForward();
      }
      requestReadBy();
    }
    // The ack does not carry the masked text: read it back.
    if (ack.bodyMasked && seq) refetchMessage(conversationId, seq);
    scheduleRender();
  }

  async function refetchMessage(conversationId, seq) {
    try {
      const frame = await request("sync", { conversationId, afterSeq: String(seq - 1), limit: 1 });
      const messages = ((frame.sync && frame.sync.messages) || []).filter((m) => num(m.seq) === seq);
      const open = state.open;
      if (open && open.id === conversationId) addMessages(open, messages);
      const conv = state.conversations.get(conversationId);
      if (conv) for (const message of messages) noteLastMessage(conv, message);
      scheduleRender();
    } catch (error) {
      if (!isDisconnected(error)) console.warn(error);
    }
  }

  function retryMessage(clientMsgId) {
    let pending = state.outbox.get(clientMsgId);
    if (!pending || pending.status !== "failed") return;
    if (pending.newIdOnRetry) {
      state.outbox.delete(clientMsgId);
      pending = { ...pending, clientMsgId: uuid(), newIdOnRetry: false };
      state.outbox.set(pending.clientMsgId, pending);
    }
    pending.status = "sending";
    pending.error = "";
    pending.retries = 0;
    persistOutbox();
    scheduleRender();
    pump(pending.conversationId);
  }

  function persistOutbox() {
    if (!session) return;
    const items = [...state.outbox.values()];
    if (items.length) storage.set(KEY.pending, JSON.stringify({ userId: me(), items }));
    else storage.remove(KEY.pending);
  }

  /** The outbox of a previous page load of this tab (same user only). */
  function restoreOutbox() {
    let saved = null;
    try {
      saved = JSON.parse(storage.get(KEY.pending) || "null");
    } catch {
      saved = null;
    }
    if (!saved || saved.userId !== me() || !Array.isArray(saved.items)) return;
    for (const item of saved.items) {
      if (!item || typeof item.clientMsgId !== "string" || typeof item.text !== "string") continue;
      const conv = ensureConversation(String(item.conversationId || ""));
      if (!conv) continue;
      state.outbox.set(item.clientMsgId, {
        clientMsgId: item.clientMsgId,
        conversationId: conv.id,
        toUser: conv.kind === "p" ? conv.peer : "",
        toGroup: conv.kind === "g" ? conv.groupId : "",
        text: item.text,
        createdMs: num(item.createdMs) || Date.now(),
        status: item.status === "failed" ? "failed" : "sending",
        error: String(item.error || ""),
        newIdOnRetry: !!item.newIdOnRetry,
        retries: 0,
      });
    }
  }

  // ===================================================================
  // Reading
  // ===================================================================

  function isPageVisible() {
    // Visible is enough: a chat shown in a window beside another one is
    // being read even when that other window has the focus.
    return document.visibilityState === "visible";
  }

  /** Marks the open conversation read up to the highest seq shown, when the
   *  page is seen. */
  function maybeMarkRead() {
    const open = state.open;
    if (!open || !session || !isPageVisible()) return;
    const conv = state.conversations.get(open.id);
    if (!conv) return;
    if (conv.unread !== 0) {
      conv.unread = 0;
      scheduleRender();
    }
    const seq = open.topSeq;
    if (!seq || seq <= conv.readSeq || seq <= open.markedSeq || !isOnline()) return;
    open.markedSeq = seq;
    request("markRead", { conversationId: open.id, seq: String(seq) }).then(
      (frame) => {
        const readSeq = num(frame.markRead && frame.markRead.readSeq);
        if (readSeq > conv.readSeq) conv.readSeq = readSeq;
      },
      () => {
        // Not marked: let the next chance send it again.
        if (open.markedSeq === seq) open.markedSeq = conv.readSeq;
      },
    );
  }

  /** "read by N" under our last message of an open group (receipts of
   *  group messages are not pushed to the sender: asked with read_status). */
  const requestReadBy = debounce(async () => {
    const open = state.open;
    if (!open || !open.loaded || !isOnline()) return;
    const conv = state.conversations.get(open.id);
    if (!conv || conv.kind !== "g") return;
    let seq = 0;
    for (const record of open.bySeq.values()) if (record.fromUser === me() && record.seq > seq) seq = record.seq;
    if (!seq) {
      open.readBy = null;
      return;
    }
    try {
      const frame = await request("readStatus", { groupId: conv.groupId, seq: String(seq) });
      if (state.open !== open) return;
      const status = frame.readStatus || {};
      let count;
      if (status.detailed) {
        count = (status.readers || []).filter((reader) => id(reader) !== me()).length;
      } else {
        // The count may include ourselves (our read position passed it).
        count = num(status.readCount);
        if (count > 0 && conv.readSeq >= seq) count -= 1;
      }
      open.readBy = { seq, count };
      scheduleRender();
    } catch (error) {
      if (!isDisconnected(error)) console.warn(error);
    }
  }, 300);

  // ===================================================================
  // Group panel
  // ===================================================================

  function openGroupConversation() {
    const open = state.open;
    const conv = open && state.conversations.get(open.id);
    return conv && conv.kind === "g" ? conv : null;
  }

  function openGroupPanel() {
    if (!openGroupConversation()) return;
    $("#group-panel").hidden = false;
    $("#members-toggle").setAttribute("aria-expanded", "true");
    loadMembers();
    $("#group-add-name").focus();
  }

  function closeGroupPanel(focusToggle) {
    const panel = $("#group-panel");
    if (panel.hidden) return;
    panel.hidden = true;
    $("#members-toggle").setAttribute("aria-expanded", "false");
    if (focusToggle) $("#members-toggle").focus();
  }

  async function loadMembers() {
    const conv = openGroupConversation();
    const open = state.open;
    if (!conv) return;
    try {
      const frame = await request("listMembers", { groupId: conv.groupId });
      if (state.open !== open) return;
      const roster = frame.group || {};
      rememberGroup(roster.group);
      open.roster = {
        version: num(roster.version),
        members: (roster.members || []).map((m) => ({ user: id(m.user), role: m.role || "MEMBER" })),
      };
      const mine = open.roster.members.find((m) => m.user === me());
      const group = state.groups.get(conv.groupId);
      if (mine && group) group.role = mine.role;
      for (const member of open.roster.members) needUser(member.user);
      scheduleRender();
    } catch (error) {
      if (state.open === open) conversationFailed(open, error);
    }
  }

  async function removeMember(userId) {
    const conv = openGroupConversation();
    if (!conv) return;
    clearError();
    try {
      await request("removeMember", { groupId: conv.groupId, user: userId });
      await loadMembers();
    } catch (error) {
      showError(errorText(error));
    }
  }

  async function addMembers(text) {
    const conv = openGroupConversation();
    if (!conv) return;
    clearError();
    const names = splitNames(text);
    if (!names.length) {
      showError("Enter the name of the user to add.");
      return;
    }
    try {
      const { ids, missing } = await resolveNames(names);
      if (missing.length) {
        showError(noSuchUsers(missing));
        return;
      }
      await request("addMembers", { groupId: conv.groupId, users: [...new Set(ids.values())] });
      $("#group-add-name").value = "";
      await loadMembers();
    } catch (error) {
      showError(errorText(error));
    }
  }

  async function leaveGroup() {
    const conv = openGroupConversation();
    if (!conv) return;
    clearError();
    try {
      await request("leaveGroup", { groupId: conv.groupId });
      state.groups.delete(conv.groupId);
      dropConversation(conv.id);
      $("#new-chat-name").focus();
    } catch (error) {
      showError(errorText(error));
    }
  }

  function roleLabel(role) {
    return { OWNER: "owner", ADMIN: "admin", MEMBER: "member" }[role] || "member";
  }

  // ===================================================================
  // Rendering
  // ===================================================================

  /*
   * State changes call scheduleRender(); the page is brought up to date
   * once, in a microtask (not requestAnimationFrame, which stops in
   * background tabs). Lists are reconciled by key so focus, scroll and
   * unchanged elements stay put.
   */

  let renderQueued = false;

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(renderNow);
  }

  function renderNow() {
    renderQueued = false;
    if (!session) return;
    renderConversations();
    renderConversationView();
    renderMembers();
    renderTitle();
  }

  /** Moves `node` to where `cursor` is (unless it is there); returns the
   *  next cursor. */
  function placeAt(parent, node, cursor) {
    if (node === cursor) return cursor.nextSibling;
    parent.insertBefore(node, cursor);
    return cursor;
  }

  const conversationEls = new Map(); // conversation id → li

  function renderConversations() {
    const ul = $("#conversations");
    const list = sortedConversations();
    // Moving a node blurs it: give the focus back if the focused item moved.
    const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest("li.conversation") : null;
    const seen = new Set();
    let cursor = ul.firstChild;
    for (const conv of list) {
      let li = conversationEls.get(conv.id);
      if (!li) {
        li = buildConversationEl(conv);
        conversationEls.set(conv.id, li);
      }
      updateConversationEl(li, conv);
      cursor = placeAt(ul, li, cursor);
      seen.add(conv.id);
    }
    for (const [conversationId, li] of conversationEls) {
      if (!seen.has(conversationId)) {
        li.remove();
        conversationEls.delete(conversationId);
      }
    }
    $("#conversations-empty").hidden = list.length > 0;
    if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
  }

  function buildConversationEl(conv) {
    const li = el("li", "conversation");
    li.dataset.conversation = conv.id;
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    const avatar = el("span", "conv-avatar");
    avatar.setAttribute("aria-hidden", "true");
    const main = el("div", "conv-main");
    const top = el("div", "conv-top");
    top.append(el("span", "conv-name"), el("span", "conv-time"));
    const bottom = el("div", "conv-bottom");
    const preview = el("span", "conv-preview");
    preview.append(el("span", "conv-last-from"), el("span", "conv-last"));
    const badge = el("span", "conv-unread");
    badge.hidden = true;
    bottom.append(preview, badge);
    main.append(top, bottom);
    li.append(avatar, main);
    return li;
  }

  function updateConversationEl(li, conv) {
    const title = conversationTitle(conv);
    setText(li.querySelector(".conv-avatar"), (title.trim()[0] || "?").toUpperCase());
    li.classList.toggle("group", conv.kind === "g");
    setText(li.querySelector(".conv-name"), title);
    // The preview: the newest of the last stored message and a pending one.
    const pending = newestPending(conv.id);
    let text = "";
    let from = "";
    let time = 0;
    if (pending && (!conv.last || pending.createdMs >= conv.last.time)) {
      text = pending.text;
      from = me();
      time = pending.createdMs;
    } else if (conv.last) {
      text = conv.last.text;
      from = conv.last.fromUser;
      time = conv.last.time;
    }
    let prefix = "";
    if (text && from === me()) prefix = "You: ";
    else if (text && conv.kind === "g") prefix = `${userName(from)}: `;
    setText(li.querySelector(".conv-last-from"), prefix);
    setText(li.querySelector(".conv-last"), oneLine(text));
    setText(li.querySelector(".conv-time"), formatTime(time));
    const badge = li.querySelector(".conv-unread");
    setText(badge, String(conv.unread));
    badge.hidden = conv.unread === 0;
    badge.setAttribute("aria-label", `${conv.unread} unread`);
    const active = !!state.open && state.open.id === conv.id;
    li.classList.toggle("active", active);
    if (active) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
    li.classList.toggle("has-unread", conv.unread > 0);
  }

  function renderConversationView() {
    const open = state.open;
    $("#app").classList.toggle("conv-open", !!open);
    $("#conversation").hidden = !open;
    $("#placeholder").hidden = !!open;
    if (!open) return;
    const conv = state.conversations.get(open.id);
    if (!conv) return;
    setText($("#conversation-title"), conversationTitle(conv));
    $("#members-toggle").hidden = conv.kind !== "g";
    renderMessages(open, conv);
  }

  const messageEls = new Map(); // key → li

  /** One row of the message list, from a stored message or a pending one. */
  function messageView(conv, open, record, pending) {
    const mine = pending ? true : record.fromUser === me();
    let status = "";
    if (pending) status = pending.status === "failed" ? `failed: ${pending.error}` : "sending…";
    else if (mine) status = conv.kind === "p" && record.seq <= conv.peerReadSeq ? "read" : "sent";
    const readBy = !pending && open.readBy && open.readBy.seq === record.seq && open.readBy.count > 0 ? `read by ${open.readBy.count}` : "";
    return {
      seq: pending ? "" : String(record.seq),
      clientMsgId: pending ? pending.clientMsgId : record.clientMsgId,
      from: mine ? session.name : userName(record.fromUser),
      text: pending ? pending.text : record.text,
      time: pending ? pending.createdMs : record.time,
      mine,
      status,
      failed: !!pending && pending.status === "failed",
      readBy,
    };
  }

  function renderMessages(open, conv) {
    const ol = $("#messages");
    const fromBottom = ol.scrollHeight - ol.scrollTop;
    const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 48;

    const rows = [...open.bySeq.values()].sort((a, b) => a.seq - b.seq).map((record) => messageView(conv, open, record, null));
    const pendings = [...state.outbox.values()]
      .filter((p) => p.conversationId === open.id)
      .sort((a, b) => a.createdMs - b.createdMs);
    for (const pending of pendings) rows.push(messageView(conv, open, null, pending));

    const used = new Set();
    let cursor = ol.firstChild;
    for (const row of rows) {
      // Our own messages are keyed by clientMsgId so the "sending…" row
      // stays the same element once acknowledged.
      let key = row.mine && row.clientMsgId ? `c:${row.clientMsgId}` : `s:${row.seq}`;
      if (used.has(key)) key = `s:${row.seq}`; // an id reused after retention
      used.add(key);
      let li = messageEls.get(key);
      if (!li || li.classList.contains("mine") !== row.mine) {
        if (li) li.remove();
        li = buildMessageEl(row.mine);
        messageEls.set(key, li);
      }
      updateMessageEl(li, row);
      cursor = placeAt(ol, li, cursor);
    }
    for (const [key, li] of messageEls) {
      if (!used.has(key)) {
        li.remove();
        messageEls.delete(key);
      }
    }

    if (open.keepFromBottom) {
      ol.scrollTop = ol.scrollHeight - fromBottom;
      open.keepFromBottom = false;
    } else if (open.stickBottom || atBottom) {
      ol.scrollTop = ol.scrollHeight;
      if (open.loaded) open.stickBottom = false;
    }
    // Too few messages to scroll: no scroll event will ask for older ones.
    if (open.loaded && open.hasOlder && !open.loadingOlder && ol.scrollHeight <= ol.clientHeight + 8) {
      setTimeout(loadOlder, 0);
    }
  }

  function buildMessageEl(mine) {
    const li = el("li", mine ? "message mine" : "message");
    const head = el("div", "msg-head");
    head.append(el("span", "msg-from"), el("time", "msg-time"));
    li.append(head, el("div", "msg-body"));
    if (mine) {
      const foot = el("div", "msg-foot");
      const retry = el("button", "msg-retry", "Retry");
      retry.type = "button";
      retry.hidden = true;
      foot.append(el("span", "msg-readby"), el("span", "msg-status"), retry);
      li.append(foot);
    }
    return li;
  }

  function updateMessageEl(li, row) {
    if (li.dataset.seq !== row.seq) li.dataset.seq = row.seq;
    if (li.dataset.clientMsgId !== row.clientMsgId) li.dataset.clientMsgId = row.clientMsgId;
    setText(li.querySelector(".msg-from"), row.from);
    setText(li.querySelector(".msg-body"), row.text);
    const time = li.querySelector(".msg-time");
    setText(time, formatTime(row.time));
    if (row.time) {
      const iso = new Date(row.time).toISOString();
      if (time.dateTime !== iso) {
        time.dateTime = iso;
        time.title = new Date(row.time).toLocaleString();
      }
    }
    if (!row.mine) return;
    setText(li.querySelector(".msg-status"), row.status);
    setText(li.querySelector(".msg-readby"), row.readBy);
    li.querySelector(".msg-retry").hidden = !row.failed;
    li.classList.toggle("pending", !row.seq);
    li.classList.toggle("failed", row.failed);
  }

  let membersSignature = "";

  function renderMembers() {
    const ul = $("#group-members");
    const open = state.open;
    const roster = open && openGroupConversation() ? open.roster : null;
    const members = roster ? roster.members : [];
    const order = { OWNER: 0, ADMIN: 1, MEMBER: 2 };
    const rows = members
      .map((m) => ({ ...m, name: m.user === me() ? session.name : userName(m.user) }))
      .sort((a, b) => (order[a.role] ?? 3) - (order[b.role] ?? 3) || a.name.localeCompare(b.name));
    // Rebuilt only when something shown changed, so a focused button stays.
    const signature = JSON.stringify(rows.map((r) => [r.user, r.role, r.name]));
    if (signature === membersSignature) return;
    membersSignature = signature;
    ul.replaceChildren(
      ...rows.map((row) => {
        const li = el("li", "member");
        li.dataset.user = row.user;
        const name = el("span", "member-name", row.name);
        const role = el("span", "member-role", roleLabel(row.role));
        li.append(name, role);
        if (row.user === me()) {
          name.append(el("span", "member-you", " (you)"));
        } else if (row.role !== "OWNER") {
          // Shown to every member: the server decides (owner and admins may
          // remove; only the owner removes an admin) and its refusal is shown.
          const remove = el("button", "member-remove secondary", "Remove");
          remove.type = "button";
          remove.setAttribute("aria-label", `Remove ${row.name}`);
          li.append(remove);
        }
        return li;
      }),
    );
  }

  function renderTitle() {
    let unread = 0;
    for (const conv of state.conversations.values()) unread += conv.unread;
    const title = unread > 0 ? `(${unread}) Chat` : "Chat";
    if (document.title !== title) document.title = title;
  }

  function setStatus(status) {
    const node = $("#status");
    setText(node, status);
    node.dataset.state = status;
  }

  function showError(text) {
    if (session) setText($("#error"), text);
  }

  function clearError() {
    setText($("#error"), "");
  }

  function showNotice(text) {
    setText($("#notice-text"), text);
    $("#notice").hidden = false;
  }

  function hideNotice() {
    $("#notice").hidden = true;
    setText($("#notice-text"), "");
  }

  // ===================================================================
  // Forms and events
  // ===================================================================

  async function onLoginSubmit(event) {
    event.preventDefault();
    const nameInput = $("#login-name");
    const passwordInput = $("#login-password");
    const errorNode = $("#login-error");
    const submit = $("#login-submit");
    const name = nameInput.value.trim();
    const password = passwordInput.value;
    setText(errorNode, "");
    if (!name || !password) {
      setText(errorNode, "Enter your name and password.");
      return;
    }
    submit.disabled = true;
    try {
      let response;
      try {
        response = await fetch("/login", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name, password }),
          credentials: "same-origin",
          cache: "no-store",
        });
      } catch {
        setText(errorNode, "Cannot reach the server. Check your connection and try again.");
        return;
      }
      const text = await response.text().catch(() => "");
      let body = {};
      try {
        body = JSON.parse(text) || {};
      } catch {
        body = {};
      }
      if (response.ok && typeof body.token === "string" && body.token) {
        // user_id is a JSON number here; read its digits from the text so
        // an id above 2^53 stays exact.
        const match = /"user_id"\s*:\s*"?(\d+)/.exec(text);
        const userId = match ? match[1] : id(body.user_id);
        passwordInput.value = "";
        startSession({ token: body.token, userId, name: body.name || name }, true);
        return;
      }
      setText(errorNode, loginErrorText(response, body));
    } finally {
      submit.disabled = false;
    }
  }

  function loginErrorText(response, body) {
    if (response.status === 401) return "Wrong name or password";
    if (response.status === 429) {
      let ms = num(body.retry_after_ms);
      if (!ms) ms = num(response.headers.get("Retry-After")) * 1000;
      return `Too many attempts, try again in ${Math.max(1, Math.ceil(ms / 1000))} s`;
    }
    if (body && body.message) return body.message;
    if (response.ok) return "Sign-in failed: the server's answer holds no token.";
    return `Sign-in failed (HTTP ${response.status}).`;
  }

  async function onNewChatSubmit(event) {
    event.preventDefault();
    clearError();
    const input = $("#new-chat-name");
    const name = input.value.trim();
    if (!name) {
      showError("Enter the name of the user to chat with.");
      return;
    }
    try {
      const { ids, missing } = await resolveNames([name]);
      if (missing.length) {
        showError(noSuchUsers(missing));
        return;
      }
      const userId = ids.get(name);
      if (userId === me()) {
        showError("That is you: enter someone else's name.");
        return;
      }
      const conv = ensureConversation(privateConversationId(me(), userId));
      if (!conv) return;
      if (!conv.activity) conv.activity = Date.now();
      input.value = "";
      openConversation(conv.id);
    } catch (error) {
      showError(errorText(error));
    }
  }

  async function onNewGroupSubmit(event) {
    event.preventDefault();
    clearError();
    const nameInput = $("#new-group-name");
    const membersInput = $("#new-group-members");
    const name = nameInput.value.trim();
    if (!name) {
      showError("Enter a name for the group.");
      return;
    }
    const names = splitNames(membersInput.value);
    try {
      const { ids, missing } = await resolveNames(names);
      if (missing.length) {
        showError(noSuchUsers(missing));
        return;
      }
      // The creator is the owner; listing oneself as a member is not needed.
      const members = [...new Set(ids.values())].filter((userId) => userId !== me());
      const frame = await request("createGroup", { name, members });
      const roster = frame.group || {};
      const group = rememberGroup(roster.group, "OWNER");
      if (!group) {
        showError("The server did not return the new group.");
        return;
      }
      const conv = ensureConversation(`g:${group.groupId}`);
      conv.activity = Math.max(conv.activity, Date.now());
      nameInput.value = "";
      membersInput.value = "";
      openConversation(conv.id);
      refreshConversations();
    } catch (error) {
      showError(errorText(error));
    }
  }

  function onComposeSubmit(event) {
    event.preventDefault();
    const input = $("#compose-input");
    const text = input.value;
    if (!text.trim() || !state.open) return;
    input.value = "";
    queueMessage(text);
    input.focus();
  }

  function onComposeKeydown(event) {
    // Enter sends; Shift+Enter is a new line; not while an IME composes.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      $("#compose-form").requestSubmit();
    }
  }

  function conversationFromEvent(event) {
    const li = event.target.closest("li.conversation");
    return li ? li.dataset.conversation : null;
  }

  function onBack() {
    const conversationId = state.open ? state.open.id : null;
    closeConversation();
    renderNow();
    const li = conversationId && conversationEls.get(conversationId);
    if (li) li.focus();
  }

  function onDocumentKeydown(event) {
    if (event.key !== "Escape" || !session) return;
    if (!$("#group-panel").hidden) {
      closeGroupPanel(true);
      event.preventDefault();
    } else if ($("#error").textContent) {
      clearError();
    }
  }

  function onVisible() {
    if (!session) return;
    if (!conn.ws) reconnectSoon();
    maybeMarkRead();
  }

  function wireEvents() {
    $("#login-form").addEventListener("submit", onLoginSubmit);
    $("#sign-out").addEventListener("click", () => signOut(""));
    $("#notice-sign-out").addEventListener("click", () => signOut(""));
    $("#new-chat-form").addEventListener("submit", onNewChatSubmit);
    $("#new-group-form").addEventListener("submit", onNewGroupSubmit);

    const conversations = $("#conversations");
    conversations.addEventListener("click", (event) => {
      const conversationId = conversationFromEvent(event);
      if (conversationId) openConversation(conversationId);
    });
    conversations.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      const conversationId = conversationFromEvent(event);
      if (!conversationId) return;
      event.preventDefault();
      openConversation(conversationId);
    });

    $("#back").addEventListener("click", onBack);
    $("#members-toggle").addEventListener("click", () => {
      if ($("#group-panel").hidden) openGroupPanel();
      else closeGroupPanel(true);
    });
    $("#group-panel-close").addEventListener("click", () => closeGroupPanel(true));
    $("#group-members").addEventListener("click", (event) => {
      const button = event.target.closest("button.member-remove");
      const li = button && button.closest("li.member");
      if (li) removeMember(li.dataset.user);
    });
    $("#group-add-form").addEventListener("submit", (event) => {
      event.preventDefault();
      addMembers($("#group-add-name").value);
    });
    $("#group-leave").addEventListener("click", leaveGroup);

    $("#compose-form").addEventListener("submit", onComposeSubmit);
    $("#compose-input").addEventListener("keydown", onComposeKeydown);
    const messages = $("#messages");
    // Whether the reader was at the newest message when they last scrolled:
    // a resize (a phone turned, the window narrowed to one column) keeps
    // them there instead of leaving the newest messages below the fold.
    let atNewest = true;
    messages.addEventListener("scroll", () => {
      atNewest = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 48;
      if (messages.scrollTop < 80) loadOlder();
    }, { passive: true });
    new ResizeObserver(() => {
      if (atNewest) messages.scrollTop = messages.scrollHeight;
    }).observe(messages);
    messages.addEventListener("click", (event) => {
      const button = event.target.closest("button.msg-retry");
      const li = button && button.closest("li.message");
      if (li) retryMessage(li.dataset.clientMsgId);
    });

    document.addEventListener("keydown", onDocumentKeydown);
    document.addEventListener("visibilitychange", () => {
      if (isPageVisible()) onVisible();
    });
    window.addEventListener("focus", onVisible);
    window.addEventListener("online", () => reconnectSoon());
    window.addEventListener("offline", () => {
      // A socket can take minutes to notice a lost network: ask it now.
      if (session && isOnline()) checkConnection(5000);
    });
  }

  // ===================================================================
  // Session
  // ===================================================================

  let refreshTimer = 0;

  function startSession(newSession, fresh) {
    session = newSession;
    if (fresh) {
      storage.set(KEY.token, session.token);
      storage.set(KEY.userId, session.userId);
      storage.set(KEY.name, session.name);
      storage.remove(KEY.open);
    }
    state = freshState();
    state.users.set(session.userId, session.name);
    restoreOutbox();
    setText($("#login-error"), "");
    clearError();
    hideNotice();
    setText($("#me"), session.name);
    $("#login-view").hidden = true;
    $("#app").hidden = false;
    setStatus("offline");
    const reopen = storage.get(KEY.open);
    if (reopen && parseConversationId(reopen)) openConversation(reopen, { focus: false });
    renderNow();
    if (!reopen) $("#new-chat-name").focus();
    conn.failedOpens = 0;
    conn.backoffMs = BACKOFF_MIN_MS;
    connect();
    clearInterval(refreshTimer);
    refreshTimer = setInterval(() => {
      if (!isOnline()) return;
      refreshConversations();
      refreshGroups();
      requestReadBy();
      if (!$("#group-panel").hidden) loadMembers();
    }, REFRESH_INTERVAL_MS);
  }

  /** Ends the session of this tab; `message` is shown on the sign-in form. */
  function signOut(message) {
    const sock = conn.ws;
    session = null;
    conn.ws = null;
    conn.opened = false;
    if (sock) {
      try {
        sock.close(1000, "signed out");
      } catch {
        /* ignore */
      }
    }
    clearTimeout(conn.reconnectTimer);
    conn.reconnectTimer = 0;
    stopPing();
    failAllRequests();
    clearInterval(refreshTimer);
    clearTimeout(groupsUncheckedTimer);
    groupsUncheckedTimer = 0;
    for (const timer of sendRetryTimers.values()) clearTimeout(timer);
    sendRetryTimers.clear();
    sendingConversations.clear();
    clearTimeout(userFetch.timer);
    userFetch.timer = 0;
    userFetch.wanted.clear();
    userFetch.asking.clear();
    userFetch.unknown.clear();
    groupAsked.clear();
    for (const key of [KEY.token, KEY.userId, KEY.name, KEY.pending, KEY.open]) storage.remove(key);
    state = freshState();
    conversationEls.clear();
    messageEls.clear();
    membersSignature = "";
    $("#conversations").replaceChildren();
    $("#messages").replaceChildren();
    $("#group-members").replaceChildren();
    $("#group-panel").hidden = true;
    $("#conversation").hidden = true;
    $("#app").classList.remove("conv-open");
    setText($("#me"), "");
    setText($("#error"), "");
    hideNotice();
    setStatus("offline");
    document.title = "Chat";
    $("#app").hidden = true;
    $("#login-view").hidden = false;
    setText($("#login-error"), message || "");
    $("#login-name").focus();
  }

  function init() {
    wireEvents();
    const token = storage.get(KEY.token);
    const userId = storage.get(KEY.userId);
    const name = storage.get(KEY.name);
    if (token && userId && /^\d+$/.test(userId)) {
      startSession({ token, userId, name: name || `user ${userId}` }, false);
    } else {
      $("#app").hidden = true;
      $("#login-view").hidden = false;
      $("#login-name").focus();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
