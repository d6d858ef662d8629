// The demo inbox: plain JavaScript over the stock socket.io-client (window.io) and the
// public contract only — socket events, and GET /api/workspaces/{id}/contacts.
// Every piece of data reaches the page through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ACK_TIMEOUT_MS = 5000;
const SEND_TIMEOUT_MS = 10000;
// A repeated "typing" is worth sending this often; the server passes one on at most
// every 2 s and ends it by itself after 6 s without news.
const TYPING_EVERY_MS = 2000;
const TYPING_IDLE_MS = 4000;

const state = {
  token: null,
  workspaceId: null,
  me: null,
  socket: null,
  contacts: new Map(), // id → contact
  order: [], // contact ids, as the server lists them
  allContacts: false, // whether `order` holds every contact of the workspace
  unread: new Map(), // contact id → unread inbound messages
  previews: new Map(), // contact id → the last message seen live
  selected: null, // the open conversation
  opening: 0, // bumps with every open, so a late history page is dropped
  messages: new Map(), // id → message, of the open conversation
  readers: new Map(), // user id → read up to seq, in the open conversation
  readUpTo: 0, // the highest seq this page marked read in the open conversation
  typing: new Map(), // user id → timer, in the open conversation
  online: new Set(),
  lastSeq: 0, // the workspace cursor: the join after a reconnect replays what follows
};

// ---- Small helpers ----

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children); // strings become text nodes
  return node;
}

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
  if (text) console.warn(text);
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Outside a secure context (plain http on a LAN address) randomUUID is missing.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The token's `sub`, to tell one's own messages apart. Only read, never trusted:
// the server checks the signature.
function userOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part.padEnd(Math.ceil(part.length / 4) * 4, "="));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)).sub ?? null;
  } catch {
    return null;
  }
}

function initials(name) {
  const words = name.replace(/[^\p{L}\p{N} ]/gu, "").trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "#";
  return words.slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

const AVATAR_COLOURS = ["#0f766e", "#b45309", "#be185d", "#4338ca", "#15803d", "#9333ea", "#c2410c", "#0369a1"];

function avatar(contact) {
  const node = el("span", { class: "avatar", text: initials(contact.name), "aria-hidden": "true" });
  let hash = 0;
  for (const c of contact.id) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  // CSSOM, not a style attribute: the page's CSP allows no inline style.
  node.style.setProperty("--hue", AVATAR_COLOURS[hash % AVATAR_COLOURS.length]);
  return node;
}

function timeOf(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- Session: the token comes in the URL's fragment, which never reaches the server ----

const SESSION_KEY = "livechat.demo.session";

function readSession() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  const workspace = params.get("workspace");
  if (token && workspace) {
    try {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, workspace }));
    } catch {}
    // Out of the address bar (and so out of screenshots and shared screens).
    history.replaceState(null, "", location.pathname + location.search);
    return { token, workspace };
  }
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}

function showSignIn(error) {
  if (state.socket) state.socket.disconnect();
  state.socket = null;
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {}
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("whoami").textContent = "";
  setConnection("offline");
  $("sign-in").hidden = false;
  if (state.workspaceId && !$("workspace").value) $("workspace").value = state.workspaceId;
  $("sign-in-error").textContent = error || "";
  $("sign-in-error").hidden = !error;
  $("token").focus();
}

// ---- Requests ----

// Emits with an ack; the `data` of `{ ok: true, data }`, or null after showing why not.
async function request(event, payload) {
  const socket = state.socket;
  if (!socket) return null;
  let reply;
  try {
    reply = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
  } catch {
    notice(`${event}: no answer from the server`);
    return null;
  }
  if (reply && reply.ok) return reply.data ?? {};
  notice(`${event}: ${reply?.error?.message ?? "refused"} (${reply?.error?.code ?? "?"})`);
  return null;
}

