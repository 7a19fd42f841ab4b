// The query page: a PromQL box with completion of metric and label names, a table of the
// instant answer and a chart of the range answer, over the façade's own HTTP API.
"use strict";

const prefix = document.body.dataset.prefix || "";
const api = (path) => `${prefix}/api/v1/${path}`;
const $ = (id) => document.getElementById(id);

const FUNCTIONS = [
  "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
  "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
  "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase",
  "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "max",
  "max_over_time", "min", "min_over_time", "predict_linear", "quantile", "quantile_over_time",
  "rate", "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time",
  "stdvar", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
];
const COLORS = ["#2a6db0", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0b7285", "#c2255c",
  "#5c940d", "#364fc7", "#862e9c"];

let metricNames = [];
let labelNames = [];
let tab = "table";

async function getJSON(url, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(body).toString(),
  };
  const resp = await fetch(url, init);
  let json;
  try {
    json = await resp.json();
  } catch (e) {
    throw new Error(`HTTP ${resp.status} from ${url}`);
  }
  if (json.status !== "success") {
    throw new Error(`${json.errorType || "error"}: ${json.error || resp.status}`);
  }
  return json;
}

// ---- completion ----

async function loadNames() {
  try {
    metricNames = (await getJSON(api("label/__name__/values"))).data;
    labelNames = (await getJSON(api("labels"))).data;
  } catch (e) {
    showError(`cannot load names for completion: ${e.message}`);
  }
}

function currentWord(text, pos) {
  const before = text.slice(0, pos);
  const m = before.match(/[a-zA-Z_:][a-zA-Z0-9_:]*$/);
  const word = m ? m[0] : "";
  // Inside braces: label names; elsewhere metric and function names.
  const open = before.lastIndexOf("{");
  const inBraces = open > before.lastIndexOf("}");
  return { word, start: pos - word.length, inBraces };
}

let suggestions = [];
let selected = 0;

function updateCompletions() {
  const box = $("expr");
  const { word, inBraces } = currentWord(box.value, box.selectionStart);
  const list = $("completions");
  if (word.length === 0) {
    list.hidden = true;
    suggestions = [];
    return;
  }
  const pool = inBraces ? labelNames : metricNames.concat(FUNCTIONS);
  suggestions = pool.filter((n) => n.startsWith(word) && n !== word).slice(0, 12);
  list.innerHTML = "";
  suggestions.forEach((s, i) => {
    const li = document.createElement("li");
    li.textContent = s;
    li.className = i === selected ? "selected" : "";
    li.addEventListener("mousedown", (ev) => {
      ev.preventDefault();
      accept(s);
    });
    list.appendChild(li);
  });
  selected = Math.min(selected, Math.max(suggestions.length - 1, 0));
  list.hidden = suggestions.length === 0;
}

function accept(s) {
  const box = $("expr");
  const { start } = currentWord(box.value, box.selectionStart);
  const end = box.selectionStart;
  box.value = box.value.slice(0, start) + s + box.value.slice(end);
  box.selectionStart = box.selectionEnd = start + s.length;
  $("completions").hidden = true;
  suggestions = [];
  box.focus();
}

function onKey(ev) {
  if (!$("completions").hidden && suggestions.length > 0) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      selected = (selected + (ev.key === "ArrowDown" ? 1 : suggestions.length - 1)) % suggestions.length;
      updateCompletions();
      ev.preventDefault();
      return;
    }
    if (ev.key === "Tab" || (ev.key === "Enter" && !ev.shiftKey)) {
      accept(suggestions[selected]);
      ev.preventDefault();
      return;
    }
    if (ev.key === "Escape") {
      $("completions").hidden = true;
      return;
    }
  }
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    run();
  }
}

// ---- running queries ----

function seriesName(metric) {
  const name = metric.__name__ || "";
  const labels = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => `${k}="${metric[k]}"`);
  return labels.length ? `${name}{${labels.join(", ")}}` : (name || "{}");
}

