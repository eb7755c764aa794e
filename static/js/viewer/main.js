// The viewer page: series and prior studies on the left, 1–4 viewports, the toolbar,
// keyboard shortcuts, cine, the tag browser and full screen.

import { boot, t, el, getJSON, postJSON, deleteJSON, formatDate, formatName } from "../common.js";
import { openShareDialog, formatWhen } from "../share.js";
import { CT_PRESETS } from "./imaging.js";
import { Stack } from "./stack.js";
import { Viewport } from "./viewport.js";
import { openTags } from "./tags.js";

const LAYOUTS = { "1x1": 1, "1x2": 2, "2x2": 4 };
const TOOL_KEYS = { w: "wl", p: "pan", z: "zoom", s: "scroll", l: "length", a: "angle", r: "rect", e: "ellipse" };

class Viewer {
  constructor() {
    this.root = document.getElementById("viewer");
    this.grid = document.getElementById("viewport-grid");
    this.seriesList = document.getElementById("series-list");
    this.priorsList = document.getElementById("priors-list");
    this.presetSelect = document.getElementById("preset");
    this.layoutSelect = document.getElementById("layout");
    this.fpsInput = document.getElementById("fps");
    this.qualitySelect = document.getElementById("quality");
    this.studies = new Map(); // study uid → study JSON (this study and opened priors)
    this.stacks = new Map(); // series uid → Stack
    this.viewports = [];
    this.active = null;
    this.tool = "wl";
    this.cine = null;
    this.mode = this.defaultMode();
    this.measurements = 0;
    this.showOverlays = true;
    this.qualitySelect.value = this.mode;
    this.keyImages = []; // [{sop_uid, frame}] chosen for the result sheet
    window.pacsViewer = this; // for tests and benchmarks
  }

  defaultMode() {
    const saved = localStorage.getItem("pacs.quality");
    if (saved === "raw" || saved === "rendered") return saved;
    const small = Math.min(screen.width, screen.height) < 600;
    const coarse = matchMedia("(pointer: coarse)").matches;
    const conn = navigator.connection;
    const slow = conn && (conn.saveData || /2g|3g/.test(conn.effectiveType || ""));
    return (small && coarse) || slow ? "rendered" : "raw";
  }

  async start(studyUid) {
    this.bindToolbar();
    this.bindKeyboard();
    this.setLayout("1x1");
    const coarse = matchMedia("(pointer: coarse)").matches;
    this.setTool(coarse ? "scroll" : "wl");
    let data;
    try {
      data = await getJSON(`/api/studies/${encodeURIComponent(studyUid)}`);
    } catch (err) {
      this.viewports[0].showMessage(`${t("v.load_error")}: ${err.message}`, true);
      return;
    }
    this.study = data.study;
    this.studies.set(studyUid, data);
    document.title = `${formatName(data.study.patient_name)} · ${t("v.title")}`;
    this.renderSeriesList(this.seriesList, data, true);
    if (!boot.share) this.renderPriors(data.priors);
    this.showShareInfo();
    this.loadKeyImages();
    const first = data.series.find((s) => s.has_pixels);
    if (first) await this.loadSeriesInto(this.viewports[0], first.series_uid);
    else this.viewports[0].showMessage(t("v.not_image"));
  }

  // ---------------------------------------------------------------- series and priors

  seriesButton(study, series) {
    const button = el("button", {
      type: "button", class: "series-thumb", draggable: "true", dataset: { series: series.series_uid },
      title: `${series.modality} ${series.number ?? ""} ${series.description || ""}`,
      onclick: () => this.loadSeriesInto(this.active, series.series_uid),
      ondragstart: (e) => e.dataTransfer.setData("application/x-pacs-series", series.series_uid),
    },
    series.has_pixels
      ? el("img", { src: `/api/series/${encodeURIComponent(series.series_uid)}/thumbnail`, alt: "", loading: "lazy", draggable: "false" })
      : null,
    el("div", { class: "s-desc" }, `${series.number ?? ""} ${series.description || series.modality}`.trim()),
    el("div", { class: "s-meta" }, `${series.modality} · ${series.multiframe ? series.num_frames : series.num_instances} ${t("wl.images")}`));
    return button;
  }

  renderSeriesList(container, data, current) {
    const head = el("div", { class: "study-head" },
      current ? t("v.this_study") : "", current ? el("br") : null,
      `${formatDate(data.study.study_date)} · ${data.study.description || ""}`);
    container.append(head, ...data.series.map((s) => this.seriesButton(data.study, s)));
  }

