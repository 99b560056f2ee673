// msgd webmail: one ES module, no build step, talking JMAP (RFC 8620,
// RFC 8621, RFC 9610) to the same origin. See docs/webmail.md ("The page").
//
// Rules kept here: no inline script or style (the CSP forbids both); message
// HTML is only ever the server-sanitized `msgd:sanitizedHtml`, inserted via
// an inert <template>; everything else reaches the DOM as text.

const CORE = "urn:ietf:params:jmap:core";
const MAIL = "urn:ietf:params:jmap:mail";
const SUBMISSION = "urn:ietf:params:jmap:submission";
const CONTACTS = "urn:ietf:params:jmap:contacts";
const WEBMAIL = "urn:msgd:params:jmap:webmail";
const PAGE = 50;
const ROLE_ORDER = ["inbox", "drafts", "sent", "trash", "junk"];
const ROLE_NAMES = { inbox: "Inbox", drafts: "Drafts", sent: "Sent", trash: "Trash", junk: "Junk", archive: "Archive" };

const $ = (id) => document.getElementById(id);
const S = {
  session: null, accountId: null, csrf: "", user: "", using: [CORE, MAIL],
  mailboxes: [], byId: new Map(), byRole: {}, current: null,
  search: "", position: 0, total: 0, list: [], threads: new Map(), selected: -1,
  open: null, identity: null,
  compose: null, contacts: [], addressBookId: null, refreshTimer: null, directory: null,
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

let statusTimer = null;
function status(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
  s.setAttribute("role", isError ? "alert" : "status");
  clearTimeout(statusTimer);
  if (text && !isError) statusTimer = setTimeout(() => { s.textContent = ""; }, 4000);
}

function fmtAddr(list) {
  return (list || []).map((a) => (a.name ? `${a.name} <${a.email}>` : a.email)).join(", ");
}
function shortAddr(list) {
  return (list || []).map((a) => a.name || a.email).join(", ");
}
function fmtDate(iso, long = false) {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  if (long) return d.toLocaleString();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { year: d.getFullYear() === now.getFullYear() ? undefined : "numeric", month: "short", day: "numeric" });
}
function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// Parses "Ann <ann@x>, bob@y" into JMAP EmailAddress objects.
export function parseAddresses(text) {
  const out = [];
  for (const raw of text.split(/[,;]/)) {
    const part = raw.trim();
    if (!part) continue;
    const m = part.match(/^(.*)<([^<>\s]+@[^<>\s]+)>$/);
    if (m) out.push({ name: m[1].trim().replace(/^"|"$/g, "") || null, email: m[2] });
    else if (/^[^\s@]+@[^\s@]+$/.test(part)) out.push({ name: null, email: part });
    else throw new Error(`Not an address: ${part}`);
  }
  return out;
}

function expand(template, vars) {
  return template.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(vars[k] ?? ""));
}

export function sameOrigin(url) {
  return url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, "") || "/";
}

function downloadUrl(blobId, name, type) {
  return expand(S.session.downloadUrl, {
    accountId: S.accountId, blobId, name: name || "attachment", type: type || "application/octet-stream",
  });
}

// ---------------------------------------------------------------- JMAP

class JmapError extends Error {}

