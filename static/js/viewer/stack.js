// A series as a stack of images, and how its pixels get to the browser.
//
// Raw mode: the frames' stored values arrive in batches (several frames per
// request, a few requests in flight on keep-alive connections), nearest to the
// image on screen first; gzip is asked for only when the link proves slow.
// Rendered mode (phones, slow links, palette colour): the server windows and
// scales each image to the viewport and sends a JPEG.

import { request } from "../common.js";
import { RawImage, typedView } from "./imaging.js";

const BATCH = 8;
const PARALLEL = 4;
const SLOW_LINK_BYTES_PER_S = 12e6;
// Raw pixels kept per series: a window around the image on screen when the series is
// bigger (a 2000-slice CT would otherwise hold a gigabyte in the tab).
const RAW_BUDGET_BYTES = 640 * 1024 * 1024;

/** Parse a raw-frames response (see pacs/viewer/frames.py) into [{header, data}]. */
export function parseBatch(buffer) {
  const view = new DataView(buffer);
  const decoder = new TextDecoder();
  const records = [];
  let offset = 0;
  const align = () => { offset += (8 - (offset % 8)) % 8; };
  while (offset + 4 <= buffer.byteLength) {
    const length = view.getUint32(offset, true);
    const header = JSON.parse(decoder.decode(new Uint8Array(buffer, offset + 4, length)));
    offset += 4 + length;
    align();
    let data = null;
    if (header.length) {
      data = typedView(header.dtype, buffer, offset, header.length);
      offset += header.length;
      align();
    }
    records.push({ header, data });
  }
  return records;
}

/** One image of a stack: an instance's frame, with its header summary. */
class Slot {
  constructor(meta, frame) {
    this.meta = meta;
    this.sop = meta.sop_uid;
    this.frame = frame; // 1-based
    this.image = null; // RawImage once loaded (raw mode)
    this.error = null;
    this.loading = false;
  }
  get key() { return `${this.sop}/${this.frame}`; }
  get position() {
    const positions = this.meta.frame_positions;
    return (positions && positions[this.frame - 1]) || this.meta.ipp || null;
  }
}

export class Stack {
  /**
   * @param series the series entry of the study JSON
   * @param mode "raw" or "rendered"
   */
  constructor(series, mode) {
    this.series = series;
    this.uid = series.series_uid;
    this.mode = mode;
    this.slots = [];
    this.meta = null;
    this.listeners = new Set();
    this.focus = 0;
    this.inflight = 0;
    this.compress = false;
    this.loaded = 0;
    this.bytes = 0;
    this.error = null;
    this.ready = null;
    this.rendered = new Map(); // key → {img, url} (rendered mode)
  }

