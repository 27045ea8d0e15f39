// StocksBlitz traders' dashboard: plain JavaScript over the public API only (REST under
// /api/v1 and the WebSocket stream). No framework, no build step, nothing from a CDN.
// Public market data shows at once over one WebSocket; logging in authenticates that
// same connection ({"op":"auth"}) and opens the ticket, blotter and private channels.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const state = {
  token: null,
  ws: null,
  instruments: [],
  quotes: new Map(),
  selected: null,
  orders: new Map(),
  fills: [],
  positions: new Map(),
  anomalies: [],
  book: null,
  trades: [],
  bars: [],
  retry: 0,
};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) {
    if (c instanceof Node) {
      const td = el("td");
      td.appendChild(c);
      tr.appendChild(td);
    } else if (Array.isArray(c)) {
      tr.appendChild(el("td", c[0], c[1]));
    } else {
      tr.appendChild(el("td", c === null || c === undefined ? "" : c));
    }
  }
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function time(us) {
  if (!us) return "";
  return new Date(us / 1000).toLocaleTimeString();
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  return { ok: r.ok, status: r.status, json };
}

// ---- public view, then login ----

async function start() {
  const r = await api("GET", "/instruments");
  if (!r.ok) {
    // Rate limited (429) or the server is away: try again shortly.
    setConn(r.status === 429 ? "rate limited: retrying" : "offline", false);
    setTimeout(start, 5000);
    return;
  }
  state.instruments = r.json.instruments;
  renderQuotes();
  select(state.instruments[0]?.symbol);
  connect();
}

function login(token) {
  state.token = token.trim();
  $("login-error").textContent = "";
  // Sent now if the stream is open, else when it opens.
  send({ op: "auth", token: state.token, id: "auth" });
}

function onAuthenticated(m) {
  sessionStorage.setItem("sbz-token", state.token);
  $("who").textContent = `${m.account} (${m.role})`;
  $("login").hidden = true;
  $("ticket-panel").hidden = false;
  $("blotter-panel").hidden = false;
  $("logout").hidden = false;
  send({ op: "subscribe", channels: ["orders", "fills", "positions", "anomalies"] });
}

function loginFailed(message) {
  state.token = null;
  sessionStorage.removeItem("sbz-token");
  $("login-error").textContent = "Cannot use this token: " + message;
}

function logout() {
  sessionStorage.removeItem("sbz-token");
  state.token = null;
  if (state.ws) state.ws.close();
  location.reload();
}

