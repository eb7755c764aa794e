// Pixels → screen: modality LUT (rescale), VOI (window/level or the file's VOI LUT),
// MONOCHROME1 and user inversion, colour; and the statistics of a region.
//
// Grey images are mapped through a lookup table over the frame's range of stored
// values, rebuilt only when the window changes: a 512×512 CT costs one table
// lookup per pixel, which keeps window/level dragging well above 30 frames/s.

const TYPED = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array, float32: Float32Array,
};

/** A typed-array view of `length` bytes of `buffer` at `offset` (no copy). */
export function typedView(dtype, buffer, offset, length) {
  const Type = TYPED[dtype];
  if (!Type) throw new Error(`unsupported pixel type ${dtype}`);
  return new Type(buffer, offset, length / Type.BYTES_PER_ELEMENT);
}

/** A decoded frame from the raw endpoint: header fields plus its pixel array. */
export class RawImage {
  constructor(header, pixels) {
    this.kind = "raw";
    this.rows = header.rows;
    this.columns = header.columns;
    this.samples = header.samples_per_pixel || 1;
    this.photometric = (header.photometric || "MONOCHROME2").toUpperCase();
    this.dtype = header.dtype;
    this.pixels = pixels;
    this.slope = header.slope ?? 1;
    this.intercept = header.intercept ?? 0;
    if (!Number.isFinite(this.slope) || this.slope === 0) this.slope = 1;
    if (!Number.isFinite(this.intercept)) this.intercept = 0;
    this.windows = (header.windows || []).filter((w) => w[1] > 0);
    this.voiLut = header.voi_lut || null;
    this.voiFunction = header.voi_function || "LINEAR";
    this.pixelSpacing = header.pixel_spacing || null;
    let { min, max } = header;
    if (!Number.isFinite(min) || !Number.isFinite(max)) [min, max] = extent(pixels);
    this.min = min;
    this.max = max;
    this.integer = this.dtype !== "float32";
  }

  get isColor() { return this.samples === 3; }
  get monochrome1() { return this.photometric === "MONOCHROME1"; }
  /** Modality value (e.g. HU) of a stored value. */
  modality(value) { return value * this.slope + this.intercept; }
  get modalityRange() {
    const a = this.modality(this.min);
    const b = this.modality(this.max);
    return [Math.min(a, b), Math.max(a, b)];
  }
  /** The window to show first: the file's own, else the full range. */
  defaultWindow() {
    if (this.windows.length) return { center: this.windows[0][0], width: this.windows[0][1] };
    if (!this.isColor && this.dtype === "uint8" && this.slope === 1 && this.intercept === 0) {
      return { center: 127.5, width: 256 }; // 8-bit greys without a window are shown as stored
    }
    if (this.isColor) return { center: 127.5, width: 256 };
    const [lo, hi] = this.modalityRange;
    return { center: (lo + hi) / 2, width: Math.max(1, hi - lo) };
  }
  /** Modality value at image pixel (x, y), or null outside / for colour. */
  valueAt(x, y) {
    x = Math.floor(x); y = Math.floor(y);
    if (this.isColor || x < 0 || y < 0 || x >= this.columns || y >= this.rows) return null;
    return this.modality(this.pixels[y * this.columns + x]);
  }
}