async function loadContacts() {
  let res;
  try {
    res = await fetch(`/api/workspaces/${encodeURIComponent(state.workspaceId)}/contacts?limit=500`, {
      headers: { Authorization: `Bearer ${state.token}` },
      cache: "no-store",
    });
  } catch {
    notice("Could not load the contacts: the server does not answer.");
    return;
  }
  const body = await res.json().catch(() => null);
  if (res.status === 401) return showSignIn("The server refused this token (expired, or signed with another secret).");
  if (res.status === 403) return showSignIn("This user is not a member of that workspace.");
  if (!res.ok || !body) {
    notice(`Could not load the contacts: ${body?.error?.message ?? res.status}`);
    return;
  }
  state.contacts = new Map(body.contacts.map((c) => [c.id, c]));
  state.order = body.contacts.map((c) => c.id);
  state.allContacts = !body.has_more;
  $("contacts-more").hidden = !body.has_more;
  $("contacts-more").textContent = `Showing the first ${body.contacts.length} contacts.`;
  renderContacts();
  if (state.selected) renderThreadHead();
  loadPreviews();
}

let contactsReload = null;
function reloadContactsSoon() {
  clearTimeout(contactsReload);
  contactsReload = setTimeout(loadContacts, 200);
}

async function refreshUnread() {
  const data = await request("unread_counts", { workspaceId: state.workspaceId });
  if (!data) return;
  state.unread = new Map(Object.entries(data.counts));
  renderContacts();
}

let unreadRefresh = null;
function refreshUnreadSoon() {
  clearTimeout(unreadRefresh);
  unreadRefresh = setTimeout(refreshUnread, 150);
}

// ---- Rendering ----

// The last message of the first contacts, for their line in the list: one `history`
// page of one message each, once.
const PREVIEWS = 20;
let previewsLoaded = false;

async function loadPreviews() {
  if (previewsLoaded || !state.socket?.connected || state.order.length === 0) return;
  previewsLoaded = true;
  await Promise.all(
    state.order.slice(0, PREVIEWS).map(async (id) => {
      const page = await request("history", { contactId: id, limit: 1 });
      const last = page?.messages?.[0];
      if (last && !state.previews.has(id)) state.previews.set(id, previewOf(last));
    }),
  );
  renderContacts();
}

function previewOf(m) {
  return m.direction === "inbound" ? m.body : `${whoWrote(m)}: ${m.body}`;
}

function renderContacts() {
  const list = $("contacts");
  const items = state.order.map((id) => {
    const contact = state.contacts.get(id);
    const unread = Number(state.unread.get(id) ?? 0);
    const preview = state.previews.get(id) ?? contact.phone ?? "Web chat";
    const button = el(
      "button",
      {
        type: "button",
        class: unread > 0 ? "contact has-unread" : "contact",
        "data-contact": id,
        "aria-current": id === state.selected ? "true" : "false",
      },
      avatar(contact),
      el("span", { class: "meta" }, el("span", { class: "name", text: contact.name }), el("span", { class: "preview", text: preview })),
    );
    if (unread > 0) button.append(el("span", { class: "badge", text: String(unread), "aria-label": `${unread} unread` }));
    button.addEventListener("click", () => openConversation(id));
    return el("li", {}, button);
  });
  list.replaceChildren(...items);
  if (items.length === 0) list.replaceChildren(el("li", { class: "muted small", text: "No contacts yet." }));
}

function renderPresence() {
  const names = [...state.online].sort((a, b) => (a === state.me ? -1 : b === state.me ? 1 : a.localeCompare(b)));
  $("presence").replaceChildren(
    ...names.map((user) => el("li", { "data-user": user }, user === state.me ? `${user} (you)` : user)),
  );
  if (names.length === 0) $("presence").replaceChildren(el("li", { class: "muted small", text: "Nobody yet." }));
}

