// The operations dashboard: totals, two SVG charts, modalities, the job queue, and
// deleting a study. Data comes from /admin/ops/api/summary; nothing is fetched from
// anywhere else, and every value reaches the page as text (el() never parses HTML).

import { boot, t, el, getJSON, postJSON, deleteJSON } from "./common.js";

/** This page's own strings (pacs/viewer/dashboard.py STRINGS, merged into the boot data). */
const ot = (key, values) => t(key, values);

const SVG = "http://www.w3.org/2000/svg";
const API = "/admin/ops/api";
const REFRESH_MS = 30000;
// Distinguishable on the dark background, and for the common colour-vision deficiencies.
const PALETTE = ["#4fb3ff", "#ffb000", "#4cd18a", "#ff6b6b", "#c792ea", "#f78c6c",
  "#89ddff", "#c3e88d", "#ffcb6b", "#82aaff", "#9aa8b6"];

const lang = boot.lang === "en" ? "en-GB" : "vi-VN";
const number = new Intl.NumberFormat(lang);

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function ago(iso) {
  if (!iso) return t("common.never");
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return ot("ops.ago_s", { n: Math.round(seconds) });
  if (seconds < 3600) return ot("ops.ago_m", { n: Math.round(seconds / 60) });
  if (seconds < 86400) return ot("ops.ago_h", { n: Math.round(seconds / 3600) });
  return ot("ops.ago_d", { n: Math.round(seconds / 86400) });
}

/** The local calendar days of the window, oldest first, as YYYY-MM-DD. */
export function windowDays(count, now = new Date()) {
  const days = [];
  for (let i = count - 1; i >= 0; i -= 1) {
    const d = new Date(now.getFullYear(), now.getMonth(), now.getDate() - i);
    const month = String(d.getMonth() + 1).padStart(2, "0");
    const day = String(d.getDate()).padStart(2, "0");
    days.push(`${d.getFullYear()}-${month}-${day}`);
  }
  return days;
}

/** A round step for about `parts` gridlines up to `max`. */
function niceStep(max, parts = 4) {
  if (max <= 0) return 1;
  const raw = max / parts;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return step || raw;
}

const W = 720;
const H = 260;
const M = { top: 12, right: 12, bottom: 34, left: 64 };

function frame(container, label) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", "aria-label": label });
  container.replaceChildren(root);
  return root;
}

function yAxis(root, max, format) {
  const step = niceStep(max);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const height = H - M.top - M.bottom;
  for (let v = 0; v <= top + step / 2; v += step) {
    const y = M.top + height - (v / top) * height;
    root.append(svg("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid-line" }));
    root.append(svg("text", { x: M.left - 6, y: y + 4, class: "axis-label", "text-anchor": "end" },
      format(v)));
  }
  return (value) => M.top + height - (value / top) * height;
}

function xLabels(root, days, x, band) {
  const every = Math.max(1, Math.ceil(days.length / 8));
  const last = days.length - 1;
  days.forEach((day, i) => {
    // Every few days, and the last one (today) unless a label sits right next to it.
    const shown = i === last || (i % every === 0 && last - i >= every / 2);
    if (!shown) return;
    root.append(svg("text", { x: x(i) + band / 2, y: H - M.bottom + 16, class: "axis-label",
      "text-anchor": "middle" }, day.slice(5)));
  });
}

function noData(container) {
  container.replaceChildren(el("p", { class: "muted no-data" }, ot("ops.no_data")));
}

export function drawStudiesPerDay(container, legend, rows, dayCount) {
  const days = windowDays(dayCount);
  const byDay = new Map(days.map((d) => [d, new Map()]));
  const totals = new Map();
  for (const row of rows) {
    const cell = byDay.get(row.day);
    if (!cell) continue;
    cell.set(row.modality, (cell.get(row.modality) || 0) + row.studies);
    totals.set(row.modality, (totals.get(row.modality) || 0) + row.studies);
  }
  legend.replaceChildren();
  if (totals.size === 0) {
    noData(container);
    return;
  }
  const modalities = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  const colour = new Map(modalities.map((m, i) => [m, PALETTE[i % PALETTE.length]]));
  const max = Math.max(...days.map((d) => [...byDay.get(d).values()].reduce((a, b) => a + b, 0)));
  const root = frame(container, ot("ops.per_day"));
  const y = yAxis(root, max, (v) => number.format(v));
  const band = (W - M.left - M.right) / days.length;
  const x = (i) => M.left + i * band;
  days.forEach((day, i) => {
    let base = 0;
    for (const modality of modalities) {
      const count = byDay.get(day).get(modality) || 0;
      if (!count) continue;
      const top = y(base + count);
      const rect = svg("rect", {
        x: x(i) + band * 0.12, width: Math.max(1, band * 0.76), y: top, height: y(base) - top,
        fill: colour.get(modality), class: "bar", "data-day": day, "data-modality": modality,
      }, svg("title", {}, `${day} ${modality}: ${number.format(count)}`));
      root.append(rect);
      base += count;
    }
  });
  xLabels(root, days, x, band);
  for (const modality of modalities) {
    legend.append(el("span", { class: "legend-item" },
      el("span", { class: "swatch", "data-colour": colour.get(modality) }),
      `${modality} (${number.format(totals.get(modality))})`));
  }
  // Colours are applied through the CSSOM: the page's policy forbids style attributes.
  legend.querySelectorAll(".swatch").forEach((s) => { s.style.background = s.dataset.colour; });
}