  renderPriors(priors) {
    if (!priors.length) {
      this.priorsList.replaceChildren(el("p", { class: "study-head" }, t("v.no_priors")));
      return;
    }
    this.priorsList.replaceChildren(...priors.map((p) => {
      const holder = el("div");
      const button = el("button", {
        type: "button", class: "prior", dataset: { study: p.study_uid },
        onclick: async () => {
          if (holder.childElementCount) { holder.replaceChildren(); button.classList.remove("open"); return; }
          button.classList.add("open");
          const data = await this.openStudy(p.study_uid);
          this.renderSeriesList(holder, data, false);
          postJSON(`/api/studies/${encodeURIComponent(p.study_uid)}/opened`, {}).catch(() => {});
        },
      }, `${formatDate(p.study_date)} · ${p.modalities.join("/")} · ${p.description || ""}`);
      return el("div", {}, button, holder);
    }));
  }

  async openStudy(uid) {
    if (!this.studies.has(uid)) this.studies.set(uid, await getJSON(`/api/studies/${encodeURIComponent(uid)}`));
    return this.studies.get(uid);
  }

  findSeries(uid) {
    for (const data of this.studies.values()) {
      const series = data.series.find((s) => s.series_uid === uid);
      if (series) return { series, study: data.study };
    }
    return null;
  }

  stackFor(series) {
    const key = `${series.series_uid}|${this.mode}`;
    let stack = this.stacks.get(key);
    if (stack) {
      this.stacks.delete(key); // most recently used last
    } else {
      stack = new Stack(series, this.mode);
    }
    this.stacks.set(key, stack);
    this.forgetOldStacks();
    return stack;
  }

  /** Keep the pixels of a few series only: a long session must not exhaust a phone's memory. */
  forgetOldStacks() {
    const keep = this.mode === "raw" ? 6 : 12;
    const shown = new Set(this.viewports.map((v) => v.stack));
    for (const [key, stack] of this.stacks) {
      if (this.stacks.size <= keep) break;
      if (!shown.has(stack)) this.stacks.delete(key);
    }
  }

  async loadSeriesInto(viewport, seriesUid) {
    const found = this.findSeries(seriesUid);
    if (!found || !viewport) return;
    this.stopCine();
    const opened = viewport.setStack(this.stackFor(found.series), found.study);
    this.markActiveThumbs(); // the viewport holds the new stack from the first line of setStack
    await opened;
    this.refreshPresets();
    this.updateFps(viewport);
  }

  markActiveThumbs() {
    for (const b of document.querySelectorAll(".series-thumb")) {
      b.classList.toggle("active", this.active?.stack?.uid === b.dataset.series);
    }
  }

  // ---------------------------------------------------------------- layout

  setLayout(name) {
    const count = LAYOUTS[name] || 1;
    this.layoutSelect.value = name;
    this.grid.className = `v-grid layout-${name}`;
    while (this.viewports.length > count) this.viewports.pop().destroy();
    while (this.viewports.length < count) {
      const viewport = new Viewport(this, this.viewports.length);
      this.viewports.push(viewport);
      this.grid.append(viewport.element);
      this.fillEmpty(viewport);
    }
    if (!this.viewports.includes(this.active)) this.activate(this.viewports[0]);
  }

  /** A new viewport shows the next series of the study not on screen yet. */
  fillEmpty(viewport) {
    const data = this.study && this.studies.get(this.study.study_uid);
    if (!data) return;
    const shown = new Set(this.viewports.map((v) => v.stack?.uid).filter(Boolean));
    const next = data.series.find((s) => s.has_pixels && !shown.has(s.series_uid));
    if (next) this.loadSeriesInto(viewport, next.series_uid);
  }

  toggleMaximize(viewport) {
    if (this.viewports.length === 1) return;
    this.grid.classList.toggle("maximized");
    for (const v of this.viewports) v.element.hidden = this.grid.classList.contains("maximized") && v !== viewport;
    this.grid.style.gridTemplate = this.grid.classList.contains("maximized") ? "1fr / 1fr" : "";
  }

  activate(viewport) {
    if (this.active === viewport) return;
    this.active = viewport;
    for (const v of this.viewports) v.element.classList.toggle("active", v === viewport);
    this.refreshPresets();
    this.markActiveThumbs();
    this.showKeyState();
  }

  // ---------------------------------------------------------------- tools and presets

  setTool(tool) {
    this.tool = tool;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
  }