function renderThreadHead() {
  const contact = state.contacts.get(state.selected);
  if (!contact) return;
  $("thread-avatar").replaceWith(Object.assign(avatar(contact), { id: "thread-avatar" }));
  $("thread-name").textContent = contact.name;
  $("thread-sub").textContent = contact.phone ? `SMS · ${contact.phone}` : "Web chat";
}

function whoWrote(m) {
  if (m.direction === "inbound") return state.contacts.get(m.contact_id)?.name ?? m.sender ?? "Contact";
  if (m.sender && m.sender === state.me) return "You";
  return m.sender ?? "Agent";
}

// Which message each read receipt belongs under: per reader (told live by
// `messages_read`), the newest outbound message up to where they read that they did
// not write themselves.
function receipts(sorted) {
  const byMessage = new Map();
  for (const [reader, upTo] of state.readers) {
    const target = sorted.findLast((m) => m.direction === "outbound" && m.seq <= upTo && m.sender !== reader);
    if (!target) continue;
    if (!byMessage.has(target.id)) byMessage.set(target.id, []);
    byMessage.get(target.id).push(reader);
  }
  return byMessage;
}

function renderMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  const sorted = [...state.messages.values()].sort((a, b) => a.seq - b.seq);
  const readBy = receipts(sorted);
  list.replaceChildren(
    ...sorted.map((m) => {
      const colleague = m.direction === "outbound" && m.sender !== state.me;
      const item = el(
        "li",
        { class: `message ${m.direction}${colleague ? " colleague" : ""}`, "data-seq": String(m.seq) },
        el("span", { class: "who", text: `${whoWrote(m)} · ${timeOf(m.created_at)}` }),
        el("span", { class: "bubble", text: m.body }),
      );
      const readers = readBy.get(m.id);
      if (readers) {
        item.append(el("span", { class: "receipt", text: `Read by ${readers.sort().join(", ")}` }));
      }
      return item;
    }),
  );
  if (sorted.length === 0) list.replaceChildren(el("li", { class: "day", text: "No messages yet. Say hello!" }));
  if (atBottom || list.dataset.fresh === "1") {
    list.scrollTop = list.scrollHeight;
    delete list.dataset.fresh;
  }
}

