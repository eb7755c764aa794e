// One viewport: a stack on a canvas, with window/level, zoom, pan, rotation and flips,
// measurements, corner overlays, orientation markers, a slider, and pointer, wheel and
// touch handling. The viewer (main.js) owns the toolbar and the keyboard.

import { t, el, formatDate, formatTime, formatName, formatSex } from "../common.js";
import { paint } from "./imaging.js";
import { orientationLabels, slicePosition } from "./geometry.js";
import { MEASURE_TOOLS, evaluate, draw as drawMeasurement } from "./measure.js";

const WHEEL_STEP = 40;
const IDENTITY = [1, 0, 0, 1];

/** 2×2 product a·b of matrices stored as [a, b, c, d] (DOMMatrix order: x' = a·x + c·y). */
function compose(m, n) {
  return [
    m[0] * n[0] + m[2] * n[1],
    m[1] * n[0] + m[3] * n[1],
    m[0] * n[2] + m[2] * n[3],
    m[1] * n[2] + m[3] * n[3],
  ];
}

function freshZoom() {
  // `orient` holds the rotations and flips, composed on the screen side so that
  // "flip horizontally" always mirrors left-right on the screen, whatever the rotation.
  return { scale: 1, panX: 0, panY: 0, orient: IDENTITY, fitted: true };
}

/** The first window of an image shown rendered (no pixels here): the file's, else its range. */
function renderedWindow(meta) {
  const w = meta.windows?.[0];
  if (w) return { center: w[0], width: w[1], invert: false, useVoiLut: false };
  if (meta.samples_per_pixel === 3) return { center: 127.5, width: 256, invert: false, useVoiLut: false };
  const bits = meta.bits_stored || 8;
  const slope = meta.slope ?? 1;
  const intercept = meta.intercept ?? 0;
  const lo = meta.pixel_representation ? -(2 ** (bits - 1)) : 0;
  const hi = meta.pixel_representation ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const a = lo * slope + intercept;
  const b = hi * slope + intercept;
  return { center: (a + b) / 2, width: Math.abs(b - a) || 1, invert: false, useVoiLut: false };
}

export class Viewport {
  constructor(viewer, index) {
    this.viewer = viewer;
    this.index = index;
    this.stack = null;
    this.study = null;
    this.pos = 0;
    this.view = null; // {center, width, invert, useVoiLut}
    this.zoom = freshZoom();
    this.measurements = new Map(); // slot key → [measurement]
    this.drawing = null;
    this.pointers = new Map();
    this.paintCount = 0;
    this.paintMs = 0;
    this.painted = { image: null, center: NaN, width: NaN, invert: null, voi: null };
    this.frameRequested = false;
    this.wheelAccum = 0;
    this.unsubscribe = null;
    this.build();
  }

  // ---------------------------------------------------------------- DOM