  onChange(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  emit(what) { for (const fn of this.listeners) fn(what, this); }
  get length() { return this.slots.length; }
  slot(i) { return this.slots[i]; }

  /** Load the geometry; in raw mode the first image is fetched at the same time. */
  open() {
    if (this.ready) return this.ready;
    const first = this.series.first_sop_uid;
    let early = null;
    if (this.mode === "raw" && first) early = this.fetchBatch([`${first}/1`]).catch(() => null);
    this.ready = request(`/api/series/${encodeURIComponent(this.uid)}`).then(async (meta) => {
      this.meta = meta;
      // Palette colour needs the server's colour lookup: show it rendered.
      if (meta.instances.some((i) => (i.photometric || "").toUpperCase() === "PALETTE COLOR")) {
        this.mode = "rendered";
        early = null;
      }
      for (const inst of meta.instances) {
        if (!inst.rows) continue; // no pixels (SR, KO, PR…)
        const frames = Math.max(1, inst.frames || 1);
        for (let f = 1; f <= frames; f++) this.slots.push(new Slot(inst, f));
      }
      const records = early ? await early : null;
      if (records) this.store(records);
      const firstIndex = Math.max(0, this.slots.findIndex((s) => s.image));
      this.focus = firstIndex;
      this.emit("open");
      if (this.mode === "raw") this.pump();
      return this;
    }).catch((err) => {
      this.error = err;
      this.emit("error");
      throw err;
    });
    return this.ready;
  }

  /** The image the viewer looks at moved: load around it first. */
  setFocus(index) {
    this.focus = index;
    if (this.mode === "raw") this.pump();
  }

  store(records) {
    for (const { header, data } of records) {
      const slot = this.slots.find((s) => s.sop === header.sop_uid && s.frame === header.frame);
      const target = slot || this.pending(header);
      if (header.error) {
        target.error = header.error;
      } else {
        target.image = new RawImage(header, data);
        this.loaded += 1;
        this.bytes += data.byteLength;
      }
      target.loading = false;
    }
    this.evictFar();
    this.emit("load");
  }

  /** How many images fit in the budget (all of them for an ordinary series). */
  get span() {
    if (!this.loaded) return this.slots.length;
    const perImage = this.bytes / this.loaded;
    return Math.max(BATCH * PARALLEL, Math.floor(RAW_BUDGET_BYTES / perImage));
  }

  inWindow(i) {
    const half = Math.floor(this.span / 2);
    const start = Math.max(0, Math.min(this.focus - half, this.slots.length - this.span));
    return i >= start && i < start + this.span;
  }

  /** Over budget: drop the images farthest from the one on screen (reloaded if needed). */
  evictFar() {
    if (this.bytes <= RAW_BUDGET_BYTES) return;
    this.slots.forEach((slot, i) => {
      if (slot.image && !this.inWindow(i)) {
        this.bytes -= slot.image.pixels.byteLength;
        this.loaded -= 1;
        slot.image = null;
      }
    });
  }

  pending(header) {
    // A record for a slot that does not exist yet (the first image, before the geometry).
    const meta = { sop_uid: header.sop_uid, rows: header.rows, columns: header.columns, frames: 1 };
    const slot = new Slot(meta, header.frame);
    this.slots.push(slot);
    return slot;
  }

  async fetchBatch(keys) {
    const started = performance.now();
    const url = `/api/frames?f=${keys.map(encodeURIComponent).join(",")}${this.compress ? "&z=1" : ""}`;
    const response = await request(url, { raw: true });
    const buffer = await response.arrayBuffer();
    const seconds = (performance.now() - started) / 1000;
    if (buffer.byteLength > 1e6 && buffer.byteLength / seconds < SLOW_LINK_BYTES_PER_S) this.compress = true;
    return parseBatch(buffer);
  }

  /** Start batches of the nearest not-yet-loaded images until PARALLEL are in flight. */
  pump() {
    while (this.inflight < PARALLEL) {
      const batch = this.nextBatch();
      if (!batch.length) return;
      this.inflight += 1;
      for (const slot of batch) slot.loading = true;
      this.fetchBatch(batch.map((s) => s.key))
        .then((records) => this.store(records))
        .catch((err) => {
          for (const slot of batch) { slot.loading = false; slot.error = err.message; }
          this.emit("load");
        })
        .finally(() => { this.inflight -= 1; this.pump(); });
    }
  }

  nextBatch() {
    const n = this.slots.length;
    const batch = [];
    // Walk outwards from the focus, forwards first (the usual scrolling direction).
    for (let d = 0; d < n && batch.length < BATCH; d++) {
      for (const i of d === 0 ? [this.focus] : [this.focus + d, this.focus - d]) {
        const slot = this.slots[i];
        if (slot && !slot.image && !slot.error && !slot.loading && this.inWindow(i)) batch.push(slot);
        if (batch.length >= BATCH) break;
      }
    }
    return batch;
  }

  get complete() {
    return this.slots.length > 0 && this.slots.every((s) => s.image || s.error);
  }

  /** The overlay planes (groups 60xx) of a slot as a transparent image, loaded once. */
  overlayImage(slot) {
    if (slot.overlay !== undefined) return slot.overlay;
    const img = new Image();
    const entry = { img, ready: false };
    slot.overlay = entry;
    img.onload = () => { entry.ready = true; this.emit("load"); };
    img.onerror = () => { slot.overlay = null; };
    img.src = `/api/instances/${encodeURIComponent(slot.sop)}/frames/${slot.frame}/overlay`;
    return entry;
  }

  /** Rendered mode: an <img> of image `index` at `size` with the window (cached). */
  renderedImage(index, { center, width, invert, size }) {
    const slot = this.slots[index];
    if (!slot) return null;
    const params = new URLSearchParams({ format: "jpeg", quality: "88" });
    if (width > 0) { params.set("wc", center.toFixed(2)); params.set("ww", width.toFixed(2)); }
    if (size) { params.set("w", String(size[0])); params.set("h", String(size[1])); }
    if (invert) params.set("invert", "1");
    const url = `/api/instances/${encodeURIComponent(slot.sop)}/frames/${slot.frame}/rendered?${params}`;
    let entry = this.rendered.get(url);
    if (!entry) {
      const img = new Image();
      entry = { img, ready: false, error: null };
      img.decoding = "async";
      img.onload = () => { entry.ready = true; this.emit("load"); };
      img.onerror = () => { entry.error = "load"; slot.error = slot.error || "decode"; this.emit("load"); };
      img.src = url;
      this.rendered.set(url, entry);
      if (this.rendered.size > 300) this.rendered.delete(this.rendered.keys().next().value);
    }
    return entry;
  }
}
