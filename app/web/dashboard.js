// Operator dashboard: polls the calls API and draws live calls, recent calls (with transcript
// and a per-turn latency chart) and campaign progress. Everything is built with textContent and
// DOM/SVG nodes, never innerHTML: transcripts are untrusted text.
"use strict";

const STAGES = [
  ["endpoint_to_stt_final", "speech end → STT final", "#7c3aed"],
  ["stt_final_to_commit", "endpointing", "#a3a3a3"],
  ["llm_first_token", "LLM first token", "#2563eb"],
  ["tts_first_audio", "TTS first audio", "#059669"],
  ["first_audio_sent", "send", "#d97706"],
];
const SVG = "http://www.w3.org/2000/svg";
// Twilio's status callbacks own a phone call's status; until the final one arrives an ended
// call still reads "in-progress" (or "queued"), so the agent's end is shown instead.
const FINAL = new Set(["completed", "busy", "no-answer", "failed", "canceled"]);
function shownStatus(c) { return c.end_reason && !FINAL.has(c.status) ? "ended" : c.status; }
const state = { token: null, selected: null };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmtTime(epoch) {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toLocaleString();
}
function fmtSecs(s) { return s === null || s === undefined ? "—" : `${Math.round(s)} s`; }
function fmtMs(ms) { return ms === null || ms === undefined ? "—" : `${Math.round(ms)} ms`; }
function fmtCost(c) { return c === null || c === undefined ? "—" : `$${Number(c).toFixed(4)}`; }

function loadToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("apiToken", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  state.token = sessionStorage.getItem("apiToken");
}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch(path, { headers, cache: "no-store" });
  if (res.status === 401) {
    $("auth").hidden = false;
    throw new Error("unauthorised: enter the API token");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function fillRows(tbody, rows, columns, emptyText, onClick) {
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const { cells, id } of rows) {
    const tr = el("tr");
    tr.dataset.id = id;
    for (const c of cells) tr.append(el("td", c));
    if (onClick) {
      tr.className = "clickable" + (id === state.selected ? " selected" : "");
      tr.addEventListener("click", () => onClick(id));
    }
    tbody.append(tr);
  }
}

async function refreshLive() {
  const live = await api("/api/live");
  $("instance").textContent =
    `${live.calls.length}/${live.capacity} calls` + (live.draining ? " · draining" : "");
  $("live-count").textContent = `(${live.calls.length})`;
  fillRows($("live"), live.calls.map((c) => ({
    id: c.id,
    cells: [c.id, c.transport, c.direction, c.from, c.turns, fmtMs(c.last_turn_ms)],
  })), 6, "No calls right now", showCall);
}

const PAGE = 25;
const filters = { offset: 0 };

function recentQuery() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(filters.offset) });
  for (const name of ["direction", "transport", "status", "q"]) {
    const value = $(`filter-${name}`).value.trim();
    if (value) params.set(name, value);
  }
  return `/api/calls?${params}`;
}

async function refreshRecent() {
  const data = await api(recentQuery());
  $("page").textContent = `calls ${filters.offset + 1}–${filters.offset + data.calls.length}`;
  $("prev").disabled = filters.offset === 0;
  $("next").disabled = data.calls.length < PAGE;
  fillRows($("recent"), data.calls.map((c) => ({
    id: c.id,
    cells: [fmtTime(c.started_at || c.created_at), c.direction, c.from, c.to,
      fmtSecs(c.duration_s), shownStatus(c), c.outcome || c.end_reason || "—", fmtCost(c.cost)],
  })), 8, "No calls recorded yet", showCall);
}

