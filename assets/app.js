// chatd browser client: plain DOM, no framework, no build step.
//
// Safety rule for this file: anything that came from a user or the server
// (message text, usernames, room names, error messages) reaches the page
// only through textContent, attributes or createElement, never as markup.
'use strict';

(() => {
  const HISTORY_PAGE = 50;
  const MAX_TEXT_BYTES = 4096;
  const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_CAP_MS = 30000;
  const REFRESH_AT = 0.8; // fraction of a token's lifetime after which we refresh without waiting for `expiring`
  const REFRESH_RETRY_MS = 5000;
  const NEAR_BOTTOM_PX = 64;
  const NEAR_TOP_PX = 80;

  const MSG_EXPIRED = 'Your session expired. Please log in again.';
  const MSG_REVOKED = 'You were logged out.';
  const MSG_INVALID = 'Your session is no longer valid. Please log in again.';

  const $ = (id) => document.getElementById(id);
  const el = {
    notice: $('notice'), auth: $('auth'), loginForm: $('login-form'),
    username: $('username'), password: $('password'), loginBtn: $('login-btn'),
    registerBtn: $('register-btn'), authError: $('auth-error'), chat: $('chat'),
    status: $('status'), whoami: $('whoami'), countdown: $('countdown'),
    logoutBtn: $('logout-btn'), rooms: $('rooms'), joinForm: $('join-form'),
    joinRoom: $('join-room'), joinBtn: $('join-btn'), who: $('who'),
    roomTitle: $('room-title'), leaveBtn: $('leave-btn'), messages: $('messages'),
    sendForm: $('send-form'), input: $('message-input'), sendBtn: $('send-btn'),
    announcer: $('announcer'),
  };

  // Counters a browser test reads to tell "refreshed in place" from "reconnected".
  const debug = { socketOpens: 0, refreshes: 0 };
  window.chatdDebug = Object.freeze({
    get socketOpens() { return debug.socketOpens; },
    get refreshes() { return debug.refreshes; },
  });

  // All state of one login. Logging out drops the object, so nothing of one
  // user's session can leak into the next; async callbacks compare against
  // `s` to notice they belong to a session that has ended.
  let s = null;
  let ticker = 0;
  let noticeTimer = 0;

  function newSession(user, auth) {
    const sess = {
      user, token: '', tokenExp: 0, exp: 0, lifetime: 0, skew: 0,
      ws: null, connectedOnce: false, loggingOut: false,
      rooms: new Map(), current: null,
      reconnectAttempt: 0, reconnectTimer: 0, reconnectAt: 0,
      refreshTimer: 0, refreshing: null, capped: false, cappedWarned: false,
      pendingJoins: new Set(), pendingSends: new Map(),
    };
    adoptToken(sess, auth);
    return sess;
  }

  // adoptToken takes an /auth or /auth/refresh answer. The skew estimate lets
  // the countdown follow the server's clock even if the device's is off.
  function adoptToken(sess, auth) {
    sess.token = auth.token;
    sess.tokenExp = Number(auth.expires_at) || 0;
    sess.lifetime = Math.max(1, Number(auth.expires_in) || 0);
    sess.skew = (Number(auth.expires_at) - sess.lifetime) - Date.now() / 1000;
  }

  const serverNow = () => Date.now() / 1000 + (s ? s.skew : 0);

  function newRoom(name) {
    return {
      name, msgs: new Map(), minSeq: Infinity, maxSeq: 0, unread: 0,
      historyLoaded: false, pendingHistory: null, noMoreOlder: false, who: new Set(),
    };
  }

  // ---------- HTTP ----------

  async function api(path, { body, token } = {}) {
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const res = await fetch(path, {
      method: 'POST', headers, body: JSON.stringify(body || {}),
      credentials: 'same-origin', cache: 'no-store',
    });
    let data = null;
    if ((res.headers.get('Content-Type') || '').includes('application/json')) {
      try { data = await res.json(); } catch { data = null; }
    }
    return { ok: res.ok, status: res.status, data: data || {}, retryAfter: res.headers.get('Retry-After') };
  }

  function errorText(r) {
    let text = r.data.message || r.data.error || `Request failed (HTTP ${r.status}).`;
    if (r.status === 429 && r.retryAfter && !/\d/.test(text)) text += ` Try again in ${r.retryAfter} s.`;
    return text;
  }

  // ---------- Login / register / logout ----------

  function setAuthBusy(busy) {
    el.loginBtn.disabled = busy;
    el.registerBtn.disabled = busy;
  }

  function showAuthError(text) {
    el.authError.textContent = text || '';
    el.authError.hidden = !text;
  }

  function credentials() {
    const username = el.username.value.trim();
    const password = el.password.value;
    if (!username || !password) {
      showAuthError('Please enter a username and a password.');
      (username ? el.password : el.username).focus();
      return null;
    }
    return { username, password };
  }

  async function login(creds) {
    const r = await api('/auth', { body: creds });
    if (!r.ok || !r.data.token) { showAuthError(errorText(r)); return; }
    startSession(creds.username, r.data);
  }

  async function onLoginSubmit(ev) {
    ev.preventDefault();
    const creds = credentials();
    if (!creds) return;
    showAuthError('');
    setAuthBusy(true);
    try { await login(creds); } catch { showAuthError("Can't reach the server. Check your connection and try again."); }
    finally { setAuthBusy(false); }
  }

  async function onRegister() {
    const creds = credentials();
    if (!creds) return;
    showAuthError('');
    setAuthBusy(true);
    try {
      const r = await api('/register', { body: creds });
      if (!r.ok) showAuthError(errorText(r));
      else await login(creds);
    } catch { showAuthError("Can't reach the server. Check your connection and try again."); }
    finally { setAuthBusy(false); }
  }

  function startSession(username, auth) {
    s = newSession(username, auth);
    s.exp = Number(auth.expires_at) || 0;
    el.password.value = '';
    showAuthError('');
    hideNotice();
    el.whoami.textContent = username;
    el.auth.hidden = true;
    el.chat.hidden = false;
    renderAll();
    scheduleRefresh();
    clearInterval(ticker);
    ticker = setInterval(tick, 1000);
    tick();
    connect();
    el.input.focus();
  }

  // endSession forgets the login and shows the form again; `notice` says why.
  function endSession(notice) {
    const sess = s;
    if (!sess) return;
    s = null;
    clearTimeout(sess.reconnectTimer);
    clearTimeout(sess.refreshTimer);
    clearInterval(ticker);
    if (sess.ws) { try { sess.ws.close(1000, 'logout'); } catch { /* already closing */ } }
    el.rooms.replaceChildren();
    el.messages.replaceChildren();
    el.who.replaceChildren();
    el.input.value = '';
    setStatus('disconnected', 'disconnected');
    document.title = 'chatd';
    el.chat.hidden = true;
    el.auth.hidden = false;
    if (notice) showNotice(notice, { sticky: true });
    el.username.focus();
  }

  async function onLogout() {
    const sess = s;
    if (!sess) return;
    // The server closes this socket with 4003 right after the logout; the
    // flag keeps that close from being reported as "You were logged out".
    sess.loggingOut = true;
    el.logoutBtn.disabled = true;
    let note = 'You have logged out.';
    try {
      const r = await api('/auth/logout', { token: sess.token });
      if (!r.ok && r.status !== 401) note = 'Logged out here, but the server answered: ' + errorText(r);
    } catch {
      note = "Logged out on this device; the server couldn't be reached.";
    } finally {
      el.logoutBtn.disabled = false;
    }
    if (s === sess) endSession(note);
  }

  // ---------- Token refresh ----------

  // scheduleRefresh arms the fallback refresh at 80% of the token's lifetime,
  // so a missed or disabled `expiring` warning does not end the session.
  function scheduleRefresh() {
    const sess = s;
    clearTimeout(sess.refreshTimer);
    if (sess.capped) return;
    const delay = Math.max(0, sess.exp - serverNow() - (1 - REFRESH_AT) * sess.lifetime);
    sess.refreshTimer = setTimeout(() => refreshToken(), delay * 1000);
  }

  // refreshToken gets a new token over HTTP and hands it to the open socket
  // with a `refresh` frame: the socket stays, only its expiry moves. It
  // resolves to 'ok', 'network' or 'ended'.
  function refreshToken() {
    const sess = s;
    if (!sess) return Promise.resolve('ended');
    if (sess.refreshing) return sess.refreshing;
    sess.refreshing = (async () => {
      let r;
      try {
        r = await api('/auth/refresh', { token: sess.token });
      } catch {
        if (s === sess && sess.exp - serverNow() > REFRESH_RETRY_MS / 1000) {
          clearTimeout(sess.refreshTimer);
          sess.refreshTimer = setTimeout(() => refreshToken(), REFRESH_RETRY_MS);
        }
        return 'network';
      }
      if (s !== sess) return 'ended';
      if (!r.ok || !r.data.token) return refreshRefused(sess, r);
      const oldExp = sess.exp;
      adoptToken(sess, r.data);
      const newExp = Number(r.data.expires_at) || 0;
      // The server never extends past the session's maximum length; once a
      // refresh stops gaining time, asking again would only loop.
      if (newExp <= oldExp + 1) { sess.capped = true; warnCapped(); }
      if (!send({ type: 'refresh', token: sess.token })) {
        // No socket right now: the next connect uses the new token anyway.
        sess.exp = newExp;
        debug.refreshes++;
        scheduleRefresh();
      }
      return 'ok';
    })().finally(() => { sess.refreshing = null; });
    return sess.refreshing;
  }

  function refreshRefused(sess, r) {
    const code = r.data.error;
    if (code === 'session_expired') {
      sess.capped = true;
      warnCapped();
      return 'ok';
    }
    // With a socket open the server closes it (4001/4003) and onClose says
    // why; without one, nothing else will, so end the session here.
    if (!isOpen()) {
      if (code === 'token_revoked') endSession(MSG_REVOKED);
      else if (code === 'token_expired') endSession(MSG_EXPIRED);
      else if (r.status === 401) endSession(MSG_INVALID);
      else return 'network';
      return 'ended';
    }
    if (r.status !== 401) showNotice("Couldn't renew your session: " + errorText(r));
    return 'ok';
  }

  function warnCapped() {
    if (!s || s.cappedWarned) return;
    s.cappedWarned = true;
    showNotice('Your session has reached its maximum length. You will need to log in again when the timer runs out.', { sticky: true });
  }

  // ---------- WebSocket ----------

  function isOpen() { return !!(s && s.ws && s.ws.readyState === WebSocket.OPEN); }

  function send(frame) {
    if (!isOpen()) return false;
    s.ws.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    const sess = s;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try {
      // The token rides in the subprotocol list so it never appears in a URL or a server log.
      ws = new WebSocket(url, ['chat.v1', 'bearer.' + sess.token]);
    } catch {
      scheduleReconnect(false);
      return;
    }
    let opened = false;
    sess.ws = ws;
    setStatus('connecting', 'connecting');
    const current = () => s === sess && sess.ws === ws;
    ws.onopen = () => {
      if (!current()) return;
      opened = true;
      debug.socketOpens++;
      setStatus('connected', 'connected');
      renderComposer();
    };
    ws.onmessage = (ev) => {
      if (!current() || typeof ev.data !== 'string') return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (frame && typeof frame === 'object') onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (!current()) return;
      sess.ws = null;
      onClose(ev.code, opened);
    };
  }

  function onClose(code, opened) {
    const sess = s;
    if (sess.loggingOut) return;
    if (code === 4001) { endSession(MSG_EXPIRED); return; }
    if (code === 4003) { endSession(MSG_REVOKED); return; }
    // An expired token would be refused at every handshake; retrying is pointless.
    if (sess.tokenExp && serverNow() >= sess.tokenExp) { endSession(MSG_EXPIRED); return; }
    for (const room of sess.rooms.values()) room.pendingHistory = null;
    sess.pendingJoins.clear();
    if (sess.pendingSends.size) {
      const n = sess.pendingSends.size;
      sess.pendingSends.clear();
      showNotice(`Connection lost before ${n === 1 ? 'a message was' : n + ' messages were'} confirmed. If it was delivered it will appear once we reconnect.`);
    }
    scheduleReconnect(opened);
    renderComposer();
  }

  // scheduleReconnect waits with exponential backoff and jitter, so a server
  // restart is not met by every client at the same instant.
  function scheduleReconnect(lastOpened) {
    const sess = s;
    clearTimeout(sess.reconnectTimer);
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** sess.reconnectAttempt);
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    sess.reconnectAttempt++;
    sess.reconnectAt = Date.now() + delay;
    sess.reconnectTimer = setTimeout(async () => {
      sess.reconnectTimer = 0;
      if (s !== sess) return;
      // A handshake refused with 401 looks like any other failure from here.
      // A refresh tells a dead token (log in again) from a down server.
      if (!lastOpened && (await refreshToken()) === 'ended') return;
      if (s === sess && !sess.ws) connect();
    }, delay);
    tick();
  }

  function onFrame(f) {
    switch (f.type) {
      case 'welcome': return onWelcome(f);
      case 'message': return onMessage(f);
      case 'ack': s.pendingSends.delete(f.id); return;
      case 'joined': return onJoined(f);
      case 'left': return onLeft(f);
      case 'presence': return onPresence(f);
      case 'history': return onHistory(f);
      case 'expiring':
        if (s.capped) warnCapped(); else refreshToken();
        return;
      case 'refreshed':
        if (typeof f.exp === 'number') s.exp = f.exp;
        debug.refreshes++;
        scheduleRefresh();
        tick();
        return;
      case 'error': return onError(f);
      default: // Unknown frames are ignored so a newer server does not break this page.
    }
  }

  function onWelcome(f) {
    const sess = s;
    const first = !sess.connectedOnce;
    sess.connectedOnce = true;
    sess.reconnectAttempt = 0;
    if (f.user) { sess.user = f.user; el.whoami.textContent = f.user; }
    if (typeof f.exp === 'number') { sess.exp = f.exp; scheduleRefresh(); }
    const serverRooms = Array.isArray(f.rooms) ? f.rooms.filter((r) => typeof r === 'string') : [];
    if (first) {
      for (const name of serverRooms) if (!sess.rooms.has(name)) sess.rooms.set(name, newRoom(name));
      renderRooms();
      const start = sess.rooms.has('general') ? 'general' : sess.rooms.keys().next().value;
      if (start) selectRoom(start); else renderAll();
      return;
    }
    // Reconnect: the server put us back in its default rooms; undo the ones
    // the user had left, and rejoin the rest from the last seq we saw so the
    // server replays exactly what we missed.
    for (const name of serverRooms) if (!sess.rooms.has(name)) send({ type: 'leave', room: name });
    for (const room of sess.rooms.values()) {
      const frame = { type: 'join', room: room.name };
      if (room.maxSeq > 0) frame.since = room.maxSeq;
      send(frame);
    }
    renderComposer();
  }

  function onJoined(f) {
    const sess = s;
    if (typeof f.room !== 'string') return;
    if (!sess.rooms.has(f.room)) sess.rooms.set(f.room, newRoom(f.room));
    if (f.recovered === false) {
      // The replay did not start right after our last seq: messages were
      // pruned, or we were further behind than one replay carries. Start the
      // room afresh from the replay, so scrolling up pages back without a
      // hole in the middle.
      const room = sess.rooms.get(f.room);
      room.msgs.clear();
      room.minSeq = Infinity;
      room.historyLoaded = false;
      room.noMoreOlder = false;
      showNotice(`You missed many messages in #${f.room}; showing the latest. Scroll up for older ones.`);
    }
    if (sess.pendingJoins.delete(f.room) || !sess.current) {
      selectRoom(f.room);
      return;
    }
    renderRooms();
    if (f.room === sess.current) {
      send({ type: 'who', room: f.room });
      requestLatest(sess.rooms.get(f.room));
    }
  }

  function onLeft(f) {
    const sess = s;
    if (!sess.rooms.delete(f.room)) return;
    if (sess.current === f.room) {
      sess.current = null;
      const next = sess.rooms.has('general') ? 'general' : sess.rooms.keys().next().value;
      if (next) { selectRoom(next); return; }
    }
    renderAll();
  }

  function onPresence(f) {
    const room = s.rooms.get(f.room);
    if (!room) return;
    if (Array.isArray(f.users)) room.who = new Set(f.users.filter((u) => typeof u === 'string'));
    if (typeof f.join === 'string') room.who.add(f.join);
    if (typeof f.leave === 'string') room.who.delete(f.leave);
    if (room.name === s.current) renderWho();
  }

  // addMessage stores m unless its seq is already known; seq is the room's
  // own order, so live frames, replays and history pages can overlap freely.
  function addMessage(room, m) {
    const seq = Number(m.seq);
    if (!Number.isFinite(seq) || room.msgs.has(seq)) return false;
    room.msgs.set(seq, {
      seq, id: String(m.id ?? ''), from: String(m.from ?? ''), text: String(m.text ?? ''), ts: Number(m.ts) || 0,
    });
    if (seq < room.minSeq) room.minSeq = seq;
    if (seq > room.maxSeq) room.maxSeq = seq;
    return true;
  }

  function onMessage(f) {
    const room = s.rooms.get(f.room);
    if (!room || !addMessage(room, f)) return;
    const m = room.msgs.get(Number(f.seq));
    const mine = m.from === s.user;
    if (room.name === s.current) {
      const stick = mine || nearBottom();
      placeMessage(messageNode(m));
      if (stick) scrollToBottom();
      if (!mine) announce(`${m.from}: ${m.text}`);
    } else if (!mine) {
      room.unread++;
      renderRooms();
    }
  }

  function requestLatest(room) {
    if (!room || room.historyLoaded || room.pendingHistory) return;
    if (send({ type: 'history', room: room.name, limit: HISTORY_PAGE })) room.pendingHistory = 'latest';
  }

  function loadOlder() {
    const room = s && s.rooms.get(s.current);
    if (!room || !room.historyLoaded || room.noMoreOlder || room.pendingHistory) return;
    if (room.minSeq === Infinity) { room.noMoreOlder = true; renderHistoryState(); return; }
    if (send({ type: 'history', room: room.name, before: room.minSeq, limit: HISTORY_PAGE })) {
      room.pendingHistory = 'older';
      renderHistoryState();
    }
  }

  function onHistory(f) {
    const room = s.rooms.get(f.room);
    if (!room) return;
    const kind = room.pendingHistory || 'latest';
    room.pendingHistory = null;
    const msgs = Array.isArray(f.messages) ? f.messages : [];
    // Only an empty page, or one that reaches seq 1, means there is nothing
    // older: the server cuts a page to its send queue's budget, so a short
    // page may still have older messages behind it.
    if (msgs.length === 0 || msgs[0].seq === 1) room.noMoreOlder = true;
    room.historyLoaded = true;
    let added = 0;
    for (const m of msgs) if (addMessage(room, m)) added++;
    if (room.name !== s.current) return;
    if (kind === 'older') {
      // Keep the message the user was looking at in place while older ones appear above it.
      const fromBottom = el.messages.scrollHeight - el.messages.scrollTop;
      if (added) renderMessages();
      el.messages.scrollTop = el.messages.scrollHeight - fromBottom;
    } else {
      renderMessages();
      scrollToBottom();
    }
    renderHistoryState();
    // If the page does not fill the view there is nothing to scroll, so keep loading.
    if (el.messages.scrollHeight <= el.messages.clientHeight + 4) loadOlder();
  }

  function onError(f) {
    const sess = s;
    const text = f.message || f.code || 'The server refused a request.';
    if (f.id && sess.pendingSends.has(f.id)) {
      const p = sess.pendingSends.get(f.id);
      sess.pendingSends.delete(f.id);
      // Give the text back so a rate-limited or too-long message is not lost.
      if (!el.input.value && p.room === sess.current) el.input.value = p.text;
      showNotice('Message not sent: ' + text);
      return;
    }
    // token_expired is followed by close 4001, which tells the user plainly.
    if (f.code === 'token_expired') return;
    if (f.code === 'not_member' || f.code === 'bad_request') {
      for (const room of sess.rooms.values()) room.pendingHistory = null;
    }
    if (f.code === 'room_forbidden') sess.pendingJoins.clear();
    showNotice(text);
  }

  // ---------- User actions ----------

  function selectRoom(name) {
    const room = s.rooms.get(name);
    if (!room) return;
    s.current = name;
    room.unread = 0;
    renderAll();
    scrollToBottom();
    if (isOpen()) {
      send({ type: 'who', room: name });
      requestLatest(room);
    }
  }

  function onJoinSubmit(ev) {
    ev.preventDefault();
    const name = el.joinRoom.value.trim().replace(/^#/, '');
    if (!name) return;
    if (!ROOM_RE.test(name)) {
      showNotice('Room names are 1 to 64 letters, digits, "_", "." or "-".');
      return;
    }
    el.joinRoom.value = '';
    if (s.rooms.has(name)) { selectRoom(name); return; }
    s.pendingJoins.add(name);
    if (!send({ type: 'join', room: name })) {
      s.pendingJoins.delete(name);
      el.joinRoom.value = name;
      showNotice('Not connected right now; try again in a moment.');
    }
  }

  function onLeave() {
    if (!s.current) return;
    if (!send({ type: 'leave', room: s.current })) showNotice('Not connected right now; try again in a moment.');
  }

  function randomId() {
    // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
    const b = crypto.getRandomValues(new Uint8Array(12));
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function onSend(ev) {
    ev.preventDefault();
    const text = el.input.value;
    if (!s.current || !text.trim()) return;
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      showNotice(`That message is too long (at most ${MAX_TEXT_BYTES} bytes).`);
      return;
    }
    const id = randomId();
    if (!send({ type: 'send', room: s.current, text, id })) {
      showNotice('Not connected right now; your message is still in the box.');
      return;
    }
    s.pendingSends.set(id, { room: s.current, text });
    el.input.value = '';
    el.input.focus();
  }

  function onInputKey(ev) {
    // Enter sends, Shift+Enter is a new line; never cut off an IME composition.
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      el.sendForm.requestSubmit();
    }
  }

  // ---------- Rendering ----------

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dayTimeFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

  function messageNode(m) {
    const li = make('li', m.from === s.user ? 'msg mine' : 'msg');
    li.dataset.seq = String(m.seq);
    const time = make('time', 'time');
    const d = new Date(m.ts);
    if (m.ts && !Number.isNaN(d.getTime())) {
      time.dateTime = d.toISOString();
      time.textContent = (d.toDateString() === new Date().toDateString() ? timeFmt : dayTimeFmt).format(d);
      time.title = fullFmt.format(d);
    }
    li.append(make('span', 'from', m.from), time, make('div', 'text', m.text));
    return li;
  }

  // placeMessage inserts a node in seq order; live messages almost always
  // belong at the end, so the walk starts there.
  function placeMessage(node) {
    const seq = Number(node.dataset.seq);
    let ref = el.messages.lastElementChild;
    while (ref && Number(ref.dataset.seq) > seq) ref = ref.previousElementSibling;
    el.messages.insertBefore(node, ref ? ref.nextElementSibling : el.messages.firstElementChild);
  }

  function renderMessages() {
    const room = s.rooms.get(s.current);
    if (!room) { el.messages.replaceChildren(); return; }
    const sorted = Array.from(room.msgs.values()).sort((a, b) => a.seq - b.seq);
    el.messages.replaceChildren(...sorted.map(messageNode));
  }

  function renderHistoryState() {
    const room = s && s.rooms.get(s.current);
    let state = 'more';
    if (!room || room.pendingHistory) state = 'loading';
    else if (room.noMoreOlder) state = 'start';
    el.messages.dataset.history = state;
  }

  function renderRooms() {
    const items = [];
    let unreadTotal = 0;
    for (const room of s.rooms.values()) {
      unreadTotal += room.unread;
      const li = make('li', room.name === s.current ? 'room active' : 'room');
      li.dataset.room = room.name;
      const btn = make('button', 'room-btn');
      btn.type = 'button';
      if (room.name === s.current) btn.setAttribute('aria-current', 'true');
      const badge = make('span', 'unread', String(room.unread));
      badge.hidden = room.unread === 0;
      badge.setAttribute('aria-label', `${room.unread} unread`);
      btn.append(make('span', 'room-name', '#' + room.name), badge);
      btn.addEventListener('click', () => selectRoom(room.name));
      li.append(btn);
      items.push(li);
    }
    el.rooms.replaceChildren(...items);
    document.title = unreadTotal ? `(${unreadTotal}) chatd` : 'chatd';
  }

  function renderWho() {
    const room = s.rooms.get(s.current);
    const users = room ? Array.from(room.who).sort((a, b) => a.localeCompare(b)) : [];
    el.who.replaceChildren(...users.map((u) => {
      const li = make('li', u === s.user ? 'me' : '', u);
      return li;
    }));
  }

  function renderComposer() {
    const has = !!s.current;
    el.leaveBtn.disabled = !has;
    // Send stays enabled while disconnected: onSend explains and keeps the text.
    el.sendBtn.disabled = !has;
    el.input.disabled = !has;
    el.roomTitle.textContent = has ? '#' + s.current : 'No room joined';
    el.messages.setAttribute('aria-label', has ? `Messages in #${s.current}` : 'Messages');
  }

  function renderAll() {
    renderRooms();
    renderMessages();
    renderWho();
    renderHistoryState();
    renderComposer();
  }

  function nearBottom() {
    const m = el.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() { el.messages.scrollTop = el.messages.scrollHeight; }

  function announce(text) {
    el.announcer.textContent = text;
  }

  function setStatus(state, text) {
    el.status.dataset.state = state;
    if (el.status.textContent !== text) el.status.textContent = text;
  }

  function showNotice(text, { sticky = false } = {}) {
    clearTimeout(noticeTimer);
    el.notice.textContent = text;
    el.notice.hidden = false;
    if (!sticky) noticeTimer = setTimeout(hideNotice, 8000);
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    el.notice.hidden = true;
    el.notice.textContent = '';
  }

  function formatLeft(sec) {
    const h = Math.floor(sec / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const ss = String(sec % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${String(m).padStart(2, '0')}:${ss}`;
  }

  // tick redraws the once-a-second parts: the expiry countdown and the
  // "reconnecting in Ns" status.
  function tick() {
    if (!s) return;
    const left = Math.max(0, Math.floor(s.exp - serverNow()));
    el.countdown.textContent = s.exp ? formatLeft(left) : '--:--';
    el.countdown.classList.toggle('low', s.exp > 0 && left <= 60);
    if (s.reconnectTimer) {
      const secs = Math.max(0, Math.ceil((s.reconnectAt - Date.now()) / 1000));
      setStatus('reconnecting', `reconnecting in ${secs}s`);
    }
  }

  // ---------- Wiring ----------

  el.loginForm.addEventListener('submit', onLoginSubmit);
  el.registerBtn.addEventListener('click', onRegister);
  el.logoutBtn.addEventListener('click', onLogout);
  el.joinForm.addEventListener('submit', onJoinSubmit);
  el.leaveBtn.addEventListener('click', onLeave);
  el.sendForm.addEventListener('submit', onSend);
  el.input.addEventListener('keydown', onInputKey);
  el.notice.addEventListener('click', hideNotice);
  el.messages.addEventListener('scroll', () => {
    if (s && el.messages.scrollTop < NEAR_TOP_PX) loadOlder();
  }, { passive: true });
  // Coming back online is a better moment to retry than whatever the backoff picked.
  window.addEventListener('online', () => {
    if (!s || s.ws || !s.reconnectTimer) return;
    clearTimeout(s.reconnectTimer);
    s.reconnectTimer = 0;
    connect();
  });
  el.username.focus();
})();
