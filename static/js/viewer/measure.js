// Measurements in image coordinates: length, angle, rectangle and ellipse ROIs,
// with their values in mm (from Pixel Spacing) and the region statistics
// (in HU for CT), and how to draw them on the annotation layer.

import { t } from "../common.js";
import { regionStats } from "./imaging.js";
import { spacingAt } from "./geometry.js";

export const MEASURE_TOOLS = new Set(["length", "angle", "rect", "ellipse"]);

function fmt(value, digits = 1) {
  return Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function unitOf(meta, image) {
  if (meta?.rescale_type === "HU" || meta?.modality === "CT") return " HU";
  return "";
}

/** Complete the measurement's label lines (called when it is created or its image loads). */
export function evaluate(m, meta, image) {
  const [p0, p1] = m.points;
  const cal = spacingAt(meta, image, p0.x, p0.y);
  const [sy, sx] = cal ? cal.spacing : [1, 1];
  const unit = cal ? t("v.mm") : "px";
  const suffix = cal ? "" : ` ${t("v.no_calibration")}`;
  const lines = [];
  if (m.type === "length") {
    const length = Math.hypot((p1.x - p0.x) * sx, (p1.y - p0.y) * sy);
    m.value = length;
    lines.push(`${fmt(length, 2)} ${unit}${suffix}`);
  } else if (m.type === "angle" && m.points.length === 3) {
    const [a, b, c] = m.points;
    const u = [(a.x - b.x) * sx, (a.y - b.y) * sy];
    const v = [(c.x - b.x) * sx, (c.y - b.y) * sy];
    const cos = (u[0] * v[0] + u[1] * v[1]) / ((Math.hypot(...u) * Math.hypot(...v)) || 1);
    const degrees = (Math.acos(Math.max(-1, Math.min(1, cos))) * 180) / Math.PI;
    m.value = degrees;
    lines.push(`${fmt(degrees, 1)}°`);
  } else if (m.type === "rect" || m.type === "ellipse") {
    const x0 = Math.min(p0.x, p1.x);
    const x1 = Math.max(p0.x, p1.x);
    const y0 = Math.min(p0.y, p1.y);
    const y1 = Math.max(p0.y, p1.y);
    const rx = (x1 - x0) / 2;
    const ry = (y1 - y0) / 2;
    const cx = x0 + rx;
    const cy = y0 + ry;
    const inside = m.type === "rect"
      ? (x, y) => x >= x0 && x <= x1 && y >= y0 && y <= y1
      : (x, y) => ((x - cx) / (rx || 1)) ** 2 + ((y - cy) / (ry || 1)) ** 2 <= 1;
    const area = (m.type === "rect" ? 4 * rx * ry : Math.PI * rx * ry) * sx * sy;
    const stats = regionStats(image, { x0, y0, x1, y1 }, inside);
    m.value = stats?.mean ?? null;
    const u = unitOf(meta, image);
    if (stats) lines.push(`${t("v.mean")} ${fmt(stats.mean)}${u}  ${t("v.sd")} ${fmt(stats.sd)}`);
    lines.push(`${t("v.area")} ${fmt(cal ? area / 100 : area, 2)} ${cal ? "cm²" : "px²"}`);
  }
  m.lines = lines;
  return m;
}

/** Draw `m` (image coordinates) with `toScreen(p)` on a 2-D context in screen pixels. */
export function draw(ctx, m, toScreen) {
  const pts = m.points.map(toScreen);
  ctx.save();
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = m.active ? "#ffd75e" : "#5ef08f";
  ctx.fillStyle = ctx.strokeStyle;
  ctx.beginPath();
  if (m.type === "length" || m.type === "angle") {
    ctx.moveTo(pts[0].x, pts[0].y);
    for (const p of pts.slice(1)) ctx.lineTo(p.x, p.y);
    ctx.stroke();
    for (const p of pts) { ctx.beginPath(); ctx.arc(p.x, p.y, 2.5, 0, Math.PI * 2); ctx.fill(); }
  } else if (m.type === "rect") {
    // The rectangle is drawn through its four image-space corners, so it rotates with the image.
    const [a, b] = m.points;
    const corners = [{ x: a.x, y: a.y }, { x: b.x, y: a.y }, { x: b.x, y: b.y }, { x: a.x, y: b.y }].map(toScreen);
    ctx.moveTo(corners[0].x, corners[0].y);
    for (const p of corners.slice(1)) ctx.lineTo(p.x, p.y);
    ctx.closePath();
    ctx.stroke();
  } else if (m.type === "ellipse") {
    const [a, b] = m.points;
    const cx = (a.x + b.x) / 2;
    const cy = (a.y + b.y) / 2;
    const rx = Math.abs(b.x - a.x) / 2;
    const ry = Math.abs(b.y - a.y) / 2;
    for (let i = 0; i <= 64; i++) {
      const th = (i / 64) * Math.PI * 2;
      const p = toScreen({ x: cx + rx * Math.cos(th), y: cy + ry * Math.sin(th) });
      if (i === 0) ctx.moveTo(p.x, p.y); else ctx.lineTo(p.x, p.y);
    }
    ctx.stroke();
  }
  if (m.lines?.length) {
    const anchor = pts[pts.length - 1];
    ctx.font = "13px system-ui, sans-serif";
    ctx.textBaseline = "top";
    let y = anchor.y + 6;
    for (const line of m.lines) {
      const w = ctx.measureText(line).width;
      ctx.fillStyle = "rgba(0,0,0,0.6)";
      ctx.fillRect(anchor.x + 6, y - 1, w + 6, 17);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(line, anchor.x + 9, y);
      y += 17;
    }
  }
  ctx.restore();
}