async function http(url, init = {}) {
  const headers = new Headers(init.headers || {});
  if (init.method && init.method !== "GET") headers.set("X-CSRF-Token", S.csrf);
  const r = await fetch(url, { credentials: "same-origin", ...init, headers });
  if (r.status === 401) {
    location.assign("/login");
    throw new JmapError("Your session has ended; please log in again.");
  }
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`;
    try { const p = await r.json(); detail = p.detail || p.title || p.type || detail; } catch (_) { /* not JSON */ }
    throw new JmapError(r.status === 503 ? "The mail store is not reachable right now." : detail);
  }
  return r;
}

// Runs method calls; returns {callId: [name, args]}. Method-level errors throw.
async function jmap(calls) {
  const r = await http(S.session.apiUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ using: S.using, methodCalls: calls }),
  });
  const body = await r.json();
  const out = {};
  for (const [name, args, id] of body.methodResponses) {
    if (name === "error") throw new JmapError(`${args.type}${args.description ? ": " + args.description : ""}`);
    out[id] = [name, args];
  }
  return out;
}

function checkSet(args, what) {
  for (const kind of ["notCreated", "notUpdated", "notDestroyed"]) {
    const bad = args[kind];
    if (bad && Object.keys(bad).length) {
      const e = Object.values(bad)[0];
      throw new JmapError(`${what}: ${e.type}${e.description ? " (" + e.description + ")" : ""}`);
    }
  }
  return args;
}

async function upload(file) {
  const url = expand(S.session.uploadUrl, { accountId: S.accountId });
  const r = await http(url, {
    method: "POST",
    headers: { "Content-Type": file.type || "application/octet-stream" },
    body: file,
  });
  return r.json();
}

// ---------------------------------------------------------------- start

async function start() {
  const info = await (await http("/session-info")).json();
  S.csrf = info.csrfToken ?? info.csrf;
  S.user = info.user;
  $("user").textContent = info.user;
  S.session = await (await http(info.sessionUrl || "/jmap/session")).json();
  // The page talks to its own origin only (the CSP says so too): the store
  // may name itself by another base URL than the one the browser used.
  for (const k of ["apiUrl", "uploadUrl", "downloadUrl", "eventSourceUrl"]) {
    if (typeof S.session[k] === "string") S.session[k] = sameOrigin(S.session[k]);
  }
  S.accountId = S.session.primaryAccounts[MAIL];
  const caps = S.session.capabilities;
  for (const c of [SUBMISSION, CONTACTS, WEBMAIL]) if (c in caps) S.using.push(c);
  await loadMailboxes();
  S.current = (S.byRole.inbox || S.mailboxes[0] || {}).id || null;
  renderMailboxes();
  await loadList();
  loadIdentity().catch((e) => status(e.message, true));
  listen();
}

async function loadIdentity() {
  if (!S.using.includes(SUBMISSION)) return;
  const r = await jmap([["Identity/get", { accountId: S.accountId }, "i"]]);
  const ids = r.i[1].list;
  S.identity = ids.find((i) => i.email.toLowerCase() === S.user.toLowerCase()) || ids[0] || null;
}

// ---------------------------------------------------------------- mailboxes

async function loadMailboxes() {
  const r = await jmap([["Mailbox/get", { accountId: S.accountId }, "m"]]);
  const list = r.m[1].list;
  const rank = (m) => (m.role && ROLE_ORDER.includes(m.role) ? ROLE_ORDER.indexOf(m.role) : ROLE_ORDER.length);
  list.sort((a, b) => rank(a) - rank(b) || (a.sortOrder || 0) - (b.sortOrder || 0) || a.name.localeCompare(b.name));
  S.mailboxes = list;
  S.byId = new Map(list.map((m) => [m.id, m]));
  S.byRole = {};
  for (const m of list) if (m.role) S.byRole[m.role] = m;
}

function mailboxLabel(m) {
  return m.role && ROLE_NAMES[m.role] && m.name.toLowerCase() === m.role ? ROLE_NAMES[m.role] : m.name;
}

function renderMailboxes() {
  const ul = $("mailbox-list");
  ul.replaceChildren();
  for (const m of S.mailboxes) {
    const unread = m.unreadEmails || 0;
    const a = el("a", {
      href: "#", "data-id": m.id, "data-role": m.role || null,
      class: `mailbox${m.id === S.current ? " current" : ""}${unread ? " has-unread" : ""}`,
      "aria-current": m.id === S.current ? "page" : null,
      onclick: (ev) => { ev.preventDefault(); selectMailbox(m.id); },
    }, el("span", { class: "name", text: mailboxLabel(m) }),
    unread ? el("span", { class: "count", text: String(unread), "aria-label": `${unread} unread` }) : null);
    ul.append(el("li", {}, a));
  }
  const sel = $("move-select");
  sel.replaceChildren(el("option", { value: "", text: "Move to…" }));
  for (const m of S.mailboxes) sel.append(el("option", { value: m.id, text: mailboxLabel(m) }));
}

async function selectMailbox(id) {
  S.current = id;
  S.position = 0;
  S.search = "";
  $("search-input").value = "";
  document.body.classList.remove("nav-open");
  $("menu-toggle").setAttribute("aria-expanded", "false");
  renderMailboxes();
  showView("list");
  await loadList();
  $("message-list").focus();
}

// ---------------------------------------------------------------- list

const LIST_PROPS = ["threadId", "mailboxIds", "keywords", "from", "to", "subject", "receivedAt", "preview", "hasAttachment", "size"];

async function loadList() {
  if (!S.current) return;
  const filter = { inMailbox: S.current };
  if (S.search) filter.text = S.search;
  const r = await jmap([
    ["Email/query", {
      accountId: S.accountId, filter, collapseThreads: true, position: S.position, limit: PAGE,
      calculateTotal: true, sort: [{ property: "receivedAt", isAscending: false }],
    }, "q"],
    ["Email/get", {
      accountId: S.accountId, properties: LIST_PROPS,
      "#ids": { resultOf: "q", name: "Email/query", path: "/ids" },
    }, "g"],
    ["Thread/get", {
      accountId: S.accountId,
      "#ids": { resultOf: "g", name: "Email/get", path: "/list/*/threadId" },
    }, "t"],
  ]);
  const q = r.q[1];
  const byId = new Map(r.g[1].list.map((e) => [e.id, e]));
  S.total = q.total ?? q.ids.length;
  const keepId = S.list[S.selected]?.id;
  S.list = q.ids.map((id) => byId.get(id)).filter(Boolean);
  S.threads = new Map(r.t[1].list.map((t) => [t.id, t.emailIds]));
  S.selected = Math.max(0, S.list.findIndex((e) => e.id === keepId));
  if (!S.list.length) S.selected = -1;
  renderList();
}

function renderList() {
  const m = S.byId.get(S.current);
  $("list-title").textContent = S.search ? `Search: ${S.search}` : (m ? mailboxLabel(m) : "");
  const first = S.total ? S.position + 1 : 0;
  $("page-info").textContent = `${first}–${S.position + S.list.length} of ${S.total}`;
  $("prev-page").disabled = S.position === 0;
  $("next-page").disabled = S.position + S.list.length >= S.total;
  const ul = $("message-list");
  ul.replaceChildren();
  $("list-empty").hidden = S.list.length > 0;
  const isSentLike = m && (m.role === "sent" || m.role === "drafts");
  S.list.forEach((e, i) => {
    const kw = e.keywords || {};
    const n = (S.threads.get(e.threadId) || []).length;
    const li = el("li", {
      role: "option", id: `msg-${e.id}`, "data-id": e.id, tabindex: "-1",
      class: `msg${kw.$seen ? "" : " unread"}${kw.$flagged ? " flagged" : ""}${i === S.selected ? " selected" : ""}`,
      "aria-selected": i === S.selected ? "true" : "false",
      onclick: () => { S.selected = i; guard(openSelected)(); },
    },
    el("span", { class: "from", text: (isSentLike ? shortAddr(e.to) : shortAddr(e.from)) || "(no sender)" }),
    n > 1 ? el("span", { class: "thread-count", text: String(n), title: `${n} messages in this conversation` }) : null,
    el("span", { class: "date", text: fmtDate(e.receivedAt) }),
    el("span", { class: "subject", text: e.subject || "(no subject)" }),
    e.hasAttachment ? el("span", { class: "clip", title: "Has attachments" }, el("span", { class: "sr", text: "Has attachments" })) : null,
    kw.$flagged ? el("span", { class: "flag", title: "Flagged", text: "★" }) : null,
    el("span", { class: "preview", text: e.preview || "" }));
    ul.append(li);
  });
  if (S.selected >= 0) ul.setAttribute("aria-activedescendant", `msg-${S.list[S.selected].id}`);
  else ul.removeAttribute("aria-activedescendant");
}

function moveSelection(delta) {
  if (!S.list.length) return;
  S.selected = Math.min(S.list.length - 1, Math.max(0, S.selected + delta));
  renderList();
  $(`msg-${S.list[S.selected].id}`)?.scrollIntoView({ block: "nearest" });
  if (!$("reader").hidden) guard(openSelected)();
}

// ---------------------------------------------------------------- reader

const READ_PROPS = [
  "threadId", "mailboxIds", "keywords", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "receivedAt",
  "messageId", "references", "inReplyTo", "textBody", "htmlBody", "attachments", "bodyValues", "preview",
];

async function fetchEmails(ids, withImages = false) {
  const props = [...READ_PROPS];
  if (S.using.includes(WEBMAIL)) props.push(withImages ? "msgd:sanitizedHtmlWithImages" : "msgd:sanitizedHtml", "msgd:remoteImages");
  let r;
  try {
    r = await jmap([["Email/get", {
      accountId: S.accountId, ids, properties: props, fetchTextBodyValues: true, maxBodyValueBytes: 1024 * 1024,
    }, "g"]]);
  } catch (e) {
    // A server that announces the capability but does not know the
    // properties: fall back to text bodies rather than fail.
    if (!S.using.includes(WEBMAIL) || !/invalidArguments/.test(e.message)) throw e;
    S.using = S.using.filter((c) => c !== WEBMAIL);
    return fetchEmails(ids, withImages);
  }
  return r.g[1].list;
}

async function openSelected() {
  const summary = S.list[S.selected];
  if (!summary) return;
  const threadIds = S.threads.get(summary.threadId) || [summary.id];
  const trash = S.byRole.trash?.id;
  // The conversation, without what was deleted (unless reading the Trash).
  let emails = await fetchEmails(threadIds);
  emails = emails.filter((e) => e.id === summary.id || S.current === trash || !e.mailboxIds[trash]);
  emails.sort((a, b) => (a.receivedAt < b.receivedAt ? -1 : 1));
  S.open = emails.find((e) => e.id === summary.id) || emails[emails.length - 1];
  renderThread(emails);
  showView("read");
  const unseen = emails.filter((e) => !(e.keywords || {}).$seen).map((e) => e.id);
  if (unseen.length) {
    // Marking read is a side effect: a failure is shown, the message stays open.
    await setKeyword(unseen, "$seen", true, false).catch((e) => status(e.message, true));
  }
}

function textOf(e) {
  return (e.textBody || []).map((p) => e.bodyValues?.[p.partId]?.value ?? "").join("\n");
}

function renderBody(e, container, withImages) {
  container.replaceChildren();
  const html = withImages ? e["msgd:sanitizedHtmlWithImages"] : e["msgd:sanitizedHtml"];
  const hasHtml = (e.htmlBody || []).some((p) => p.type === "text/html");
  if (typeof html === "string" && hasHtml) {
    const t = document.createElement("template");
    t.innerHTML = html; // already sanitized on the server; <template> keeps it inert
    const cids = new Map((e.attachments || []).filter((a) => a.cid).map((a) => [a.cid, a]));
    for (const img of t.content.querySelectorAll("img[src^='cid:']")) {
      const a = cids.get(img.getAttribute("src").slice(4));
      if (a) img.setAttribute("src", downloadUrl(a.blobId, a.name, a.type));
      else img.removeAttribute("src");
    }
    container.append(el("div", { class: "html-body" }, document.importNode(t.content, true)));
    const n = e["msgd:remoteImages"] || 0;
    if (n && !withImages) {
      container.prepend(el("p", { class: "images-bar" },
        `${n} remote image${n === 1 ? " was" : "s were"} blocked. `,
        el("button", {
          type: "button", class: "show-images",
          onclick: async () => { const [full] = await fetchEmails([e.id], true); renderBody(full, container, true); },
        }, "Show images")));
    }
  } else {
    container.append(el("pre", { class: "text-body", text: textOf(e) }));
  }
}

function renderThread(emails) {
  const box = $("thread");
  box.replaceChildren();
  const subject = S.open?.subject || "(no subject)";
  box.append(el("h2", { id: "subject", tabindex: "-1", text: subject }));
  for (const e of emails) {
    const isOpen = e.id === S.open.id;
    const body = el("div", { class: "body" });
    const atts = (e.attachments || []).filter((a) => a.disposition !== "inline" || !a.cid);
    const art = el("article", { class: `email${isOpen ? " open" : ""}`, "data-id": e.id },
      el("header", {},
        el("div", { class: "from" }, el("strong", { text: shortAddr(e.from) || "(no sender)" }), " ",
          el("span", { class: "muted", text: (e.from || []).map((a) => `<${a.email}>`).join(" ") })),
        el("div", { class: "muted small", text: `To: ${fmtAddr(e.to)}${e.cc?.length ? ` · Cc: ${fmtAddr(e.cc)}` : ""}` }),
        el("time", { class: "muted small", datetime: e.receivedAt, text: fmtDate(e.sentAt || e.receivedAt, true) })),
      body,
      atts.length ? el("ul", { class: "attachments", "aria-label": "Attachments" },
        ...atts.map((a) => el("li", {}, el("a", {
          href: downloadUrl(a.blobId, a.name, a.type), download: a.name || "attachment", class: "attachment",
        }, el("span", { class: "clip", "aria-hidden": "true" }), `${a.name || "attachment"} (${fmtSize(a.size || 0)})`)))) : null);
    box.append(art);
    if (isOpen) renderBody(e, body, false);
    else {
      body.append(el("button", {
        type: "button", class: "link", text: e.preview || "(show)",
        onclick: () => { S.open = e; renderThread(emails); },
      }));
    }
  }
  const kw = S.open.keywords || {};
  $("flag-btn").setAttribute("aria-pressed", kw.$flagged ? "true" : "false");
  $("flag-btn").textContent = kw.$flagged ? "Unflag" : "Flag";
  $("unread-btn").textContent = kw.$seen === false ? "Mark read" : "Mark unread";
  $("edit-draft-btn").hidden = !(kw.$draft);
  $("move-select").value = "";
}

// ---------------------------------------------------------------- actions

async function setKeyword(ids, keyword, value, reload = true) {
  const update = {};
  for (const id of ids) update[id] = { [`keywords/${keyword}`]: value ? true : null };
  const r = await jmap([["Email/set", { accountId: S.accountId, update }, "s"]]);
  checkSet(r.s[1], "Update");
  for (const e of S.list) if (ids.includes(e.id)) { e.keywords = { ...e.keywords }; if (value) e.keywords[keyword] = true; else delete e.keywords[keyword]; }
  if (S.open && ids.includes(S.open.id)) { S.open.keywords = { ...S.open.keywords, [keyword]: value || undefined }; if (!value) delete S.open.keywords[keyword]; }
  if (reload) await refresh();
  else renderList();
}

async function toggleRead() {
  const e = S.open || S.list[S.selected];
  if (!e) return;
  const seen = !!(e.keywords || {}).$seen;
  await setKeyword([e.id], "$seen", !seen);
  status(seen ? "Marked unread" : "Marked read");
  if (!$("reader").hidden) { $("unread-btn").textContent = seen ? "Mark read" : "Mark unread"; e.keywords.$seen = !seen || undefined; }
}

async function toggleFlag() {
  const e = S.open || S.list[S.selected];
  if (!e) return;
  const flagged = !!(e.keywords || {}).$flagged;
  await setKeyword([e.id], "$flagged", !flagged);
  if (!$("reader").hidden) {
    $("flag-btn").setAttribute("aria-pressed", flagged ? "false" : "true");
    $("flag-btn").textContent = flagged ? "Flag" : "Unflag";
  }
  status(flagged ? "Flag removed" : "Flagged");
}

async function moveTo(mailboxId) {
  const e = S.open || S.list[S.selected];
  if (!e || !mailboxId) return;
  const r = await jmap([["Email/set", { accountId: S.accountId, update: { [e.id]: { mailboxIds: { [mailboxId]: true } } } }, "s"]]);
  checkSet(r.s[1], "Move");
  status(`Moved to ${mailboxLabel(S.byId.get(mailboxId))}`);
  afterRemoval();
}

async function deleteCurrent() {
  const e = S.open || S.list[S.selected];
  if (!e) return;
  const trash = S.byRole.trash?.id;
  if (trash && S.current !== trash) {
    const r = await jmap([["Email/set", { accountId: S.accountId, update: { [e.id]: { mailboxIds: { [trash]: true } } } }, "s"]]);
    checkSet(r.s[1], "Delete");
    status("Moved to Trash");
  } else {
    if (!confirm("Delete this message for good?")) return;
    const r = await jmap([["Email/set", { accountId: S.accountId, destroy: [e.id] }, "s"]]);
    checkSet(r.s[1], "Delete");
    status("Deleted");
  }
  afterRemoval();
}

async function afterRemoval() {
  S.open = null;
  showView("list");
  await refresh();
  $("message-list").focus();
}

async function refresh() {
  await loadMailboxes();
  renderMailboxes();
  await loadList();
}

// ---------------------------------------------------------------- compose

function quote(text) {
  return text.split("\n").map((l) => `> ${l}`).join("\n");
}

function openCompose(init = {}) {
  S.compose = {
    draftId: init.draftId || null, inReplyTo: init.inReplyTo || null, references: init.references || null,
    attachments: init.attachments || [],
  };
  $("c-to").value = init.to || "";
  $("c-cc").value = init.cc || "";
  $("c-bcc").value = init.bcc || "";
  $("c-subject").value = init.subject || "";
  $("c-body").value = init.body || "";
  $("c-files").value = "";
  renderComposeAttachments();
  showView("compose");
  (init.to ? $("c-body") : $("c-to")).focus();
  if (init.to) $("c-body").setSelectionRange(0, 0);
}

function renderComposeAttachments() {
  const ul = $("c-attachments");
  ul.replaceChildren();
  for (const [i, a] of S.compose.attachments.entries()) {
    ul.append(el("li", {}, el("span", { class: "clip", "aria-hidden": "true" }), `${a.name} (${fmtSize(a.size || 0)}) `, el("button", {
      type: "button", class: "link", "aria-label": `Remove ${a.name}`, text: "remove",
      onclick: () => { S.compose.attachments.splice(i, 1); renderComposeAttachments(); },
    })));
  }
}

function prefix(p, subject) {
  const s = subject || "";
  return s.toLowerCase().startsWith(p.toLowerCase()) ? s : `${p} ${s}`;
}

function me() {
  return (S.identity?.email || S.user).toLowerCase();
}

function replyInit(all) {
  const e = S.open;
  const to = e.replyTo?.length ? e.replyTo : e.from || [];
  let cc = [];
  if (all) {
    const seen = new Set(to.map((a) => a.email.toLowerCase()).concat([me()]));
    for (const a of [...(e.to || []), ...(e.cc || [])]) {
      if (!seen.has(a.email.toLowerCase())) { seen.add(a.email.toLowerCase()); cc.push(a); }
    }
  }
  return {
    to: fmtAddr(to), cc: fmtAddr(cc), subject: prefix("Re:", e.subject),
    body: `\n\nOn ${fmtDate(e.sentAt || e.receivedAt, true)}, ${fmtAddr(e.from)} wrote:\n${quote(textOf(e))}`,
    inReplyTo: e.messageId || null,
    references: [...(e.references || []), ...(e.messageId || [])],
  };
}

function forwardInit() {
  const e = S.open;
  return {
    subject: prefix("Fwd:", e.subject),
    body: `\n\n---------- Forwarded message ----------\nFrom: ${fmtAddr(e.from)}\nDate: ${fmtDate(e.sentAt || e.receivedAt, true)}\nSubject: ${e.subject || ""}\nTo: ${fmtAddr(e.to)}\n\n${textOf(e)}`,
    attachments: (e.attachments || []).map((a) => ({ blobId: a.blobId, name: a.name || "attachment", type: a.type, size: a.size })),
  };
}

function editDraftInit() {
  const e = S.open;
  return {
    draftId: e.id, to: fmtAddr(e.to), cc: fmtAddr(e.cc), bcc: fmtAddr(e.bcc), subject: e.subject || "", body: textOf(e),
    inReplyTo: e.inReplyTo, references: e.references,
    attachments: (e.attachments || []).map((a) => ({ blobId: a.blobId, name: a.name || "attachment", type: a.type, size: a.size })),
  };
}

function draftEmail() {
  const drafts = S.byRole.drafts?.id;
  if (!drafts) throw new JmapError("There is no Drafts folder.");
  const email = {
    mailboxIds: { [drafts]: true },
    keywords: { $draft: true, $seen: true },
    from: [{ name: S.identity?.name || null, email: S.identity?.email || S.user }],
    to: parseAddresses($("c-to").value),
    cc: parseAddresses($("c-cc").value),
    bcc: parseAddresses($("c-bcc").value),
    subject: $("c-subject").value,
    bodyValues: { body: { value: $("c-body").value } },
    textBody: [{ partId: "body", type: "text/plain" }],
    attachments: S.compose.attachments.map((a) => ({ blobId: a.blobId, type: a.type || "application/octet-stream", name: a.name, disposition: "attachment" })),
  };
  for (const k of ["cc", "bcc"]) if (!email[k].length) delete email[k];
  if (S.compose.inReplyTo) email.inReplyTo = S.compose.inReplyTo;
  if (S.compose.references?.length) email.references = S.compose.references;
  return email;
}

async function saveDraft() {
  const email = draftEmail();
  const set = { accountId: S.accountId, create: { draft: email } };
  if (S.compose.draftId) set.destroy = [S.compose.draftId];
  const r = await jmap([["Email/set", set, "s"]]);
  checkSet(r.s[1], "Saving the draft");
  S.compose.draftId = r.s[1].created.draft.id;
  status("Draft saved");
}

async function send() {
  // Identities load in the background after the first list: a send that
  // comes first waits for them.
  if (!S.identity) await loadIdentity();
  if (!S.identity) throw new JmapError("No identity to send as.");
  const email = draftEmail();
  if (!email.to.length && !email.cc && !email.bcc) throw new JmapError("Add a recipient.");
  const sent = S.byRole.sent?.id;
  const drafts = S.byRole.drafts.id;
  const set = { accountId: S.accountId, create: { draft: email } };
  if (S.compose.draftId) set.destroy = [S.compose.draftId];
  const onSuccess = { "keywords/$draft": null };
  if (sent) { onSuccess[`mailboxIds/${drafts}`] = null; onSuccess[`mailboxIds/${sent}`] = true; }
  const r = await jmap([
    ["Email/set", set, "s"],
    ["EmailSubmission/set", {
      accountId: S.accountId,
      create: { sub: { identityId: S.identity.id, emailId: "#draft" } },
      onSuccessUpdateEmail: { "#sub": onSuccess },
    }, "u"],
  ]);
  checkSet(r.s[1], "Saving the message");
  checkSet(r.u[1], "Sending");
  S.compose = null;
  status("Message sent");
  showView("list");
  await refresh();
}

async function discard() {
  if (S.compose?.draftId && confirm("Delete the saved draft too?")) {
    const r = await jmap([["Email/set", { accountId: S.accountId, destroy: [S.compose.draftId] }, "s"]]);
    checkSet(r.s[1], "Discard");
    await refresh();
  }
  S.compose = null;
  showView(S.open ? "read" : "list");
}

// ------------------------------------------------- address completion

let suggestFor = null;
let suggestTimer = null;
let suggestions = [];
let suggestActive = -1;

async function searchContacts(prefix) {
  // Every account with contacts: the user's PAB, and the directory when the
  // server offers it as an account of its own.
  const accounts = Object.entries(S.session.accounts)
    .filter(([, a]) => CONTACTS in (a.accountCapabilities || {})).map(([id]) => id);
  if (!S.using.includes(CONTACTS) || !accounts.length) return [];
  const calls = [];
  accounts.forEach((acc, i) => {
    calls.push(["ContactCard/query", { accountId: acc, filter: { text: prefix }, limit: 10 }, `q${i}`]);
    calls.push(["ContactCard/get", {
      accountId: acc, properties: ["name", "emails"],
      "#ids": { resultOf: `q${i}`, name: "ContactCard/query", path: "/ids" },
    }, `g${i}`]);
  });
  const r = await jmap(calls);
  const out = [];
  const seen = new Set();
  const add = (name, address) => {
    const key = (address || "").toLowerCase();
    if (!key || seen.has(key)) return;
    seen.add(key);
    out.push({ name, email: address });
  };
  accounts.forEach((_, i) => {
    for (const c of r[`g${i}`]?.[1].list || []) {
      for (const em of Object.values(c.emails || {})) add(cardName(c), em.address);
    }
  });
  // The directory's users (msgd's method; a server without it just
  // completes from the address book).
  if (S.directory !== false) {
    try {
      const d = await jmap([["msgd:Directory/query", { accountId: S.accountId, text: prefix }, "d"]]);
      for (const u of d.d[1].list || []) add(u.name || null, u.email);
    } catch (e) {
      if (/unknownMethod/.test(e.message)) S.directory = false;
      else throw e;
    }
  }
  const p = prefix.toLowerCase();
  return out.filter((a) => a.email.toLowerCase().includes(p) || (a.name || "").toLowerCase().includes(p)).slice(0, 10);
}

function cardName(c) {
  if (!c.name) return null;
  if (c.name.full) return c.name.full;
  return (c.name.components || []).map((x) => x.value).join(" ") || null;
}

function lastToken(input) {
  const v = input.value;
  const i = Math.max(v.lastIndexOf(","), v.lastIndexOf(";"));
  return v.slice(i + 1).trim();
}

function hideSuggest() {
  $("suggest").hidden = true;
  suggestions = [];
  suggestActive = -1;
}

function renderSuggest() {
  const ul = $("suggest");
  ul.replaceChildren();
  if (!suggestions.length || !suggestFor) { hideSuggest(); return; }
  suggestions.forEach((a, i) => {
    ul.append(el("li", {
      role: "option", id: `sg-${i}`, class: i === suggestActive ? "active" : null,
      "aria-selected": i === suggestActive ? "true" : "false",
      onmousedown: (ev) => { ev.preventDefault(); pickSuggestion(i); },
    }, a.name ? `${a.name} <${a.email}>` : a.email));
  });
  suggestFor.parentElement.after(ul); // right under the field being typed in
  ul.hidden = false;
}

function pickSuggestion(i) {
  const a = suggestions[i];
  const input = suggestFor;
  if (!a || !input) return;
  const v = input.value;
  const cut = Math.max(v.lastIndexOf(","), v.lastIndexOf(";"));
  const head = cut >= 0 ? `${v.slice(0, cut + 1)} ` : "";
  input.value = `${head}${a.name ? `${a.name} <${a.email}>` : a.email}, `;
  hideSuggest();
  input.focus();
}

function wireCompletion(input) {
  input.addEventListener("input", () => {
    suggestFor = input;
    clearTimeout(suggestTimer);
    const token = lastToken(input);
    if (token.length < 2) { hideSuggest(); return; }
    suggestTimer = setTimeout(async () => {
      try {
        const found = await searchContacts(token);
        if (suggestFor !== input || lastToken(input) !== token) return;
        suggestions = found;
        suggestActive = found.length ? 0 : -1;
        renderSuggest();
      } catch (e) {
        console.warn("address completion:", e.message); // typing goes on undisturbed
      }
    }, 150);
  });
  input.addEventListener("keydown", (ev) => {
    if ($("suggest").hidden || suggestFor !== input) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const n = suggestions.length;
      suggestActive = (suggestActive + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
      renderSuggest();
    } else if (ev.key === "Enter" || ev.key === "Tab") {
      if (suggestActive >= 0) { ev.preventDefault(); pickSuggestion(suggestActive); }
    } else if (ev.key === "Escape") {
      ev.stopPropagation();
      hideSuggest();
    }
  });
  input.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== input) hideSuggest(); }, 100));
}

// ---------------------------------------------------------------- contacts

async function loadContacts() {
  if (!S.using.includes(CONTACTS)) {
    $("contact-list").replaceChildren(el("li", { class: "muted", text: "This server offers no address book." }));
    return;
  }
  const r = await jmap([
    ["AddressBook/get", { accountId: S.accountId }, "b"],
    ["ContactCard/query", { accountId: S.accountId, sort: [{ property: "name/full", isAscending: true }] }, "q"],
    ["ContactCard/get", { accountId: S.accountId, "#ids": { resultOf: "q", name: "ContactCard/query", path: "/ids" } }, "g"],
  ]).catch(() => jmap([
    ["AddressBook/get", { accountId: S.accountId }, "b"],
    ["ContactCard/query", { accountId: S.accountId }, "q"],
    ["ContactCard/get", { accountId: S.accountId, "#ids": { resultOf: "q", name: "ContactCard/query", path: "/ids" } }, "g"],
  ]));
  const books = r.b[1].list;
  S.addressBookId = (books.find((b) => b.isDefault) || books[0] || {}).id || null;
  S.contacts = r.g[1].list;
  S.contacts.sort((a, b) => (cardName(a) || "").localeCompare(cardName(b) || ""));
  const ul = $("contact-list");
  ul.replaceChildren();
  if (!S.contacts.length) ul.append(el("li", { class: "muted", text: "No contacts yet." }));
  for (const c of S.contacts) {
    const emails = Object.values(c.emails || {}).map((e) => e.address);
    ul.append(el("li", { class: "contact", "data-id": c.id },
      el("span", { class: "name", text: cardName(c) || "(no name)" }), " ",
      el("span", { class: "muted", text: emails.join(", ") }), " ",
      emails.length ? el("button", {
        type: "button", class: "link", text: "write",
        onclick: () => openCompose({ to: `${cardName(c) ? `${cardName(c)} <${emails[0]}>` : emails[0]}, ` }),
      }) : null, " ",
      el("button", {
        type: "button", class: "link", text: "delete", "aria-label": `Delete ${cardName(c) || emails[0] || "contact"}`,
        onclick: () => deleteContact(c.id).catch((e) => status(e.message, true)),
      })));
  }
}

async function addContact(name, email) {
  const card = { "@type": "Card", version: "1.0", name: { full: name }, emails: { e1: { address: email } } };
  if (S.addressBookId) card.addressBookIds = { [S.addressBookId]: true };
  const r = await jmap([["ContactCard/set", { accountId: S.accountId, create: { c: card } }, "s"]]);
  checkSet(r.s[1], "Adding the contact");
  status(`Added ${name}`);
  await loadContacts();
}

async function deleteContact(id) {
  const r = await jmap([["ContactCard/set", { accountId: S.accountId, destroy: [id] }, "s"]]);
  checkSet(r.s[1], "Deleting the contact");
  await loadContacts();
}

// ---------------------------------------------------------------- views

function showView(view) {
  for (const v of ["list", "read", "compose", "contacts"]) document.body.classList.toggle(`view-${v}`, v === view);
  $("reader").hidden = view !== "read";
  $("compose").hidden = view !== "compose";
  $("contacts").hidden = view !== "contacts";
  if (view === "read") $("subject")?.focus();
  if (view !== "compose") hideSuggest();
}

// ---------------------------------------------------------------- push

function listen() {
  if (!S.session.eventSourceUrl || !window.EventSource) return;
  const url = expand(S.session.eventSourceUrl, { types: "*", closeafter: "no", ping: "60" });
  const es = new EventSource(url, { withCredentials: true });
  es.addEventListener("state", () => {
    clearTimeout(S.refreshTimer);
    S.refreshTimer = setTimeout(() => refresh().catch((e) => status(e.message, true)), 200);
  });
  es.addEventListener("open", () => document.body.classList.add("live"));
  es.addEventListener("error", () => document.body.classList.remove("live"));
}

// ---------------------------------------------------------------- wiring

// Runs fn now (its synchronous part, such as ev.preventDefault(), inside
// the event's dispatch: Firefox applies a form's default action before
// later microtasks run when the event was not dispatched by the user) and
// reports its errors.
function guard(fn) {
  const report = (e) => {
    status(e.message || String(e), true);
    console.error(e);
  };
  return (...args) => {
    try {
      return Promise.resolve(fn(...args)).catch(report);
    } catch (e) {
      report(e);
      return Promise.resolve();
    }
  };
}

function isTyping(t) {
  return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || t?.isContentEditable;
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if ($("help").open) return;
  if (isTyping(ev.target)) {
    if (ev.key === "Escape" && ev.target.id === "search-input") ev.target.blur();
    return;
  }
  const reading = !$("reader").hidden;
  const inList = $("compose").hidden && $("contacts").hidden;
  const act = {
    j: () => inList && moveSelection(1),
    k: () => inList && moveSelection(-1),
    ArrowDown: () => inList && !reading && moveSelection(1),
    ArrowUp: () => inList && !reading && moveSelection(-1),
    Enter: () => inList && !reading && ev.target.id === "message-list" && openSelected(),
    o: () => inList && openSelected(),
    u: () => reading && showView("list"),
    Escape: () => { if (!inList) discardOrBack(); else if (reading) { showView("list"); $("message-list").focus(); } },
    r: () => reading && openCompose(replyInit(false)),
    a: () => reading && openCompose(replyInit(true)),
    f: () => reading && openCompose(forwardInit()),
    c: () => openCompose(),
    Delete: () => inList && deleteCurrent(),
    "#": () => inList && deleteCurrent(),
    m: () => inList && toggleRead(),
    s: () => inList && toggleFlag(),
    "/": () => $("search-input").focus(),
    "?": () => $("help").showModal(),
  }[ev.key];
  if (!act) return;
  ev.preventDefault();
  guard(act)();
}

function discardOrBack() {
  if (!$("contacts").hidden) showView("list");
}

function wire() {
  $("menu-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    $("menu-toggle").setAttribute("aria-expanded", open ? "true" : "false");
  });
  $("search").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    S.search = $("search-input").value.trim();
    S.position = 0;
    showView("list");
    await loadList();
  }));
  $("prev-page").addEventListener("click", guard(async () => { S.position = Math.max(0, S.position - PAGE); await loadList(); }));
  $("next-page").addEventListener("click", guard(async () => { S.position += PAGE; await loadList(); }));
  $("message-list").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); ev.stopPropagation(); guard(openSelected)(); }
  });
  $("compose-btn").addEventListener("click", () => openCompose());
  // Focus before the list loads, not after: a slow directory must not
  // pull the caret out of a field the user has moved on to.
  $("contacts-btn").addEventListener("click", guard(async () => { showView("contacts"); $("ct-name").focus(); await loadContacts(); }));
  $("contacts-back").addEventListener("click", () => showView("list"));
  $("help-btn").addEventListener("click", () => $("help").showModal());
  $("logout-btn").addEventListener("click", guard(logout));
  $("back-btn").addEventListener("click", () => { showView("list"); $("message-list").focus(); });
  $("reply-btn").addEventListener("click", () => openCompose(replyInit(false)));
  $("reply-all-btn").addEventListener("click", () => openCompose(replyInit(true)));
  $("forward-btn").addEventListener("click", () => openCompose(forwardInit()));
  $("edit-draft-btn").addEventListener("click", () => openCompose(editDraftInit()));
  $("delete-btn").addEventListener("click", guard(deleteCurrent));
  $("unread-btn").addEventListener("click", guard(toggleRead));
  $("flag-btn").addEventListener("click", guard(toggleFlag));
  $("move-select").addEventListener("change", guard((ev) => moveTo(ev.target.value)));
  $("compose-form").addEventListener("submit", guard(async (ev) => { ev.preventDefault(); await send(); }));
  $("draft-btn").addEventListener("click", guard(saveDraft));
  $("discard-btn").addEventListener("click", guard(discard));
  $("c-files").addEventListener("change", guard(async (ev) => {
    const files = [...ev.target.files];
    for (const f of files) {
      status(`Uploading ${f.name}…`);
      const b = await upload(f);
      S.compose.attachments.push({ blobId: b.blobId, name: f.name, type: b.type || f.type, size: b.size ?? f.size });
      renderComposeAttachments();
    }
    ev.target.value = "";
    status(files.length ? "Attached" : "");
  }));
  for (const id of ["c-to", "c-cc", "c-bcc"]) wireCompletion($(id));
  $("contact-form").addEventListener("submit", guard(async (ev) => {
    ev.preventDefault();
    await addContact($("ct-name").value.trim(), $("ct-email").value.trim());
    $("ct-name").value = "";
    $("ct-email").value = "";
    $("ct-name").focus();
  }));
  document.addEventListener("keydown", onKey);
}

async function logout() {
  await http("/logout", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrf: S.csrf }),
    redirect: "manual",
  }).catch((e) => { if (!(e instanceof JmapError)) throw e; });
  location.assign("/login");
}

wire();
guard(start)();