function extent(pixels) {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < pixels.length; i++) {
    const v = pixels[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

/** PS3.3 C.11.2.1.2.1: the linear VOI function, output 0..255. */
function voiLinear(value, center, width) {
  if (width <= 1) return value > center - 0.5 ? 255 : 0;
  const low = center - 0.5 - (width - 1) / 2;
  const high = center - 0.5 + (width - 1) / 2;
  if (value <= low) return 0;
  if (value > high) return 255;
  return ((value - (center - 0.5)) / (width - 1) + 0.5) * 255;
}

/** The VOI function the file asks for (PS3.3 C.11.2.1.3), output 0..255. */
function voiFunction(kind, center, width) {
  if (kind === "SIGMOID") return (v) => 255 / (1 + Math.exp((-4 * (v - center)) / Math.max(width, 1e-9)));
  if (kind === "LINEAR_EXACT") {
    return (v) => Math.min(255, Math.max(0, ((v - center) / Math.max(width, 1e-9) + 0.5) * 255));
  }
  return (v) => voiLinear(v, center, width);
}

/**
 * The file's VOI LUT ({first_mapped, bits, data}: data[i] is the output for input
 * first_mapped + i; inputs beyond the table map to its ends) as a function, output 0..255.
 */
function voiLutFunction(lut) {
  const data = lut.data || [];
  const first = lut.first_mapped ?? 0;
  const top = 2 ** (lut.bits ?? 16) - 1;
  const n = data.length;
  return (value) => {
    const i = Math.min(n - 1, Math.max(0, Math.floor(value - first)));
    return (data[i] / top) * 255;
  };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
function rgba(r, g, b) {
  return LITTLE_ENDIAN ? (0xff000000 | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | 0xff) >>> 0;
}

/**
 * Paint `image` into `imageData` (same size) with the window {center, width} or the
 * file's VOI LUT (useVoiLut), inverted if `invert` (MONOCHROME1 is inverted already).
 */
export function paint(image, imageData, { center, width, invert = false, useVoiLut = false }) {
  const out = new Uint32Array(imageData.data.buffer);
  const flip = invert !== image.monochrome1;
  if (image.isColor) {
    paintColor(image, imageData.data, center, width, invert);
    return;
  }
  const voi = useVoiLut && image.voiLut
    ? voiLutFunction(image.voiLut)
    : voiFunction(image.voiFunction, center, width);
  const px = image.pixels;
  const n = Math.min(px.length, out.length);
  if (image.integer && image.max - image.min <= 1 << 20) {
    const min = image.min;
    const size = image.max - min + 1;
    const lut = new Uint32Array(size);
    for (let i = 0; i < size; i++) {
      let g = voi(image.modality(min + i)) | 0;
      if (flip) g = 255 - g;
      lut[i] = rgba(g, g, g);
    }
    for (let i = 0; i < n; i++) out[i] = lut[px[i] - min];
    return;
  }
  for (let i = 0; i < n; i++) {
    let g = voi(image.modality(px[i])) | 0;
    if (flip) g = 255 - g;
    out[i] = rgba(g, g, g);
  }
}

function paintColor(image, data, center, width, invert) {
  // Colour frames arrive as interleaved 8-bit RGB; the window applies to each channel.
  const lut = new Uint8ClampedArray(256);
  for (let i = 0; i < 256; i++) {
    const v = voiLinear(i, center, width) | 0;
    lut[i] = invert ? 255 - v : v;
  }
  const px = image.pixels;
  const count = image.rows * image.columns;
  for (let i = 0, j = 0; i < count; i++, j += 3) {
    const o = i * 4;
    data[o] = lut[px[j]];
    data[o + 1] = lut[px[j + 1]];
    data[o + 2] = lut[px[j + 2]];
    data[o + 3] = 255;
  }
}

/**
 * Statistics of the modality values inside a region of image pixels:
 * `inside(x, y)` says whether pixel centre (x+0.5, y+0.5) is in it.
 */
export function regionStats(image, bounds, inside) {
  if (!image || image.kind !== "raw" || image.isColor) return null;
  const x0 = Math.max(0, Math.floor(bounds.x0));
  const y0 = Math.max(0, Math.floor(bounds.y0));
  const x1 = Math.min(image.columns - 1, Math.ceil(bounds.x1));
  const y1 = Math.min(image.rows - 1, Math.ceil(bounds.y1));
  let n = 0;
  let sum = 0;
  let sum2 = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      if (!inside(x + 0.5, y + 0.5)) continue;
      const v = image.modality(image.pixels[y * image.columns + x]);
      n++;
      sum += v;
      sum2 += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!n) return null;
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
  return { n, mean, sd, min, max };
}

/** The window presets a radiologist expects (CT, in HU). */
export const CT_PRESETS = [
  { key: "brain", center: 40, width: 80 },
  { key: "subdural", center: 75, width: 215 },
  { key: "lung", center: -600, width: 1500 },
  { key: "mediastinum", center: 50, width: 350 },
  { key: "abdomen", center: 40, width: 400 },
  { key: "bone", center: 500, width: 2000 },
  { key: "liver", center: 60, width: 160 },
];