  build() {
    this.canvas = el("canvas", { class: "image", "aria-label": t("v.title") });
    this.ctx = this.canvas.getContext("2d");
    this.offscreen = document.createElement("canvas");
    this.offctx = this.offscreen.getContext("2d", { willReadFrequently: false });
    this.corners = Object.fromEntries(["tl", "tr", "bl", "br"].map((c) => [c, el("div", { class: `corner ${c}` })]));
    this.orient = Object.fromEntries(["top", "bottom", "left", "right"].map((c) => [c, el("div", { class: `orient ${c}` })]));
    this.message = el("div", { class: "message", hidden: true, role: "status" });
    this.slider = el("input", { class: "slider", type: "range", min: 0, max: 0, value: 0, step: 1, "aria-label": t("v.slice") });
    this.progress = el("div", { class: "progress" });
    this.element = el("div", { class: "viewport", tabindex: 0, dataset: { index: this.index } },
      this.canvas, ...Object.values(this.corners), ...Object.values(this.orient), this.message, this.slider, this.progress);
    this.slider.addEventListener("input", () => this.go(Number(this.slider.value)));
    this.slider.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.element.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.element.addEventListener("pointermove", (e) => this.onPointerMove(e));
    this.element.addEventListener("pointerup", (e) => this.onPointerUp(e));
    this.element.addEventListener("pointercancel", (e) => this.onPointerUp(e));
    this.element.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    this.element.addEventListener("contextmenu", (e) => e.preventDefault());
    this.element.addEventListener("dblclick", () => this.viewer.toggleMaximize(this));
    this.element.addEventListener("dragover", (e) => { e.preventDefault(); this.element.classList.add("drop-target"); });
    this.element.addEventListener("dragleave", () => this.element.classList.remove("drop-target"));
    this.element.addEventListener("drop", (e) => {
      e.preventDefault();
      this.element.classList.remove("drop-target");
      const uid = e.dataTransfer.getData("application/x-pacs-series");
      if (uid) this.viewer.loadSeriesInto(this, uid);
    });
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.element);
    this.showMessage(t("v.no_image"));
  }

  resize() {
    const rect = this.element.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssWidth = Math.max(1, rect.width);
    this.cssHeight = Math.max(1, rect.height);
    this.canvas.width = Math.round(this.cssWidth * dpr);
    this.canvas.height = Math.round(this.cssHeight * dpr);
    if (this.zoom.fitted) this.fit(false);
    this.requestDraw();
  }

  showMessage(text, error = false) {
    this.message.hidden = !text;
    this.message.textContent = text || "";
    this.message.classList.toggle("error", Boolean(error));
  }

  // ---------------------------------------------------------------- stack

  /** Show `stack` (a Stack of `study`); keeps nothing of the previous one. */
  async setStack(stack, study) {
    this.unsubscribe?.();
    this.stack = stack;
    this.study = study;
    this.pos = 0;
    this.view = null;
    this.measurements = new Map();
    this.painted.image = null;
    this.zoom = freshZoom();
    this.showMessage(t("common.loading"));
    this.unsubscribe = stack.onChange((what) => this.onStackChange(what));
    try {
      await stack.open();
    } catch (err) {
      if (this.stack === stack) this.showMessage(`${t("v.load_error")}: ${err.message}`, true);
      return;
    }
    if (this.stack !== stack) return;
    if (!stack.length) {
      this.showMessage(t("v.not_image"));
      return;
    }
    this.pos = Math.min(stack.focus, stack.length - 1);
    this.slider.max = String(stack.length - 1);
    this.slider.hidden = stack.length < 2;
    this.requestDraw();
  }

  onStackChange(what) {
    if (what === "error") {
      this.showMessage(`${t("v.load_error")}: ${this.stack.error?.message ?? ""}`, true);
      return;
    }
    this.requestDraw();
  }

  get slot() { return this.stack?.slot(this.pos) ?? null; }

  /** Move to image `i` (clamped). */
  go(i) {
    if (!this.stack || !this.stack.length) return;
    const n = this.stack.length;
    const next = Math.max(0, Math.min(n - 1, Math.round(i)));
    if (next === this.pos) return;
    this.pos = next;
    this.stack.setFocus(next);
    this.requestDraw();
    this.viewer.onImageChange(this);
  }

  step(delta, wrap = false) {
    if (!this.stack?.length) return;
    const n = this.stack.length;
    this.go(wrap ? (((this.pos + delta) % n) + n) % n : this.pos + delta);
  }

  // ---------------------------------------------------------------- view state

  currentImage() {
    const slot = this.slot;
    return slot?.image ?? null;
  }

  /** The window in use, initialised from the first loaded image. */
  ensureView() {
    if (this.view) return this.view;
    const image = this.currentImage();
    if (!image) {
      if (this.stack?.mode === "rendered" && this.slot?.meta) this.view = renderedWindow(this.slot.meta);
      return this.view;
    }
    // Without a window in the file, its VOI LUT (if any) is the first view, as on the server.
    const voiFirst = !image.windows.length && Boolean(image.voiLut);
    this.view = { ...image.defaultWindow(), invert: false, useVoiLut: voiFirst };
    return this.view;
  }

  setWindow(center, width) {
    this.ensureView();
    if (!this.view) this.view = { center, width, invert: false, useVoiLut: false };
    this.view.center = center;
    this.view.width = Math.max(1, width);
    this.view.useVoiLut = false;
    this.requestDraw();
    this.viewer.onViewChange(this);
  }

  useFileVoi(i = 0) {
    const image = this.currentImage();
    const windows = image?.windows?.length ? image.windows : this.slot?.meta?.windows || [];
    if (windows[i]) this.setWindow(windows[i][0], windows[i][1]);
    else if (image?.voiLut) { this.ensureView(); this.view.useVoiLut = true; this.requestDraw(); }
    else if (image) { const w = image.defaultWindow(); this.setWindow(w.center, w.width); }
  }

  toggleInvert() {
    if (!this.ensureView()) return;
    this.view.invert = !this.view.invert;
    this.requestDraw();
  }

  imageSize() {
    const slot = this.slot;
    const image = slot?.image;
    const rows = image?.rows ?? slot?.meta?.rows ?? 1;
    const columns = image?.columns ?? slot?.meta?.columns ?? 1;
    const ps = slot?.meta?.pixel_spacing ?? image?.pixelSpacing;
    const aspect = ps && ps[0] > 0 && ps[1] > 0 ? ps[0] / ps[1] : 1;
    return { rows, columns, aspect };
  }

  fit(draw = true) {
    const { rows, columns, aspect } = this.imageSize();
    const turned = this.zoom.orient[0] === 0;
    const w = turned ? rows * aspect : columns;
    const h = turned ? columns : rows * aspect;
    this.zoom.scale = Math.min(this.cssWidth / w, this.cssHeight / h) || 1;
    this.zoom.panX = 0;
    this.zoom.panY = 0;
    this.zoom.fitted = true;
    if (draw) { this.requestDraw(); this.viewer.onViewChange(this); }
  }

  oneToOne() {
    this.zoom.scale = 1 / (window.devicePixelRatio || 1);
    this.zoom.fitted = false;
    this.requestDraw();
    this.viewer.onViewChange(this);
  }

  /** Turn the image on screen by ±90° (clockwise for positive). */
  rotate(degrees) {
    const quarter = degrees > 0 ? [0, 1, -1, 0] : [0, -1, 1, 0];
    this.zoom.orient = compose(quarter, this.zoom.orient);
    if (this.zoom.fitted) this.fit(false);
    this.requestDraw();
  }

  /** Mirror the image on screen, left-right or top-bottom. */
  flip(horizontal) {
    this.zoom.orient = compose(horizontal ? [-1, 0, 0, 1] : [1, 0, 0, -1], this.zoom.orient);
    this.requestDraw();
  }

  /** The on-screen rotation in degrees, and whether the image is mirrored. */
  orientation() {
    const [a, b, c, d] = this.zoom.orient;
    const mirrored = a * d - b * c < 0;
    // Mirrored: the orientation is (left-right flip)·(rotation) = [-cos, sin, …].
    const [ra, rb] = mirrored ? [-a, b] : [a, b];
    const degrees = ((Math.round((Math.atan2(rb, ra) * 180) / Math.PI) % 360) + 360) % 360;
    return { degrees, mirrored };
  }

  reset() {
    this.view = null;
    this.zoom = freshZoom();
    this.fit(false);
    this.ensureView();
    this.requestDraw();
    this.viewer.onViewChange(this);
  }

  clearMeasurements() {
    this.measurements = new Map();
    this.requestDraw();
  }

  /** Image → screen (CSS pixels) transform. */
  matrix() {
    const { rows, columns, aspect } = this.imageSize();
    const z = this.zoom;
    const [a, b, c, d] = z.orient;
    return new DOMMatrix()
      .translate(this.cssWidth / 2 + z.panX, this.cssHeight / 2 + z.panY)
      .multiply(new DOMMatrix([a, b, c, d, 0, 0]))
      .scale(z.scale, z.scale * aspect)
      .translate(-columns / 2, -rows / 2);
  }

  toImage(clientX, clientY) {
    const rect = this.element.getBoundingClientRect();
    const p = this.matrix().inverse().transformPoint(new DOMPoint(clientX - rect.left, clientY - rect.top));
    return { x: p.x, y: p.y };
  }

  // ---------------------------------------------------------------- drawing

  requestDraw() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.draw();
    });
  }

  draw() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.progress.style.width = this.stack?.length ? `${(100 * this.stack.loaded) / this.stack.length}%` : "0";
    if (this.stack?.mode === "rendered" || this.stack?.complete) this.progress.style.width = "0";
    const slot = this.slot;
    if (!slot) { this.updateOverlays(); return; }
    this.slider.value = String(this.pos);
    if (this.zoom.fitted) this.fit(false);
    const m = this.matrix();
    let source = null;
    if (this.stack.mode === "rendered") {
      source = this.renderedSource(slot);
    } else if (slot.image) {
      source = this.rasterize(slot.image);
    }
    if (slot.error) {
      const reason = slot.error.length > 160 ? `${slot.error.slice(0, 160)}…` : slot.error;
      this.showMessage(`${t("v.decode_error")}: ${reason}`, true);
    } else if (!source) {
      this.showMessage(t("common.loading"));
    } else {
      this.showMessage("");
    }
    if (source) {
      const { rows, columns } = this.imageSize();
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.transform(m.a, m.b, m.c, m.d, m.e, m.f);
      ctx.imageSmoothingEnabled = this.zoom.scale < 3;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(source, 0, 0, columns, rows);
      const overlay = slot.meta?.has_overlay && this.viewer.showOverlays ? this.stack.overlayImage(slot) : null;
      if (overlay?.ready) {
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(overlay.img, 0, 0, columns, rows);
      }
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const toScreen = (p) => m.transformPoint(new DOMPoint(p.x, p.y));
    for (const meas of this.measurements.get(slot.key) || []) drawMeasurement(ctx, meas, toScreen);
    if (this.drawing) drawMeasurement(ctx, this.drawing, toScreen);
    this.updateOverlays(m);
  }

  /** The window/levelled image in the offscreen canvas (repainted only when needed). */
  rasterize(image) {
    const view = this.ensureView();
    const p = this.painted;
    if (p.image === image && p.center === view.center && p.width === view.width
        && p.invert === view.invert && p.voi === view.useVoiLut) {
      return this.offscreen;
    }
    const started = performance.now();
    if (this.offscreen.width !== image.columns || this.offscreen.height !== image.rows) {
      this.offscreen.width = image.columns;
      this.offscreen.height = image.rows;
      this.imageData = null;
    }
    this.imageData ??= this.offctx.createImageData(image.columns, image.rows);
    paint(image, this.imageData, view);
    this.offctx.putImageData(this.imageData, 0, 0);
    Object.assign(p, { image, center: view.center, width: view.width, invert: view.invert, voi: view.useVoiLut });
    this.paintCount += 1;
    this.paintMs += performance.now() - started;
    return this.offscreen;
  }

  renderedSource(slot) {
    const view = this.ensureView() || { center: 0, width: 0, invert: false };
    const { rows, columns } = this.imageSize();
    const dpr = window.devicePixelRatio || 1;
    const s = Math.min(1, (this.zoom.scale * dpr));
    const size = s < 0.98 ? [Math.max(16, Math.round(columns * s)), Math.max(16, Math.round(rows * s))] : null;
    const entry = this.stack.renderedImage(this.pos, { ...view, size });
    // Prefetch the neighbours at the same window.
    for (const d of [1, -1, 2]) {
      if (this.stack.slot(this.pos + d)) this.stack.renderedImage(this.pos + d, { ...view, size });
    }
    if (entry?.ready) {
      this.lastRendered = { pos: this.pos, img: entry.img };
      return entry.img;
    }
    // While a new window is on its way, keep showing this image at the old one.
    return this.lastRendered?.pos === this.pos ? this.lastRendered.img : null;
  }

  updateOverlays(m) {
    const slot = this.slot;
    const study = this.study;
    const c = this.corners;
    if (!slot || !study) {
      for (const node of Object.values(c)) node.textContent = "";
      for (const node of Object.values(this.orient)) node.textContent = "";
      return;
    }
    const meta = slot.meta || {};
    const series = this.stack.series;
    c.tl.textContent = [
      formatName(study.patient_name),
      study.patient_id,
      [formatDate(study.birth_date), formatSex(study.sex)].filter(Boolean).join(" · "),
    ].filter(Boolean).join("\n");
    c.tr.textContent = [
      study.institution,
      study.description,
      `${formatDate(study.study_date)} ${formatTime(study.study_time)}`.trim(),
      study.accession,
    ].filter(Boolean).join("\n");
    const n = this.stack.length;
    const frames = meta.frames > 1 ? `  ${t("v.frame")}: ${slot.frame}/${meta.frames}` : "";
    const position = slicePosition(meta, slot.position);
    c.bl.textContent = [
      `${series.modality} ${series.number ?? ""} ${series.description || ""}`.trim(),
      `${t("v.slice")}: ${this.pos + 1}/${n}${frames}`,
      position !== null && position !== undefined ? `${t("v.location")}: ${position.toFixed(2)} mm` : "",
      meta.slice_thickness ? `${t("v.thickness")}: ${meta.slice_thickness} mm` : "",
    ].filter(Boolean).join("\n");
    const view = this.view;
    c.br.textContent = [
      view ? (view.useVoiLut ? "VOI LUT" : `W: ${Math.round(view.width)} L: ${Math.round(view.center)}`) : "",
      `${t("v.zoom")}: ${Math.round(this.zoom.scale * 100)}%`,
      this.orientationText(),
      meta.lossy ? "LOSSY" : "",
    ].filter(Boolean).join("\n");
    const labels = m ? orientationLabels(meta, m) : null;
    for (const side of ["top", "bottom", "left", "right"]) this.orient[side].textContent = labels?.[side] ?? "";
  }

  orientationText() {
    const { degrees, mirrored } = this.orientation();
    return [degrees ? `${degrees}°` : "", mirrored ? "⇋" : ""].filter(Boolean).join(" ");
  }

  // ---------------------------------------------------------------- input

  toolFor(event) {
    if (event.pointerType === "mouse") {
      if (event.button === 2) return "wl";
      if (event.button === 1) return "pan";
      if (event.ctrlKey) return "zoom";
      if (event.shiftKey) return "pan";
    }
    return this.viewer.tool;
  }

  onPointerDown(e) {
    this.viewer.activate(this);
    this.element.focus({ preventScroll: true });
    try {
      this.element.setPointerCapture(e.pointerId);
    } catch {
      // A pointer the browser no longer tracks (it was released meanwhile): no capture needed.
    }
    this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (this.pointers.size === 2) {
      // Pinch: zoom and pan with two fingers; any one-finger gesture ends.
      this.drawing = null;
      this.gesture = { kind: "pinch", ...this.pinchState() };
      return;
    }
    const tool = this.toolFor(e);
    this.gesture = { kind: tool, x: e.clientX, y: e.clientY, startPos: this.pos, moved: false };
    if (MEASURE_TOOLS.has(tool) && this.slot) {
      const p = this.toImage(e.clientX, e.clientY);
      if (this.drawing?.type === "angle" && this.drawing.points.length === 3) {
        this.finishMeasurement();
        return;
      }
      this.drawing = { type: tool, points: [p, { ...p }], active: true };
    }
  }

  pinchState() {
    const [a, b] = [...this.pointers.values()];
    return { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1, mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2 };
  }

  onPointerMove(e) {
    if (this.drawing?.type === "angle" && this.drawing.points.length === 3 && !this.pointers.size) {
      this.drawing.points[2] = this.toImage(e.clientX, e.clientY);
      this.requestDraw();
      return;
    }
    if (!this.pointers.has(e.pointerId)) return;
    const last = this.pointers.get(e.pointerId);
    this.pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    const g = this.gesture;
    if (!g) return;
    if (g.kind === "pinch" && this.pointers.size === 2) {
      const now = this.pinchState();
      this.zoomAround(now.distance / g.distance, now.mx, now.my);
      this.zoom.panX += now.mx - g.mx;
      this.zoom.panY += now.my - g.my;
      Object.assign(g, now);
      this.requestDraw();
      return;
    }
    const dx = e.clientX - last.x;
    const dy = e.clientY - last.y;
    if (Math.abs(e.clientX - g.x) + Math.abs(e.clientY - g.y) > 3) g.moved = true;
    switch (g.kind) {
      case "wl": this.dragWindow(dx, dy); break;
      case "pan":
        this.zoom.panX += dx;
        this.zoom.panY += dy;
        this.zoom.fitted = false;
        this.requestDraw();
        break;
      case "zoom": this.zoomAround(Math.exp(-dy * 0.01), g.x, g.y); break;
      case "scroll": {
        const n = this.stack?.length || 1;
        const perImage = Math.max(2, Math.min(20, this.cssHeight / n));
        this.go(g.startPos + Math.round((e.clientY - g.y) / perImage));
        break;
      }
      default:
        if (this.drawing) {
          this.drawing.points[1] = this.toImage(e.clientX, e.clientY);
          this.requestDraw();
        }
    }
  }

  onPointerUp(e) {
    this.pointers.delete(e.pointerId);
    if (this.gesture?.kind === "pinch") {
      if (this.pointers.size === 0) this.gesture = null;
      return;
    }
    this.gesture = null;
    const d = this.drawing;
    if (!d) return;
    if (d.type === "angle" && d.points.length === 2) {
      // The first leg is done; the apex is its end; the next click places the second leg.
      const [a, b] = d.points;
      if (Math.hypot(a.x - b.x, a.y - b.y) < 1) { this.drawing = null; this.requestDraw(); return; }
      d.points.push({ ...b });
      this.requestDraw();
      return;
    }
    if (d.type !== "angle") this.finishMeasurement();
  }

  finishMeasurement() {
    const d = this.drawing;
    this.drawing = null;
    if (!d || !this.slot) return;
    const [a, b] = d.points;
    if (d.type !== "angle" && Math.hypot(a.x - b.x, a.y - b.y) < 1) { this.requestDraw(); return; }
    d.active = false;
    evaluate(d, this.slot.meta, this.slot.image);
    const key = this.slot.key;
    if (!this.measurements.has(key)) this.measurements.set(key, []);
    this.measurements.get(key).push(d);
    this.requestDraw();
    this.viewer.onMeasurement(this, d);
  }

  dragWindow(dx, dy) {
    const view = this.ensureView();
    if (!view) return;
    const image = this.currentImage();
    const [lo, hi] = image ? image.modalityRange : [0, 4096];
    const k = Math.max(0.05, (hi - lo) / Math.max(200, this.cssHeight * 1.5));
    this.setWindow(view.center + dy * k, Math.max(1, view.width + dx * k));
  }

  zoomAround(factor, clientX, clientY) {
    const rect = this.element.getBoundingClientRect();
    const cx = clientX - rect.left - this.cssWidth / 2;
    const cy = clientY - rect.top - this.cssHeight / 2;
    const old = this.zoom.scale;
    const scale = Math.max(0.05, Math.min(40, old * factor));
    const f = scale / old;
    // Keep the point under the pointer still.
    this.zoom.panX = cx - (cx - this.zoom.panX) * f;
    this.zoom.panY = cy - (cy - this.zoom.panY) * f;
    this.zoom.scale = scale;
    this.zoom.fitted = false;
    this.requestDraw();
    this.viewer.onViewChange(this);
  }

  onWheel(e) {
    e.preventDefault();
    this.viewer.activate(this);
    if (e.ctrlKey) {
      this.zoomAround(Math.exp(-e.deltaY * 0.002), e.clientX, e.clientY);
      return;
    }
    const delta = e.deltaMode === 1 ? e.deltaY * WHEEL_STEP : e.deltaY;
    this.wheelAccum += delta;
    while (Math.abs(this.wheelAccum) >= WHEEL_STEP) {
      const s = Math.sign(this.wheelAccum);
      this.step(s);
      this.wheelAccum -= s * WHEEL_STEP;
    }
  }

  destroy() {
    this.unsubscribe?.();
    this.resizeObserver.disconnect();
    this.element.remove();
  }
}