function endTime() {
  const v = $("end").value.trim();
  if (!v) return Date.now() / 1000;
  const n = Number(v);
  if (!Number.isNaN(n)) return n;
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new Error(`cannot read end time ${JSON.stringify(v)}`);
  return t / 1000;
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

function showWarnings(list) {
  const w = $("warnings");
  w.innerHTML = "";
  (list || []).forEach((m) => {
    const li = document.createElement("li");
    li.textContent = m;
    w.appendChild(li);
  });
  w.hidden = !list || list.length === 0;
}

async function run() {
  const expr = $("expr").value.trim();
  showError("");
  showWarnings([]);
  if (!expr) return;
  const params = new URLSearchParams({ expr, tab, range: $("range").value });
  history.replaceState(null, "", `?${params}`);
  const started = performance.now();
  $("status").textContent = "running…";
  try {
    const answer = tab === "graph" ? await runRange(expr) : await runInstant(expr);
    showWarnings(answer.warnings);
    $("status").textContent = `${answer.count} series · ${Math.round(performance.now() - started)} ms`;
    document.body.dataset.state = "done";
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
    document.body.dataset.state = "error";
  }
}

async function runInstant(expr) {
  const json = await getJSON(api("query"), { query: expr, time: endTime().toFixed(3) });
  const body = $("result-table").querySelector("tbody");
  body.innerHTML = "";
  const row = (name, value) => {
    const tr = document.createElement("tr");
    for (const text of [name, value]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  };
  const { resultType, result } = json.data;
  if (resultType === "vector") {
    result.forEach((s) => row(seriesName(s.metric), s.value[1]));
  } else if (resultType === "matrix") {
    result.forEach((s) => row(seriesName(s.metric), s.values.map((v) => `${v[1]} @${v[0]}`).join("\n")));
  } else {
    // A scalar or a string: [time, value].
    row(resultType, String(result[1]));
    return { warnings: json.warnings, count: 1 };
  }
  return { warnings: json.warnings, count: result.length };
}

function autoStep(range) {
  return Math.max(1, Math.ceil(range / 250));
}

async function runRange(expr) {
  const end = endTime();
  const range = Number($("range").value);
  const stepText = $("step").value.trim();
  const step = stepText ? stepText : String(autoStep(range));
  const json = await getJSON(api("query_range"), {
    query: expr, start: (end - range).toFixed(3), end: end.toFixed(3), step,
  });
  const result = json.data.resultType === "matrix" ? json.data.result : [];
  drawChart(result, end - range, end);
  return { warnings: json.warnings, count: result.length };
}

// ---- the chart ----

const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

function formatValue(v) {
  if (Math.abs(v) >= 1e6 || (Math.abs(v) < 1e-3 && v !== 0)) return v.toExponential(2);
  return String(Math.round(v * 1000) / 1000);
}

function drawChart(result, start, end) {
  const svg = $("chart");
  const legend = $("legend");
  svg.innerHTML = "";
  legend.innerHTML = "";
  const W = Number(svg.getAttribute("width"));
  const H = Number(svg.getAttribute("height"));
  const pad = { l: 70, r: 10, t: 10, b: 30 };
  const values = [];
  result.forEach((s) => s.values.forEach(([, v]) => {
    const f = Number(v);
    if (Number.isFinite(f)) values.push(f);
  }));
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (t) => pad.l + ((t - start) / (end - start || 1)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - ((v - lo) / (hi - lo)) * (H - pad.t - pad.b);
  const axes = svgEl("g", { class: "axes" });
  for (const v of niceTicks(lo, hi, 5)) {
    axes.appendChild(svgEl("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), stroke: "#eee" }));
    axes.appendChild(svgEl("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, formatValue(v)));
  }
  for (const t of niceTicks(start, end, 6)) {
    const d = new Date(t * 1000);
    const label = d.toISOString().slice(11, 19);
    // Near the right edge a label ends at its tick instead of overflowing the chart.
    const anchor = x(t) > W - pad.r - 30 ? "end" : "middle";
    axes.appendChild(svgEl("text", { x: x(t), y: H - 10, "text-anchor": anchor }, label));
  }
  svg.appendChild(axes);
  result.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    // A gap in the samples (a missing step) breaks the line, as Prometheus's graph does.
    let d = "";
    let prev = null;
    const step = s.values.length > 1 ? Number(s.values[1][0]) - Number(s.values[0][0]) : 0;
    s.values.forEach(([t, v]) => {
      const f = Number(v);
      if (!Number.isFinite(f)) { prev = null; return; }
      const tt = Number(t);
      const gap = prev === null || (step > 0 && tt - prev > step * 1.5);
      d += `${gap ? "M" : "L"}${x(tt).toFixed(1)},${y(f).toFixed(1)} `;
      prev = tt;
    });
    const name = seriesName(s.metric);
    const path = svgEl("path", { d: d.trim(), fill: "none", stroke: color, "stroke-width": 1.5, "data-series": name });
    svg.appendChild(path);
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    li.appendChild(swatch);
    li.appendChild(document.createTextNode(name));
    li.dataset.series = name;
    legend.appendChild(li);
  });
}

// ---- targets of every agent ----

async function showTargets() {
  $("query").hidden = true;
  $("targets").hidden = false;
  const body = $("targets-table").querySelector("tbody");
  body.innerHTML = "";
  try {
    const json = await getJSON(api("targets?state=active"));
    json.data.activeTargets.forEach((t) => {
      const tr = document.createElement("tr");
      const labels = Object.entries(t.labels).map(([k, v]) => `${k}="${v}"`).join(", ");
      for (const text of [t.scrapePool, t.scrapeUrl, t.health, labels, t.lastScrape, t.lastError]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    });
    showWarnings(json.warnings);
  } catch (e) {
    showError(e.message);
  }
}

// ---- wiring ----

function setTab(t) {
  tab = t;
  $("tab-table").classList.toggle("active", t === "table");
  $("tab-graph").classList.toggle("active", t === "graph");
  $("table-view").hidden = t !== "table";
  $("graph-view").hidden = t !== "graph";
}

function route() {
  if (location.hash === "#targets") {
    showTargets();
  } else {
    $("query").hidden = false;
    $("targets").hidden = true;
  }
}

function init() {
  const zport = document.body.dataset.zpagesPort;
  document.querySelectorAll("a.zpages").forEach((a) => {
    if (zport) {
      a.href = `${location.protocol}//${location.hostname}:${zport}${a.dataset.path}`;
    } else {
      a.hidden = true;
    }
  });
  const box = $("expr");
  box.addEventListener("input", () => { selected = 0; updateCompletions(); });
  box.addEventListener("keydown", onKey);
  box.addEventListener("blur", () => { $("completions").hidden = true; });
  $("run").addEventListener("click", run);
  $("tab-table").addEventListener("click", () => { setTab("table"); run(); });
  $("tab-graph").addEventListener("click", () => { setTab("graph"); run(); });
  $("range").addEventListener("change", () => { if (tab === "graph") run(); });
  window.addEventListener("hashchange", route);
  const params = new URLSearchParams(location.search);
  if (params.get("range")) $("range").value = params.get("range");
  setTab(params.get("tab") === "graph" ? "graph" : "table");
  if (params.get("expr")) {
    box.value = params.get("expr");
    run();
  }
  route();
  loadNames().then(() => { document.body.dataset.names = "loaded"; });
}

init();
