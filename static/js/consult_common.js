// Shared by the consultation pages: their strings, status badges, and the key-image picker.

import { boot, el, formatName } from "./common.js";

/** A consultation string in the page's language, with {placeholders} filled in. */
export function ct(key, values = {}) {
  const text = (boot.consult_strings || {})[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

export function statusBadge(status) {
  return el("span", { class: `cbadge status-${status}` }, ct(`status.${status}`));
}

export function urgencyBadge(urgency) {
  return el("span", { class: `cbadge urgency-${urgency}` }, ct(`urgency.${urgency}`));
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(boot.lang === "vi" ? "vi-VN" : "en-GB", { dateStyle: "short", timeStyle: "short" });
}

export function megabytes(bytes) {
  return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0);
}

export function patient(item) {
  return [formatName(item.patient_name), item.patient_id ? `(${item.patient_id})` : ""].filter(Boolean).join(" ");
}

export function showError(err) {
  const box = document.getElementById("consult-error");
  if (!box) return;
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}

/** The request's facts, message and (if any) answer, as DOM nodes. */
export function requestView(item) {
  const rows = [
    [ct("patient"), patient(item)],
    [ct("study"), item.study_description || item.study_uid],
    [ct("partner"), item.partner || (item.by_link ? ct("partner.none") : "")],
    [ct("requested_by"), item.requested_by],
    [ct("urgency"), urgencyBadge(item.urgency)],
    [ct("status"), statusBadge(item.status)],
  ];
  return [
    el("dl", { class: "consult-facts" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h2", {}, ct("message")),
    el("p", { class: "consult-message" }, item.message),
    item.answer_text ? el("h2", {}, ct("answer")) : null,
    item.answer_text ? el("p", { class: "consult-answer", id: "answer-text" }, item.answer_text) : null,
    item.answered_by ? el("p", { class: "muted" }, `${ct("answered_by")}: ${item.answered_by}`) : null,
    item.last_error && item.status !== "answered" ? el("p", { class: "alert error consult-last-error" }, item.last_error) : null,
  ].filter(Boolean);
}

/** Thumbnails to tick as key images; returns a function giving the chosen SOP UIDs. */
export function keyImagePicker(container, images) {
  const chosen = new Set();
  container.replaceChildren(...images.series.map((series) => el("div", { class: "key-series" },
    series.instances.map((inst) => {
      const src = `/dicomweb/studies/${encodeURIComponent(images.study_uid)}/series/${encodeURIComponent(series.series_uid)}/instances/${encodeURIComponent(inst.sop_uid)}/thumbnail`;
      const box = el("input", { type: "checkbox", value: inst.sop_uid, onchange: (e) => {
        if (e.target.checked) chosen.add(inst.sop_uid); else chosen.delete(inst.sop_uid);
      } });
      return el("label", { class: "key-image", title: `#${inst.number ?? ""}` },
        box, el("img", { src, alt: `#${inst.number ?? ""}`, loading: "lazy", width: 96, height: 96 }));
    }))));
  return () => [...chosen];
}

/** A push's progress: a bar, n of m instances, bytes on the wire, the partner's count. */
export function pushProgress(push) {
  const text = ct("push.progress", { sent: push.sent, total: push.total, mb: megabytes(push.wire_bytes) });
  const bar = el("progress", { max: Math.max(1, push.total), value: push.sent });
  const verified = push.verified_count !== null && push.verified_count !== undefined
    ? el("span", { class: "muted" }, ` · ${ct("push.verified", { count: push.verified_count })}`) : null;
  return [bar, " ", text, verified];
}
