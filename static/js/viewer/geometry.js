// Patient geometry: orientation markers from Image Orientation (Patient) or Patient
// Orientation, and the physical size of image pixels (Pixel Spacing, ultrasound regions).

const AXES = [
  ["L", "R"], // +x is the patient's left
  ["P", "A"], // +y is posterior
  ["H", "F"], // +z is head
];

const LETTER_VECTORS = {
  L: [1, 0, 0], R: [-1, 0, 0], P: [0, 1, 0], A: [0, -1, 0], H: [0, 0, 1], F: [0, 0, -1],
};

/** Letters naming a patient direction, strongest component first ("LP", "H"). */
export function directionLabel(v) {
  const parts = v
    .map((c, axis) => ({ c, axis }))
    .filter(({ c }) => Math.abs(c) > 0.25)
    .sort((a, b) => Math.abs(b.c) - Math.abs(a.c));
  return parts.map(({ c, axis }) => AXES[axis][c > 0 ? 0 : 1]).join("");
}

function vectorOf(letters) {
  const v = [0, 0, 0];
  for (const ch of letters.toUpperCase()) {
    const u = LETTER_VECTORS[ch];
    if (u) for (let i = 0; i < 3; i++) v[i] += u[i];
  }
  return v;
}

/** The row and column directions of an image in patient space, or null. */
export function imageAxes(meta) {
  if (meta?.iop && meta.iop.length === 6) {
    return { row: meta.iop.slice(0, 3), col: meta.iop.slice(3, 6) };
  }
  const po = meta?.patient_orientation;
  if (po && po.length === 2 && po[0] && po[1]) return { row: vectorOf(po[0]), col: vectorOf(po[1]) };
  return null;
}

/**
 * Labels for the four screen edges, given the 2×2 linear part of the image→screen
 * transform (a, b, c, d as in DOMMatrix).
 */
export function orientationLabels(meta, m) {
  const axes = imageAxes(meta);
  if (!axes) return null;
  const det = m.a * m.d - m.b * m.c;
  if (!det) return null;
  // Image-space direction that maps to screen right (1, 0) and screen down (0, 1).
  const right = [m.d / det, -m.b / det];
  const down = [-m.c / det, m.a / det];
  const toPatient = ([u, v]) => {
    const p = [0, 1, 2].map((i) => u * axes.row[i] + v * axes.col[i]);
    const n = Math.hypot(...p) || 1;
    return p.map((x) => x / n);
  };
  const r = toPatient(right);
  const d = toPatient(down);
  return {
    right: directionLabel(r),
    left: directionLabel(r.map((x) => -x)),
    bottom: directionLabel(d),
    top: directionLabel(d.map((x) => -x)),
  };
}

/**
 * Millimetres per pixel [row spacing (vertical), column spacing (horizontal)] at an image
 * point, with where it came from; null when the image is not calibrated.
 */
export function spacingAt(meta, image, x, y) {
  if (meta?.pixel_spacing) return { spacing: meta.pixel_spacing, source: meta.spacing_source || "PixelSpacing" };
  for (const region of meta?.us_regions || []) {
    if (x >= region.x0 && x <= region.x1 && y >= region.y0 && y <= region.y1) {
      return { spacing: region.spacing, source: "US" };
    }
  }
  if (image?.pixelSpacing) return { spacing: image.pixelSpacing, source: "PixelSpacing" };
  return null;
}

/** Distance along the slice normal (for the "Loc" overlay) or the Slice Location. */
export function slicePosition(meta, position) {
  if (position && meta?.iop) {
    const [r, c] = [meta.iop.slice(0, 3), meta.iop.slice(3, 6)];
    const n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];
    return position[0] * n[0] + position[1] * n[1] + position[2] * n[2];
  }
  return meta?.slice_location ?? null;
}