  refreshPresets() {
    const v = this.active;
    const image = v?.currentImage();
    const meta = v?.slot?.meta;
    const options = [el("option", { value: "" }, `${t("v.presets")}…`)];
    const windows = image?.windows?.length ? image.windows : meta?.windows || [];
    windows.forEach((w, i) => options.push(el("option", { value: `file:${i}` },
      `${t("v.preset.file")}${w[2] ? ` ${w[2]}` : ""} (${Math.round(w[1])}/${Math.round(w[0])})`)));
    if (image?.voiLut) options.push(el("option", { value: "voilut" }, `${t("v.preset.file")} VOI LUT`));
    const isCT = meta?.modality === "CT" || meta?.rescale_type === "HU" || v?.stack?.series.modality === "CT";
    if (isCT) {
      CT_PRESETS.forEach((p) => options.push(el("option", { value: `ct:${p.key}` },
        `${t(`v.preset.${p.key}`)} (${p.width}/${p.center})`)));
    }
    options.push(el("option", { value: "full" }, t("v.preset.full")));
    this.presetSelect.replaceChildren(...options);
    this.presetList = ["", ...options.slice(1).map((o) => o.value)];
  }

  applyPreset(value) {
    const v = this.active;
    if (!v || !value) return;
    if (value.startsWith("file:")) v.useFileVoi(Number(value.slice(5)));
    else if (value === "voilut") { v.ensureView(); v.view.useVoiLut = true; v.requestDraw(); }
    else if (value.startsWith("ct:")) {
      const p = CT_PRESETS.find((x) => x.key === value.slice(3));
      if (p) v.setWindow(p.center, p.width);
    } else if (value === "full") {
      const image = v.currentImage();
      if (image) { const [lo, hi] = image.modalityRange; v.setWindow((lo + hi) / 2, Math.max(1, hi - lo)); }
    }
    this.presetSelect.value = "";
  }

  presetByNumber(n) {
    if (!this.presetList) this.refreshPresets();
    const value = this.presetList[n];
    if (value) this.applyPreset(value);
  }

  // ---------------------------------------------------------------- callbacks from viewports

  onImageChange(viewport) {
    if (viewport === this.active && !viewport.view) this.refreshPresets();
    if (viewport === this.active) this.showKeyState();
  }

  // ---------------------------------------------------------------- sharing, key images, downloads

  showShareInfo() {
    const expiry = document.getElementById("share-expiry");
    if (expiry && boot.share?.expires_at) {
      expiry.textContent = t("share.until", { when: formatWhen(boot.share.expires_at) });
    }
  }

  async loadKeyImages() {
    if (!boot.can_choose_key_images) return;
    try {
      this.keyImages = (await getJSON(`/api/studies/${encodeURIComponent(boot.study_uid)}/key-images`)).key_images;
    } catch { this.keyImages = []; }
    this.showKeyState();
  }

  isKeyImage(slot) {
    return Boolean(slot) && this.keyImages.some((k) => k.sop_uid === slot.sop && k.frame === slot.frame);
  }

  showKeyState() {
    const button = document.getElementById("key-image-button");
    if (!button) return;
    const chosen = this.isKeyImage(this.active?.slot);
    button.classList.toggle("active", chosen);
    button.setAttribute("aria-pressed", String(chosen));
    button.firstChild.textContent = chosen ? "★ " : "☆ ";
    document.getElementById("key-image-count").textContent = `${this.keyImages.length}/4`;
  }

  async toggleKeyImage() {
    const slot = this.active?.slot;
    if (!slot || !boot.can_choose_key_images) return;
    const url = `/api/studies/${encodeURIComponent(boot.study_uid)}/key-images`;
    try {
      const data = this.isKeyImage(slot)
        ? await deleteJSON(`${url}?sop_uid=${encodeURIComponent(slot.sop)}&frame=${slot.frame}`)
        : await postJSON(url, { sop_uid: slot.sop, frame: slot.frame });
      this.keyImages = data.key_images;
    } catch (err) {
      this.active.showMessage(err.message, true);
      setTimeout(() => this.active?.requestDraw(), 2500);
    }
    this.showKeyState();
  }

  openDownloads() {
    const dialog = document.getElementById("download-dialog");
    if (!dialog) return;
    const study = encodeURIComponent(boot.study_uid);
    document.getElementById("download-zip").href = `/api/studies/${study}/download.zip`;
    const slot = this.active?.slot;
    for (const [id, format] of [["download-dicom", "dicom"], ["download-jpeg", "jpeg"]]) {
      const link = document.getElementById(id);
      link.hidden = !slot;
      if (slot) link.href = `/api/instances/${encodeURIComponent(slot.sop)}/download?format=${format}&frame=${slot.frame}`;
    }
    dialog.showModal();
  }

  openShare() {
    const data = this.studies.get(boot.study_uid);
    if (data) openShareDialog(data.study, data.series);
  }

  onViewChange() {}

  onMeasurement() { this.measurements += 1; }

  // ---------------------------------------------------------------- cine

  updateFps(viewport) {
    const ms = viewport.slot?.meta?.frame_time;
    if (ms && ms > 0) this.fpsInput.value = String(Math.max(1, Math.min(60, Math.round(1000 / ms))));
  }

