// mailbridge dashboard: accounts and their actors (polled from /accounts and /actors),
// recent events (server-sent events from /events).  No framework, no build step.
// Everything from the mail or the server goes into the page through textContent only.
(() => {
  "use strict";

  const boot = JSON.parse(document.getElementById("boot").textContent);
  const KEY = "mailbridge.token";
  const PARAM = boot.token_param || "access_token";
  const MAX_EVENTS = 60;
  const REPLAY = 30;           // events shown at once when the page opens
  const ACTORS_EVERY = 1000;   // ms
  const ACCOUNTS_EVERY = 5000; // ms
  const KINDS = ["message_added", "message_changed", "message_moved", "message_removed", "folder_added", "folder_removed",
                 "folder_reset", "account_health", "messages_expired"];

  // --- the token: from the address bar once, then only in this tab's memory/storage ------
  let token = "";
  (() => {
    const url = new URL(window.location.href);
    const given = url.searchParams.get(PARAM);
    if (given !== null) {
      token = given;
      url.searchParams.delete(PARAM);
      history.replaceState(null, "", url.pathname + url.search + url.hash);
      try { sessionStorage.setItem(KEY, token); } catch (e) { /* private mode: memory only */ }
    } else {
      try { token = sessionStorage.getItem(KEY) || ""; } catch (e) { token = ""; }
    }
  })();

  // --- small helpers ------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const fmt = new Intl.NumberFormat();
  const num = (n) => fmt.format(n);

  function clock(iso) {
    const d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit",
                                                      hourCycle: "h23" });
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (isNaN(s)) return "";
    if (s < 0) return "in " + until(iso);
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function until(iso) {
    const s = Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000));
    return s < 60 ? s + " s" : Math.round(s / 60) + " min";
  }

  function setConn(state, text) {
    const box = $("conn");
    box.dataset.state = state;
    $("conn-text").textContent = text;
  }

  class AuthError extends Error {}

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const reply = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (reply.status === 401) throw new AuthError("the API token was not accepted");
    if (!reply.ok) throw new Error(path + ": HTTP " + reply.status);
    return reply.json();
  }

  function tokenRejected() {
    try { sessionStorage.removeItem(KEY); } catch (e) { /* ignore */ }
    setConn("down", "token rejected: reopen the link with ?" + PARAM + "=…");
    stopped = true;
    if (source) source.close();
  }

  // --- state --------------------------------------------------------------------------------
  let accounts = [];            // from /accounts
  let actors = new Map();       // account id -> snapshot from /actors
  let stopped = false;
  const accountNames = new Map();
  const folderNames = new Map(); // "account/folder id" -> name
  const messages = new Map();    // message id -> Promise of the message (or null)
  const seen = new Set();        // event ids shown
  let lastEventId = null;

  // --- badges -------------------------------------------------------------------------------
  const HEALTH = { healthy: "good", degraded: "warn", unknown: "", auth_failed: "bad", unreachable: "bad",
                   error: "bad", disabled: "" };
  const STATE = { syncing: "busy", connecting: "busy", starting: "busy", idle: "good", standby: "", elsewhere: "",
                  backoff: "bad", parked: "warn", stopped: "" };

  function badge(text, tone, title) {
    const b = el("span", "badge" + (tone ? " " + tone : ""), text);
    if (title) b.title = title;
    return b;
  }

  // --- accounts and actors ----------------------------------------------------------------
  function folderOrder(a, b) {
    const rank = (f) => (f.name.toUpperCase() === "INBOX" ? 0 : 1);
    return rank(a) - rank(b) || a.name.localeCompare(b.name);
  }

  function folderRow(f) {
    const frag = document.createDocumentFragment();
    const name = el("span", "fname", f.name);
    name.title = f.name;
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    bar.appendChild(fill);
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", f.name);
    let label;
    if (f.total === null || f.total === undefined) {
      bar.classList.add("unknown");
      label = num(f.synced);
    } else {
      const pct = f.total > 0 ? Math.min(100, (100 * f.synced) / f.total) : 100;
      fill.style.width = pct.toFixed(1) + "%";
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", String(f.total));
      bar.setAttribute("aria-valuenow", String(Math.min(f.synced, f.total)));
      label = num(Math.min(f.synced, f.total)) + " / " + num(f.total);
      if (f.synced >= f.total && f.phase !== "initial") bar.classList.add("done");
    }
    if (f.phase === "parked" || f.phase === "gone") bar.classList.add("parked");
    frag.append(name, bar, el("span", "count", label), el("span", "phase", f.phase));
    return frag;
  }

  function card(account, actor) {
    const id = account ? account.id : actor.account_id;
    const email = account ? account.email : actor.email;
    const node = el("article", "card");
    node.dataset.account = String(id);

    const head = el("div", "card-head");
    head.appendChild(el("h3", null, email));
    const health = account ? (account.enabled ? account.health : "disabled") : actor.health;
    const reason = account ? account.health_reason : actor.health_reason;
    head.appendChild(badge(health, HEALTH[health] !== undefined ? HEALTH[health] : "warn", reason || ""));
    if (actor) {
      head.appendChild(badge(actor.state, STATE[actor.state] || "", actor.step || ""));
    } else {
      head.appendChild(badge("no actor here", "", "not synced by this process"));
    }
    node.appendChild(head);

    const meta = el("div", "meta");
    if (account) {
      const tls = { tls: "TLS", starttls: "STARTTLS", none: "no TLS" }[account.imap_tls] || account.imap_tls;
      meta.appendChild(el("span", null, account.imap_host + ":" + account.imap_port + " · " + tls));
    }
    if (actor) {
      const total = actor.folders.reduce((n, f) => n + f.synced, 0);
      meta.appendChild(el("span", null, num(total) + " messages mirrored"));
      meta.appendChild(el("span", null, actor.lock_held ? "lock held" : "lock not held"));
      meta.appendChild(el("span", null, actor.cycles + " cycle" + (actor.cycles === 1 ? "" : "s")));
      if (actor.restarts) meta.appendChild(el("span", null, actor.restarts + " restart" + (actor.restarts === 1 ? "" : "s")));
      if (actor.mailbox_depth) meta.appendChild(el("span", null, actor.mailbox_depth + " request(s) waiting"));
    } else if (account && account.owner) {
      meta.appendChild(el("span", null, "synced by " + account.owner));
    }
    node.appendChild(meta);

    if (actor && actor.step) {
      const step = el("p", "step");
      step.appendChild(el("span", "label", "now: "));
      step.appendChild(document.createTextNode(actor.step));
      if (actor.state === "idle" && actor.next_cycle_at) {
        step.appendChild(el("span", "label", " · next cycle in " + until(actor.next_cycle_at)));
      }
      if (actor.state === "backoff" && actor.retry_at) {
        step.appendChild(el("span", "label", " · retry in " + until(actor.retry_at)));
      }
      node.appendChild(step);
    }
    const problem = (actor && actor.last_error) || (health !== "healthy" && reason) || null;
    if (problem) node.appendChild(el("p", "problem", problem));

    if (actor && actor.folders.length) {
      const grid = el("div", "folders");
      for (const f of [...actor.folders].sort(folderOrder)) grid.appendChild(folderRow(f));
      node.appendChild(grid);
    } else if (actor) {
      node.appendChild(el("p", "no-folders", "no folders discovered yet"));
    }
    return node;
  }

  function render() {
    const box = $("accounts");
    const ids = new Set([...accounts.map((a) => a.id), ...actors.keys()]);
    const cards = [];
    for (const id of [...ids].sort((a, b) => a - b)) {
      const account = accounts.find((a) => a.id === id) || null;
      cards.push(card(account, actors.get(id) || null));
    }
    if (!cards.length) {
      box.replaceChildren(el("p", "empty", "no accounts yet: add one with `mailbridge accounts add` or POST /accounts"));
    } else {
      box.replaceChildren(...cards);
    }
    let mirrored = 0, syncing = 0;
    for (const a of actors.values()) {
      mirrored += a.folders.reduce((n, f) => n + f.synced, 0);
      if (a.state === "syncing") syncing += 1;
    }
    const n = ids.size;
    $("summary").textContent = n + " account" + (n === 1 ? "" : "s") + " · " + actors.size + " actor" +
      (actors.size === 1 ? "" : "s") + (syncing ? " (" + syncing + " syncing)" : "") + " · " +
      num(mirrored) + " messages mirrored";
  }

  async function refreshActors() {
    const data = await api("/actors");
    actors = new Map(data.actors.map((a) => [a.account_id, a]));
    for (const a of data.actors) accountNames.set(a.account_id, a.email);
    render();
  }

  async function refreshAccounts() {
    const data = await api("/accounts");
    accounts = data.accounts;
    for (const a of accounts) accountNames.set(a.id, a.email);
    render();
  }

  function every(ms, fn) {
    let running = false;
    const tick = async () => {
      if (stopped || running) return;
      running = true;
      try {
        await fn();
      } catch (e) {
        if (e instanceof AuthError) tokenRejected();
      } finally {
        running = false;
      }
    };
    tick();
    return setInterval(tick, ms);
  }

  // --- events -----------------------------------------------------------------------------------
  const LABELS = { message_added: "new mail", message_changed: "flags changed", message_removed: "removed",
                   message_moved: "moved", folder_added: "new folder", folder_removed: "folder removed", folder_reset: "folder reset",
                   account_health: "health", messages_expired: "expired" };

  function message(id) {
    if (!messages.has(id)) {
      messages.set(id, api("/messages/" + encodeURIComponent(id)).catch(() => null));
      if (messages.size > 500) messages.delete(messages.keys().next().value);
    }
    return messages.get(id);
  }

  async function folderName(accountId, folderId) {
    if (folderId === null || folderId === undefined) return null;
    const key = accountId + "/" + folderId;
    if (!folderNames.has(key)) {
      try {
        const data = await api("/accounts/" + encodeURIComponent(accountId) + "/folders");
        for (const f of data.folders || []) folderNames.set(accountId + "/" + f.id, f.name);
      } catch (e) { /* shown without the folder */ }
      if (!folderNames.has(key)) folderNames.set(key, null);
    }
    return folderNames.get(key);
  }

  function sender(m) {
    if (m.from_name && m.from_email) return m.from_name + " <" + m.from_email + ">";
    return m.from_name || m.from_email || "unknown sender";
  }

  async function describe(ev, item) {
    const p = ev.payload || {};
    const line1 = item.querySelector(".line1");
    const detail = item.querySelector(".detail");
    // the account is named only when there is more than one to tell apart
    const parts = accountNames.size > 1 ? [accountNames.get(ev.account_id) || ("account " + ev.account_id)] : [];
    if (ev.kind === "message_added" || ev.kind === "message_changed" || ev.kind === "message_moved") {
      const m = p.message !== undefined ? await message(p.message) : null;
      if (m) {
        line1.appendChild(el("span", "subject", m.subject || "(no subject)"));
        parts.push(ev.kind === "message_moved" ? (p.from_folder || "?") + " → " + m.folder : m.folder);
        if (ev.kind === "message_added") parts.push("from " + sender(m));
        else if (ev.kind === "message_changed") parts.push((m.flags || []).join(" ") || "no flags");
      } else {
        const folder = await folderName(ev.account_id, ev.folder_id);
        if (folder) parts.push(folder);
        parts.push("UID " + p.uid);
      }
    } else if (ev.kind === "message_removed") {
      const folder = await folderName(ev.account_id, ev.folder_id);
      if (folder) parts.push(folder);
      parts.push("UID " + p.uid);
    } else if (ev.kind === "account_health") {
      line1.appendChild(el("span", "subject", (p.previous ? p.previous + " → " : "") + p.health));
      if (p.reason) parts.push(p.reason);
    } else if (p.folder) {
      line1.appendChild(el("span", "subject", p.folder));
    } else if (ev.kind === "messages_expired") {
      parts.push(p.count + " message(s) past the retention period");
    }
    detail.textContent = parts.filter(Boolean).join(" · ");
  }

  function onEvent(msg) {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    if (typeof ev.id !== "number" || seen.has(ev.id)) return;
    seen.add(ev.id);
    lastEventId = Math.max(lastEventId || 0, ev.id);
    const list = $("events");
    const item = el("li", "event k-" + String(ev.kind).replace(/[^a-z0-9_-]/gi, ""));
    item.dataset.eventId = String(ev.id);
    item.dataset.kind = String(ev.kind);
    const when = el("time", null, clock(ev.created_at));
    if (ev.created_at) when.dateTime = ev.created_at;
    const what = el("div", "what");
    const line1 = el("div", "line1");
    line1.appendChild(el("span", "kind", LABELS[ev.kind] || ev.kind));
    what.append(line1, el("div", "detail"));
    item.append(when, what);
    // keep the list newest first, also when replayed events arrive in order
    let before = list.firstElementChild;
    while (before && Number(before.dataset.eventId) > ev.id) before = before.nextElementSibling;
    list.insertBefore(item, before);
    if (replayed) item.classList.add("fresh");
    while (list.children.length > MAX_EVENTS) {
      const last = list.lastElementChild;
      seen.delete(Number(last.dataset.eventId));
      last.remove();
    }
    $("events-empty").hidden = true;
    if (ev.kind === "account_health") refreshAccounts().catch(() => {});
    describe(ev, item).catch(() => {});
  }

  // --- the event stream -------------------------------------------------------------------------
  let source = null;
  let replayed = false;

  function connect() {
    if (stopped) return;
    const params = new URLSearchParams();
    if (lastEventId !== null) {
      params.set("since", String(lastEventId));
    } else if (typeof boot.last_event_id === "number") {
      params.set("since", String(Math.max(0, boot.last_event_id - REPLAY)));
    }
    if (token) params.set(PARAM, token);
    source = new EventSource("/events?" + params.toString());
    source.onopen = () => {
      setConn("live", "live");
      setTimeout(() => { replayed = true; }, 1500);
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // a non-stream answer (401 after a restart with a new token, 503 while stopping):
        // check the token with a plain request, then try again
        setConn("reconnecting", "reconnecting…");
        source.close();
        setTimeout(() => {
          api("/actors").then(connect, (e) => {
            if (e instanceof AuthError) tokenRejected();
            else setTimeout(connect, 3000);
          });
        }, 2000);
      } else {
        setConn("reconnecting", "reconnecting…");
      }
    };
    for (const kind of KINDS) source.addEventListener(kind, onEvent);
    source.onmessage = onEvent; // events without a known kind
  }

  every(ACTORS_EVERY, refreshActors);
  every(ACCOUNTS_EVERY, refreshAccounts);
  setInterval(() => { if (!stopped) render(); }, 5000); // refresh "in … s" texts between polls
  connect();
})();