// ---- stream ----

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${API}/stream`);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    setConn("live", true);
    const quotes = state.instruments.map((i) => `quotes.${i.symbol}`);
    if (quotes.length) send({ op: "subscribe", channels: quotes });
    subscribeMarket(state.selected, true);
    if (state.token) send({ op: "auth", token: state.token, id: "auth" });
  };
  ws.onmessage = (m) => onMessage(JSON.parse(m.data));
  ws.onclose = (e) => {
    setConn("offline", false);
    if (e.code === 4401) {
      // The token expired: public data resumes; log in again to trade.
      loginFailed("your token expired: paste a new one");
      $("login").hidden = false;
      $("ticket-panel").hidden = true;
      $("blotter-panel").hidden = true;
    }
    // Reconnect with back-off; channels resync from their snapshots.
    const wait = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(connect, wait);
  };
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function setConn(text, live) {
  $("conn").textContent = text;
  $("conn").classList.toggle("live", live);
}

function subscribeMarket(symbol, on) {
  if (!symbol) return;
  send({ op: on ? "subscribe" : "unsubscribe", channels: [`book.${symbol}`, `trades.${symbol}`, `bars.${symbol}`] });
}

function onMessage(m) {
  if (m.type === "authenticated") {
    onAuthenticated(m);
    return;
  }
  if (m.type === "error") {
    if (m.id === "auth") loginFailed(m.error.message);
    return;
  }
  if (m.type !== "snapshot" && m.type !== "update") return;
  const [kind, symbol] = m.channel.split(".", 2);
  switch (kind) {
    case "quotes":
      state.quotes.set(m.data.symbol, m.data);
      renderQuotes();
      break;
    case "book":
      if (symbol === state.selected) {
        state.book = m.data;
        renderLadder();
      }
      break;
    case "trades":
      if (symbol !== state.selected) break;
      if (m.type === "snapshot") state.trades = m.data.trades.slice(0, 30);
      else state.trades = [m.data, ...state.trades].slice(0, 30);
      renderTrades();
      break;
    case "bars":
      if (symbol !== state.selected) break;
      onBars(m.type === "snapshot" ? m.data.bars : [m.data]);
      break;
    case "orders":
      if (m.type === "snapshot") {
        state.orders = new Map(m.data.orders.map((o) => [o.order_id, o]));
      } else {
        state.orders.set(m.data.order.order_id, m.data.order);
      }
      renderBlotter();
      break;
    case "fills":
      if (m.type === "snapshot") state.fills = m.data.fills;
      else state.fills = [m.data, ...state.fills].slice(0, 100);
      renderFills();
      break;
    case "positions":
      if (m.type === "snapshot") state.positions = new Map(m.data.positions.map((p) => [p.symbol, p]));
      else state.positions.set(m.data.symbol, m.data);
      renderPositions();
      break;
    case "anomalies":
      if (m.type === "snapshot") state.anomalies = m.data.anomalies.slice().reverse();
      else state.anomalies = [m.data, ...state.anomalies].slice(0, 100);
      renderAnomalies();
      break;
  }
}

// ---- market panels ----

function renderQuotes() {
  const rows = state.instruments.map((i) => {
    const q = state.quotes.get(i.symbol) || {};
    const tr = row([
      i.symbol,
      q.bid ?? "",
      q.ask ?? "",
      q.last?.price ?? "",
      [q.quality || "", "q-" + (q.quality || "")],
    ]);
    tr.dataset.symbol = i.symbol;
    if (i.symbol === state.selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(i.symbol));
    return tr;
  });
  fill($("quotes").tBodies[0], rows);
}

function select(symbol) {
  if (!symbol || symbol === state.selected) return;
  subscribeMarket(state.selected, false);
  state.selected = symbol;
  state.book = null;
  state.trades = [];
  state.bars = [];
  $("selected").textContent = symbol;
  $("t-symbol").value = symbol;
  renderQuotes();
  renderLadder();
  renderTrades();
  drawChart();
  subscribeMarket(symbol, true);
}

function moveSelection(delta) {
  const syms = state.instruments.map((i) => i.symbol);
  const i = Math.max(0, syms.indexOf(state.selected));
  select(syms[(i + delta + syms.length) % syms.length]);
}

function renderLadder() {
  const b = state.book;
  const rows = [];
  if (b) {
    for (const [p, q] of b.asks.slice(0, 10).reverse()) rows.push(row(["", [p, "sell"], q]));
    for (const [p, q] of b.bids.slice(0, 10)) rows.push(row([q, [p, "buy"], ""]));
  }
  fill($("ladder").tBodies[0], rows);
}

function renderTrades() {
  fill(
    $("trades").tBodies[0],
    state.trades.map((t) => row([time(t.exchange_ts_us || t.recv_ts_us), [t.price, t.side], t.qty, t.side])),
  );
}

function onBars(bars) {
  for (const b of bars) {
    if (b.interval !== "1m") continue;
    const i = state.bars.findIndex((x) => x.start_us === b.start_us);
    if (i >= 0) state.bars[i] = b;
    else state.bars.push(b);
  }
  state.bars.sort((a, b) => a.start_us - b.start_us);
  state.bars = state.bars.slice(-60);
  drawChart();
}

function drawChart() {
  const c = $("chart");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const bars = state.bars;
  ctx.fillStyle = "#8a96a3";
  ctx.font = "12px system-ui";
  if (!bars.length) {
    ctx.fillText("1m candles appear as trades arrive", 10, 20);
    return;
  }
  const hi = Math.max(...bars.map((b) => Number(b.high)));
  const lo = Math.min(...bars.map((b) => Number(b.low)));
  const span = hi - lo || 1;
  const y = (v) => 10 + (c.height - 30) * (1 - (Number(v) - lo) / span);
  const w = c.width / 60;
  bars.forEach((b, i) => {
    const x = i * w + w / 2;
    const up = Number(b.close) >= Number(b.open);
    ctx.strokeStyle = ctx.fillStyle = up ? "#2ea043" : "#f85149";
    ctx.beginPath();
    ctx.moveTo(x, y(b.high));
    ctx.lineTo(x, y(b.low));
    ctx.stroke();
    const top = y(up ? b.close : b.open);
    ctx.fillRect(x - w * 0.35, top, w * 0.7, Math.max(1, Math.abs(y(b.open) - y(b.close))));
  });
  ctx.fillStyle = "#8a96a3";
  ctx.fillText(String(hi), 4, 12);
  ctx.fillText(String(lo), 4, c.height - 8);
}

// ---- orders ----

function renderBlotter() {
  const open = [...state.orders.values()].filter((o) => ["open", "partially_filled"].includes(o.status));
  open.sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  const rows = open.map((o) => {
    const cancel = el("button", "Cancel");
    cancel.setAttribute("aria-label", `Cancel order ${o.order_id}`);
    cancel.dataset.order = o.order_id;
    cancel.addEventListener("click", () => cancelOrder(o.order_id));
    const tr = row([o.order_id, o.symbol, [o.side, o.side], o.type, o.price ?? "", o.qty, o.filled_qty, o.status, cancel]);
    tr.dataset.order = o.order_id;
    return tr;
  });
  fill($("blotter").tBodies[0], rows);
}

function renderFills() {
  fill(
    $("fills").tBodies[0],
    state.fills.slice(0, 30).map((f) => row([time(f.time), f.symbol, [f.side, f.side], f.price, f.qty, f.liquidity])),
  );
}

function renderPositions() {
  const rows = [...state.positions.values()].map((p) =>
    row([p.symbol, p.qty, p.avg_price ?? "", p.mark_price ?? "", p.unrealized_pnl ?? "", p.realized_pnl]),
  );
  fill($("positions").tBodies[0], rows);
}

function renderAnomalies() {
  fill(
    $("anomalies").tBodies[0],
    state.anomalies
      .slice(0, 50)
      .map((a) =>
        row([
          time(a.time),
          [a.severity, "sev-" + a.severity],
          a.rule,
          a.account || a.symbol || "",
          a.observed,
          a.threshold,
          a.action,
        ]),
      ),
  );
}

function showResult(text, ok) {
  const r = $("ticket-result");
  r.textContent = text;
  r.className = ok ? "ok" : "rejected";
}

async function placeOrder(ev) {
  ev.preventDefault();
  const f = new FormData($("ticket"));
  const body = {
    symbol: String(f.get("symbol")).trim(),
    side: f.get("side"),
    type: f.get("type"),
    qty: String(f.get("qty")).trim(),
  };
  if (body.type === "limit") body.price = String(f.get("price")).trim();
  const r = await api("POST", "/orders", body);
  if (r.ok) {
    const o = r.json.order;
    if (o) state.orders.set(o.order_id, o);
    renderBlotter();
    showResult(`Placed ${o ? o.order_id : ""}: ${o ? o.status : "ok"}`, true);
  } else {
    const e = r.json?.error;
    showResult(e ? `Rejected ${e.code}: ${e.message}` : `Failed (${r.status})`, false);
  }
}

async function cancelOrder(id) {
  const r = await api("DELETE", `/orders/${id}`);
  if (r.ok) {
    const o = r.json.order;
    if (o) state.orders.set(o.order_id, o);
    renderBlotter();
    showResult(`Cancelled ${id}`, true);
  } else {
    showResult(`Cancel refused: ${r.json?.error?.message || r.status}`, false);
  }
}

// ---- keyboard ----

function onKey(e) {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
  if (e.key === "Escape") {
    document.activeElement?.blur();
    return;
  }
  if (typing) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    moveSelection(e.key === "ArrowDown" ? 1 : -1);
  } else if (e.key === "b" || e.key === "s") {
    document.querySelector(`input[name=side][value=${e.key === "b" ? "buy" : "sell"}]`).checked = true;
    $("t-qty").focus();
  }
}

// ---- start ----

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login($("token").value);
  });
  $("logout").addEventListener("click", logout);
  $("ticket").addEventListener("submit", placeOrder);
  document.addEventListener("keydown", onKey);
  drawChart();
  const saved = sessionStorage.getItem("sbz-token");
  if (saved) login(saved);
  start();
  document.body.dataset.ready = "true";
});