  toggleCine() {
    if (this.cine) { this.stopCine(); return; }
    const viewport = this.active;
    if (!viewport?.stack || viewport.stack.length < 2) return;
    let last = performance.now();
    const tick = (now) => {
      if (!this.cine) return;
      const fps = Math.max(1, Math.min(60, Number(this.fpsInput.value) || 15));
      if (now - last >= 1000 / fps) {
        last = now;
        viewport.step(1, true);
      }
      this.cine = requestAnimationFrame(tick);
    };
    this.cine = requestAnimationFrame(tick);
    document.getElementById("cine-button").classList.add("active");
    document.getElementById("cine-button").textContent = "❚❚";
  }

  stopCine() {
    if (this.cine) cancelAnimationFrame(this.cine);
    this.cine = null;
    const button = document.getElementById("cine-button");
    button.classList.remove("active");
    button.textContent = "▶";
  }

  // ---------------------------------------------------------------- toolbar and keys

  action(name) {
    const v = this.active;
    switch (name) {
      case "invert": v?.toggleInvert(); break;
      case "rotate-left": v?.rotate(-90); break;
      case "rotate-right": v?.rotate(90); break;
      case "flip-h": v?.flip(true); break;
      case "flip-v": v?.flip(false); break;
      case "fit": v?.fit(); break;
      case "one-to-one": v?.oneToOne(); break;
      case "reset": v?.reset(); break;
      case "clear-measurements": v?.clearMeasurements(); break;
      case "overlays":
        this.showOverlays = !this.showOverlays;
        for (const x of this.viewports) x.requestDraw();
        break;
      case "cine": this.toggleCine(); break;
      case "tags": if (v?.slot) openTags(v.slot.sop); break;
      case "fullscreen": this.toggleFullscreen(); break;
      case "help": document.getElementById("help-dialog").showModal(); break;
      case "key-image": this.toggleKeyImage(); break;
      case "share": this.openShare(); break;
      case "download": this.openDownloads(); break;
      case "toggle-series":
        this.root.classList.toggle(matchMedia("(max-width: 760px)").matches ? "show-sidebar" : "no-sidebar");
        break;
      default: break;
    }
  }

  toggleFullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen?.().catch(() => {});
  }

  bindToolbar() {
    for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => this.setTool(b.dataset.tool));
    for (const b of document.querySelectorAll("[data-action]")) b.addEventListener("click", () => this.action(b.dataset.action));
    this.presetSelect.addEventListener("change", () => this.applyPreset(this.presetSelect.value));
    this.layoutSelect.addEventListener("change", () => this.setLayout(this.layoutSelect.value));
    this.qualitySelect.addEventListener("change", () => {
      this.mode = this.qualitySelect.value;
      localStorage.setItem("pacs.quality", this.mode);
      for (const v of this.viewports) if (v.stack) this.loadSeriesInto(v, v.stack.uid);
    });
  }

  bindKeyboard() {
    document.addEventListener("keydown", (e) => {
      if (e.target.closest("input, select, textarea, dialog")) return;
      const v = this.active;
      const key = e.key;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      let handled = true;
      if (key === "ArrowDown" || key === "ArrowRight") v?.step(1);
      else if (key === "ArrowUp" || key === "ArrowLeft") v?.step(-1);
      else if (key === "PageDown") v?.step(Math.max(1, Math.round((v?.stack?.length || 10) / 10)));
      else if (key === "PageUp") v?.step(-Math.max(1, Math.round((v?.stack?.length || 10) / 10)));
      else if (key === "Home") v?.go(0);
      else if (key === "End") v?.go((v?.stack?.length || 1) - 1);
      else if (key === " ") this.toggleCine();
      else if (key === "Delete" || key === "Backspace") v?.clearMeasurements();
      else if (key === "Enter") this.toggleFullscreen();
      else if (key === "Escape") { v && (v.drawing = null); v?.requestDraw(); }
      else if (key === "?") this.action("help");
      else if (/^[1-9]$/.test(key)) this.presetByNumber(Number(key));
      else if (key.toLowerCase() in TOOL_KEYS) this.setTool(TOOL_KEYS[key.toLowerCase()]);
      else if (key.toLowerCase() === "i") v?.toggleInvert();
      else if (key === "0") v?.reset();
      else if (key.toLowerCase() === "f") v?.fit();
      else if (key.toLowerCase() === "t") this.action("tags");
      else if (key.toLowerCase() === "o") this.action("overlays");
      else if (key.toLowerCase() === "k") this.action("key-image");
      else handled = false;
      if (handled) e.preventDefault();
    });
  }
}

const viewer = new Viewer();
viewer.start(boot.study_uid);