export function drawGrowth(container, growth, dayCount) {
  const days = windowDays(dayCount);
  const added = new Map(growth.days.map((g) => [g.day, g.bytes]));
  let running = growth.baseline_bytes;
  const points = days.map((day) => {
    running += added.get(day) || 0;
    return running;
  });
  if (running === 0) {
    noData(container);
    return;
  }
  const root = frame(container, ot("ops.growth"));
  const y = yAxis(root, Math.max(...points), formatBytes);
  const band = (W - M.left - M.right) / days.length;
  const x = (i) => M.left + i * band + band / 2;
  const line = points.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const floor = y(0).toFixed(1);
  root.append(svg("path", { d: `${line} L${x(points.length - 1).toFixed(1)},${floor} L${x(0).toFixed(1)},${floor} Z`,
    class: "area" }));
  root.append(svg("path", { d: line, class: "line" }));
  points.forEach((v, i) => {
    root.append(svg("circle", { cx: x(i), cy: y(v), r: 2.5, class: "point", "data-day": days[i] },
      svg("title", {}, `${days[i]}: ${formatBytes(v)}`)));
  });
  xLabels(root, days, (i) => M.left + i * band, band);
}

function card(label, value, extra) {
  return el("div", { class: "ops-card" }, el("div", { class: "card-label" }, label),
    el("div", { class: "card-value" }, value), extra ? el("div", { class: "card-extra muted" }, extra) : null);
}

function drawTotals(data) {
  const { totals, storage } = data;
  let extra = `${ot("ops.storage_quota")}: ${storage.quota_bytes ? formatBytes(storage.quota_bytes) : ot("ops.no_quota")}`;
  if (storage.free_bytes !== null) extra += ` · ${ot("ops.storage_free")}: ${formatBytes(storage.free_bytes)}`;
  document.getElementById("ops-totals").replaceChildren(
    card(ot("ops.patients"), number.format(totals.patients)),
    card(ot("ops.studies"), number.format(totals.studies)),
    card(ot("ops.instances"), number.format(totals.instances)),
    card(ot("ops.storage_used"), formatBytes(storage.used_bytes), extra),
  );
}

function stale(iso) {
  return !iso || Date.now() - Date.parse(iso) > 86400 * 1000;
}

function drawModalities(rows) {
  const body = document.querySelector("#ops-modalities tbody");
  body.replaceChildren(...rows.map((m) => el("tr", { "data-ae": m.ae_title },
    el("td", {}, m.ae_title, m.enrolled ? null : el("span", { class: "tag" }, ot("ops.not_enrolled"))),
    el("td", {}, m.description),
    el("td", {}, m.address),
    el("td", { class: stale(m.last_contact) ? "stale" : "fresh", title: m.last_contact || "" }, ago(m.last_contact)),
    el("td", { class: stale(m.last_store) ? "stale" : "fresh", title: m.last_store || "" }, ago(m.last_store)),
    el("td", { class: "num" }, number.format(m.series)),
  )));
}

function drawQueue(rows, failed) {
  const body = document.querySelector("#ops-queue tbody");
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted" }, ot("ops.queue_empty"))));
  } else {
    body.replaceChildren(...rows.map((q) => el("tr", { "data-kind": q.kind },
      el("td", {}, q.kind),
      el("td", { class: "num" }, number.format(q.queued)),
      el("td", { class: "num" }, number.format(q.running)),
      el("td", { class: "num" }, number.format(q.done)),
      el("td", { class: q.dead ? "num stale" : "num" }, number.format(q.dead)),
      el("td", { class: "num" }, q.oldest_due_s ? `${number.format(Math.round(q.oldest_due_s))} s` : "–"),
    )));
  }
  document.getElementById("ops-failed").replaceChildren(...failed.map((job) => el("li", {},
    el("code", {}, `#${job.id} ${job.kind}`), ` · ${ot("ops.attempts")}: ${job.attempts} · `,
    el("span", { class: "error-text" }, job.error), " ",
    el("button", { type: "button", class: "small", onclick: () => retry(job.id) }, ot("ops.retry")),
  )));
}

function showError(err) {
  const box = document.getElementById("ops-error");
  box.textContent = err ? err.message : "";
  box.hidden = !err;
}

async function retry(id) {
  try {
    await postJSON(`${API}/jobs/${id}/retry`, {});
    await refresh();
  } catch (err) {
    showError(err);
  }
}

const daysSelect = document.getElementById("ops-days");

async function refresh() {
  const days = Number(daysSelect.value);
  const offset = -new Date().getTimezoneOffset();
  try {
    const data = await getJSON(`${API}/summary?days=${days}&offset=${offset}`);
    showError(null);
    drawTotals(data);
    drawStudiesPerDay(document.getElementById("chart-studies"),
      document.getElementById("chart-studies-legend"), data.studies_per_day, days);
    drawGrowth(document.getElementById("chart-growth"), data.growth, days);
    drawModalities(data.modalities);
    drawQueue(data.queue, data.failed_jobs);
    document.getElementById("ops-updated").textContent =
      ot("ops.updated", { time: new Date().toLocaleTimeString(lang) });
    document.body.dataset.loaded = "true";
  } catch (err) {
    showError(err);
  }
}

async function deleteStudy(event) {
  event.preventDefault();
  const input = document.getElementById("delete-study-uid");
  const uid = input.value.trim();
  const result = document.getElementById("delete-study-result");
  result.textContent = "";
  if (!uid || !window.confirm(ot("ops.delete_confirm", { uid }))) return;
  try {
    const answer = await deleteJSON(`${API}/studies/${encodeURIComponent(uid)}`);
    result.textContent = answer.message;
    result.className = "alert info";
    input.value = "";
    await refresh();
  } catch (err) {
    result.textContent = err.message;
    result.className = "alert error";
  }
}

daysSelect.addEventListener("change", refresh);
document.getElementById("ops-refresh").addEventListener("click", refresh);
document.getElementById("delete-study-form").addEventListener("submit", deleteStudy);
refresh();
setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