async function refreshCampaigns() {
  let data;
  try { data = await api("/api/dashboard/campaigns"); } catch (e) { return; }  // records may be off
  const tbody = $("campaigns");
  tbody.replaceChildren();
  if (!data.campaigns.length) {
    fillRows(tbody, [], 4, "No campaigns");
    return;
  }
  for (const c of data.campaigns) {
    const p = c.progress;
    const tr = el("tr");
    tr.append(el("td", c.name), el("td", c.status));
    const td = el("td");
    const bar = el("div", null, "bar");
    const fill = el("div");
    fill.style.width = `${p.total ? (100 * p.done) / p.total : 0}%`;
    bar.append(fill);
    td.append(bar, el("span", `${p.done}/${p.total} contacts · ${p.attempts} attempts`));
    const results = Object.entries(p.by_result || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    tr.append(td, el("td", results || "—"));
    tbody.append(tr);
  }
}

function drawChart(turns) {
  const box = $("chart");
  box.replaceChildren();
  const rows = turns.filter((t) => STAGES.some(([k]) => t.stages_ms[k] !== null));
  if (!rows.length) {
    box.append(el("p", "No turn latency recorded", "empty"));
    return;
  }
  const total = (t) => STAGES.reduce((sum, [k]) => sum + Math.max(t.stages_ms[k] || 0, 0), 0);
  const maxMs = Math.max(...rows.map(total), 1);
  const width = 420, label = 56, rowH = 22, right = 64;
  const scale = (width - label - right) / maxMs;
  const chart = svg("svg", {
    width, height: rows.length * rowH + 8, viewBox: `0 0 ${width} ${rows.length * rowH + 8}`,
    role: "img", "aria-label": "latency per turn by stage",
  });
  rows.forEach((t, i) => {
    const y = 4 + i * rowH;
    chart.append(svg("text", { x: 0, y: y + 13 }, `turn ${t.turn}`));
    let x = label;
    for (const [key, name, color] of STAGES) {
      const ms = Math.max(t.stages_ms[key] || 0, 0);
      if (!ms) continue;
      const w = Math.max(ms * scale, 1);
      const rect = svg("rect", { x, y, width: w, height: rowH - 6, fill: color, rx: 2,
        "data-stage": key });
      rect.append(svg("title", {}, `${name}: ${Math.round(ms)} ms`));
      chart.append(rect);
      x += w;
    }
    const shown = t.stages_ms.total !== null ? t.stages_ms.total : total(t);
    chart.append(svg("text", { x: x + 6, y: y + 13 }, `${Math.round(shown)} ms`));
  });
  box.append(chart);
  const legend = $("legend");
  legend.replaceChildren();
  for (const [, name, color] of STAGES) {
    const li = el("li");
    const sw = el("span", null, "swatch");
    sw.style.background = color;
    li.append(sw, document.createTextNode(name));
    legend.append(li);
  }
}

async function showCall(id) {
  state.selected = id;
  const call = await api(`/api/calls/${encodeURIComponent(id)}`);
  $("detail").hidden = false;
  $("detail-id").textContent = call.id;
  const usage = call.usage || {};
  $("detail-meta").textContent = [
    `${call.direction} ${call.transport}`, `from ${call.from}`, `to ${call.to}`,
    `length ${fmtSecs(call.duration_s)}`, `status ${shownStatus(call)}`,
    `ended: ${call.end_reason || "—"}`, `cost ${fmtCost(call.cost)}`,
    `LLM tokens ${(usage.llm_input_tokens || 0) + (usage.llm_output_tokens || 0)}`,
    call.live ? "LIVE" : "",
  ].filter(Boolean).join(" · ");
  const list = $("transcript");
  list.replaceChildren();
  for (const line of call.transcript) {
    const li = el("li", null, line.role + (line.interrupted ? " interrupted" : ""));
    li.append(el("span", line.role === "agent" ? "Agent" : "Caller", "role"),
      document.createTextNode(line.text));
    list.append(li);
  }
  if (!call.transcript.length) list.append(el("li", "No transcript", "empty"));
  $("detail-outcome").textContent =
    `Outcome: ${call.outcome || "—"}` + (call.summary ? ` — ${call.summary}` : "");
  const events = $("events");
  events.replaceChildren();
  const first = (call.events || []).length ? call.events[0].at : 0;
  for (const ev of call.events || []) {
    // event times are the call's own clock: shown from its start
    const detail = Object.entries(ev.detail || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    events.append(el("li", `+${(ev.at - first).toFixed(1)} s ${ev.kind} ${detail}`.trim()));
  }
  if (!(call.events || []).length) events.append(el("li", "No events", "empty"));
  const player = $("recording");
  player.hidden = !call.recording;
  if (call.recording) {
    // An <audio> element cannot send the bearer token, so the MP3 is fetched here.
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
    fetch(`/api/calls/${encodeURIComponent(id)}/recording`, { headers })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`recording: ${r.status}`))))
      .then((blob) => { player.src = URL.createObjectURL(blob); })
      .catch((e) => { $("error").textContent = e.message; });
  }
  drawChart(call.turns);
  for (const tr of document.querySelectorAll("tbody tr.clickable")) {
    tr.classList.toggle("selected", tr.dataset.id === id);
  }
}

async function tick(fn) {
  try {
    await fn();
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = e.message;
  }
}

function start() {
  loadToken();
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("apiToken", state.token);
    $("auth").hidden = true;
    refreshAll();
  });
  const refreshAll = () => Promise.all([
    tick(refreshLive), tick(refreshRecent), tick(refreshCampaigns),
  ]).then(() => { document.body.dataset.loaded = "1"; });
  for (const name of ["direction", "transport", "status", "q"]) {
    $(`filter-${name}`).addEventListener("change", () => { filters.offset = 0; tick(refreshRecent); });
  }
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("prev").addEventListener("click", () => {
    filters.offset = Math.max(0, filters.offset - PAGE); tick(refreshRecent);
  });
  $("next").addEventListener("click", () => { filters.offset += PAGE; tick(refreshRecent); });
  refreshAll();
  setInterval(() => tick(refreshLive), 2000);
  setInterval(() => tick(refreshRecent), 5000);
  setInterval(() => tick(refreshCampaigns), 10000);
}

document.addEventListener("DOMContentLoaded", start);
