// Shared by every page: the boot data, translations, JSON calls, dates and names.
//
// Patient data only ever reaches the page through textContent (see el()), never as
// HTML, so a name like "<img src=x onerror=…>" is shown as the text it is.

const bootElement = document.getElementById("pacs-boot");
export const boot = bootElement ? JSON.parse(bootElement.textContent) : { strings: {}, lang: "vi" };

/** The current language's string for `key`, with {placeholders} filled from `values`. */
export function t(key, values = {}) {
  const text = boot.strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

export class ApiError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
  }
}

function csrfToken() {
  return boot.csrf || document.querySelector('meta[name="csrf-token"]')?.content || "";
}

function signInAgain() {
  // A share link's visitor has no account: their page says why the link stopped working.
  if (boot.share) { location.assign("/shared"); return; }
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

/** fetch() with the CSRF header on state changes; 401 sends the user to the sign-in page. */
export async function request(url, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, signal, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, t("error.network"));
  }
  if (response.status === 401) {
    signInAgain();
    throw new ApiError(401, t("error.session_expired"));
  }
  if (!response.ok) {
    let reason = "";
    try { reason = (await response.json()).reason; } catch { /* not JSON */ }
    if (response.status === 403) reason = reason || t("error.forbidden");
    if (response.status === 404) reason = t("error.not_found");
    throw new ApiError(response.status, reason);
  }
  return raw ? response : response.json();
}

export const getJSON = (url, opts) => request(url, opts);
export const postJSON = (url, body, opts = {}) => request(url, { ...opts, method: "POST", body });
export const deleteJSON = (url, opts = {}) => request(url, { ...opts, method: "DELETE" });

/** Create an element; children are nodes or strings (set as text, never parsed as HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** A DICOM date (YYYYMMDD) in the local format: dd/mm/yyyy in Vietnamese, 18 Mar 2024 in English. */
export function formatDate(da) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(da || "");
  if (!m) return da || "";
  const [, y, mo, d] = m;
  if (boot.lang === "vi") return `${d}/${mo}/${y}`;
  return `${d} ${MONTHS[Number(mo) - 1] ?? mo} ${y}`;
}

/** A DICOM time (HHMMSS.ffffff) as HH:MM. */
export function formatTime(tm) {
  const m = /^(\d{2})(\d{2})?/.exec(tm || "");
  return m ? `${m[1]}:${m[2] ?? "00"}` : "";
}

/**
 * A person name (PN) for display: "BS. Lê Quang Vinh" from "Lê^Quang Vinh^^BS.".
 * Ideographic and phonetic groups (after "=") follow the alphabetic one.
 */
export function formatName(pn) {
  if (!pn) return "";
  const groups = pn.split("=").map((group) => {
    const [family = "", given = "", middle = "", prefix = "", suffix = ""] = group.split("^");
    return [prefix, family, given, middle, suffix].map((s) => s.trim()).filter(Boolean).join(" ");
  });
  return groups.filter(Boolean).join(" = ");
}

export function formatSex(sex) {
  return sex ? t(`sex.${sex}`) : "";
}

/** A YYYY-MM-DD string of a local Date (for <input type=date>). */
export function isoDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