function renderTyping() {
  const names = [...state.typing.keys()].sort();
  const line = $("typing");
  line.hidden = names.length === 0;
  line.textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(" and ")} are typing…`;
}

function setConnection(status, detail) {
  const c = $("connection");
  c.dataset.state = status;
  c.textContent = { online: "connected", connecting: "reconnecting…", offline: "offline" }[status];
  c.title = detail || "";
}

// ---- The open conversation ----

async function openConversation(id) {
  const previous = state.selected;
  if (previous !== id) {
    stopTyping();
    if (previous) state.socket?.emit("leave_contact", { contactId: previous });
    state.selected = id;
    state.messages = new Map();
    state.readers = new Map();
    state.readUpTo = 0;
    for (const timer of state.typing.values()) clearTimeout(timer);
    state.typing = new Map();
    $("send-error").hidden = true;
    $("empty").hidden = true;
    $("thread").hidden = false;
    $("messages").dataset.fresh = "1";
    renderThreadHead();
    renderMessages();
    renderTyping();
    renderContacts();
  }
  const opening = ++state.opening;
  // Joined first, so that nothing sent while the history loads is missed: a message
  // that comes both ways is kept once, by id.
  if (!(await request("join_contact", { contactId: id }))) return;
  const page = await request("history", { contactId: id, limit: 50 });
  if (!page || opening !== state.opening) return;
  for (const m of page.messages) if (!state.messages.has(m.id)) state.messages.set(m.id, m);
  renderMessages();
  markReadIfVisible();
  $("body").focus();
}

function addMessage(m) {
  const known = state.messages.get(m.id);
  state.messages.set(m.id, known ? { ...known, ...m } : m);
  renderMessages();
}

// Marks the open conversation read up to its newest message someone else wrote, when
// the page is in view: that is what tells the others "Read by …".
function markReadIfVisible() {
  if (!state.selected || document.visibilityState !== "visible") return;
  let upTo = 0;
  for (const m of state.messages.values()) {
    if (!m.is_read && m.sender !== state.me && m.seq > upTo) upTo = m.seq;
  }
  if (upTo <= state.readUpTo) return;
  state.readUpTo = upTo;
  request("mark_read", { contactId: state.selected, upTo });
}

// ---- Typing ----

let typingSentAt = 0;
let typingIn = null; // the conversation the others were told about
let typingIdle = null;

function typed() {
  if (!state.selected || !state.socket) return;
  if ($("body").value.trim() === "") return stopTyping();
  const now = Date.now();
  if (typingIn !== state.selected || now - typingSentAt >= TYPING_EVERY_MS) {
    typingSentAt = now;
    typingIn = state.selected;
    state.socket.emit("typing", { contactId: typingIn, isTyping: true });
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingIn && state.socket) state.socket.emit("typing", { contactId: typingIn, isTyping: false });
  typingIn = null;
  typingSentAt = 0;
}

// ---- Sending ----

let unconfirmed = null; // { contactId, body, clientId } of a send without an answer

async function send() {
  const input = $("body");
  const body = input.value.trim();
  const contactId = state.selected;
  if (!body || !contactId || !state.socket) return;
  // The same text again after a failure is a retry: the same clientId stores it once.
  const retry = unconfirmed && unconfirmed.contactId === contactId && unconfirmed.body === body;
  const clientId = retry ? unconfirmed.clientId : newClientId();
  unconfirmed = { contactId, body, clientId };
  stopTyping();
  const error = $("send-error");
  error.hidden = true;
  let reply;
  try {
    reply = await state.socket.timeout(SEND_TIMEOUT_MS).emitWithAck("send_message", { contactId, body, clientId });
  } catch {
    error.textContent = "No answer from the server. Press Enter to try again; it will not be sent twice.";
    error.hidden = false;
    return;
  }
  if (!reply?.ok) {
    const e = reply?.error ?? {};
    const wait = e.retry_after_ms ? ` Try again in ${Math.ceil(e.retry_after_ms / 1000)} s.` : "";
    error.textContent = `Not sent: ${e.message ?? "refused"} (${e.code ?? "?"}).${wait}`;
    error.hidden = false;
    return;
  }
  unconfirmed = null;
  if (input.value.trim() === body) input.value = "";
  if (state.selected === contactId) addMessage(reply.data);
}

// ---- The socket ----

function connect() {
  // The stock client, same origin; the token goes in the handshake's auth.
  const socket = io({ auth: { token: state.token } });
  state.socket = socket;
  setConnection("connecting");

  socket.on("connect", async () => {
    setConnection("online");
    notice("");
    const join = { workspaceId: state.workspaceId };
    // After a reconnect: every message after the last one seen is replayed first.
    if (state.lastSeq > 0) join.after = state.lastSeq;
    const joined = await request("join_workspace", join);
    if (!joined) return;
    await refreshUnread();
    loadPreviews();
    if (state.selected) openConversation(state.selected);
  });

  socket.on("connect_error", (err) => {
    if (err.message === "unauthorized") {
      showSignIn("The server refused this token (expired, or signed with another secret).");
      return;
    }
    setConnection("connecting", err.message);
    // A refusal by the server (a limit) is not retried by the client on its own.
    if (!socket.active) setTimeout(() => socket.connect(), 3000);
  });

  socket.on("disconnect", (reason) => {
    setConnection("connecting", reason);
    state.online.clear();
    renderPresence();
    for (const timer of state.typing.values()) clearTimeout(timer);
    state.typing.clear();
    renderTyping();
    // The server closed it (a token that expired, a client that fell behind):
    // connect again; an expired token then shows the sign-in form.
    if (reason === "io server disconnect") setTimeout(() => socket.connect(), 1000);
  });

  // The server is shutting down: it answers what it took, then closes the
  // connection, and the client reconnects by itself (to another node behind a load
  // balancer), catching up from the last seq.
  socket.on("livechat:draining", () => {
    setConnection("connecting", "server restarting");
  });

  socket.on("new_message", (m) => {
    if (m.workspace_id !== state.workspaceId) return;
    state.lastSeq = Math.max(state.lastSeq, m.seq);
    // A conversation that is not listed is a new contact (unless the list is cut).
    if (!state.contacts.has(m.contact_id) && state.allContacts) reloadContactsSoon();
    state.previews.set(m.contact_id, previewOf(m));
    if (m.contact_id === state.selected) {
      if (state.typing.has(m.sender)) {
        clearTimeout(state.typing.get(m.sender));
        state.typing.delete(m.sender);
        renderTyping();
      }
      addMessage(m);
      markReadIfVisible();
    } else if (m.direction === "inbound" && !m.is_read) {
      state.unread.set(m.contact_id, Number(state.unread.get(m.contact_id) ?? 0) + 1);
    }
    renderContacts();
  });

  socket.on("message_updated", (m) => {
    if (m.contact_id === state.selected && state.messages.has(m.id)) addMessage(m);
  });

  socket.on("messages_read", (r) => {
    if (r.workspace_id !== state.workspaceId) return;
    refreshUnreadSoon();
    if (r.contact_id !== state.selected) return;
    for (const m of state.messages.values()) if (m.seq <= r.up_to) m.is_read = true;
    if (r.user_id !== state.me) state.readers.set(r.user_id, Math.max(state.readers.get(r.user_id) ?? 0, r.up_to));
    renderMessages();
  });

  socket.on("typing", (t) => {
    if (t.contact_id !== state.selected || t.user_id === state.me) return;
    clearTimeout(state.typing.get(t.user_id));
    if (t.is_typing) {
      // The server says when it ends; this only covers a lost connection.
      const expire = () => {
        state.typing.delete(t.user_id);
        renderTyping();
      };
      state.typing.set(t.user_id, setTimeout(expire, 8000));
    } else {
      state.typing.delete(t.user_id);
    }
    renderTyping();
  });

  socket.on("presence", (p) => {
    if (p.workspace_id !== state.workspaceId) return;
    if (Array.isArray(p.online)) state.online = new Set(p.online);
    else if (p.status === "online") state.online.add(p.user_id);
    else state.online.delete(p.user_id);
    renderPresence();
  });

  socket.on("livechat:recovery", (r) => {
    // More was missed than the server replays: load the numbers and the open page again.
    if (r.complete === false) {
      refreshUnread();
      if (state.selected) openConversation(state.selected);
    }
  });

  socket.on("livechat:error", (e) => notice(`${e.event ?? "request"}: ${e.message} (${e.code})`));
}

// ---- Start ----

function start() {
  const session = readSession();
  if (!session?.token || !session?.workspace) return showSignIn();
  state.token = session.token;
  state.workspaceId = session.workspace;
  state.me = userOf(session.token);
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  $("whoami").textContent = state.me ? `Signed in as ${state.me}` : "";
  renderPresence();
  loadContacts();
  connect();
}

$("sign-in-form").addEventListener("submit", (e) => {
  e.preventDefault();
  // Straight to this tab's storage: a token in the address would stay in the history.
  try {
    sessionStorage.setItem(
      SESSION_KEY,
      JSON.stringify({ token: $("token").value.trim(), workspace: $("workspace").value.trim() }),
    );
  } catch {}
  start();
});
$("sign-out").addEventListener("click", () => showSignIn());
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
$("body").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
$("body").addEventListener("input", typed);
$("body").addEventListener("blur", stopTyping);
document.addEventListener("visibilitychange", markReadIfVisible);
window.addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).get("token")) location.reload();
});

if (typeof io !== "function") {
  document.body.textContent = "The socket.io client did not load (/assets/socket.io.min.js).";
} else {
  start();
}
