"""Self-contained HTML maps: inline data, our own canvas renderer with pan, zoom and popups.

No CDN, no tiles, no network: the file opens offline in any browser. Coordinates travel as
integers in 1e-5 degrees (about a metre), each line delta-encoded, which keeps a city's road
network to a few megabytes. Every text is inserted with ``textContent``, never as HTML.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from fleet.viz.layers import Layer, LineLayer, MapSpec, PointLayer, PolygonLayer

SCALE = 100_000  # integer coordinate units per degree


def _delta(coords: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> list[int]:
    a = np.rint(np.asarray(coords, dtype=np.float64) * SCALE).astype(np.int64)
    a[1:] -= a[:-1].copy()
    return [int(v) for v in a.ravel()]


def _texts(values: list[str]) -> list[str] | None:
    return values if any(values) else None


def _layer_json(layer: Layer) -> dict[str, object]:
    if isinstance(layer, LineLayer):
        return {
            "kind": "lines",
            "name": layer.name,
            "color": layer.color,
            "width": layer.width_px,
            "opacity": layer.opacity,
            "dashed": layer.dashed,
            "hover": layer.hover,
            "visible": layer.visible,
            "lines": [_delta(line.coords) for line in layer.lines],
            "labels": _texts([line.label for line in layer.lines]),
            "popups": _texts([line.popup for line in layer.lines]),
            "colors": (
                [line.color or layer.color for line in layer.lines]
                if any(line.color for line in layer.lines)
                else None
            ),
        }
    if isinstance(layer, PointLayer):
        xy = np.rint(
            np.asarray([(p.lon, p.lat) for p in layer.points], dtype=np.float64).reshape(-1, 2)
            * SCALE
        ).astype(np.int64)
        return {
            "kind": "points",
            "name": layer.name,
            "color": layer.color,
            "radius": layer.radius_px,
            "marker": layer.marker,
            "show_labels": layer.show_labels,
            "visible": layer.visible,
            "xy": [int(v) for v in xy.ravel()],
            "labels": _texts([p.label for p in layer.points]),
            "popups": _texts([p.popup for p in layer.points]),
            "colors": (
                [p.color or layer.color for p in layer.points]
                if any(p.color for p in layer.points)
                else None
            ),
        }
    assert isinstance(layer, PolygonLayer)
    return {
        "kind": "polygons",
        "name": layer.name,
        "fill": layer.fill,
        "fill_opacity": layer.fill_opacity,
        "edge": layer.edge,
        "width": layer.width_px,
        "label": layer.label,
        "visible": layer.visible,
        "rings": [_delta(ring) for ring in layer.rings()],
    }


def render_html(spec: MapSpec) -> str:
    """The whole page as one string."""
    data = {
        "title": spec.title,
        "notes": list(spec.notes),
        "extra": [[k, v] for k, v in spec.extra.items()],
        "attribution": spec.attribution,
        "attribution_url": spec.attribution_url,
        "scale": SCALE,
        "layers": [_layer_json(layer) for layer in spec.layers],
    }
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # "</" would end the <script> element early; "<\/" is the same JSON string.
    payload = payload.replace("</", "<\\/")
    return (
        _PAGE.replace("%%TITLE%%", html.escape(spec.title))
        .replace("%%STYLE%%", _STYLE)
        .replace("%%DATA%%", payload)
        .replace("%%SCRIPT%%", _SCRIPT)
    )


def write_html(spec: MapSpec, path: Path) -> None:
    path.write_text(render_html(spec), encoding="utf-8")


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<style>%%STYLE%%</style>
</head>
<body>
<canvas id="map" aria-label="map"></canvas>
<aside id="panel">
  <h1 id="title"></h1>
  <div id="notes"></div>
  <dl id="extra"></dl>
  <div id="legend"></div>
  <div class="buttons">
    <button id="zoom-in" title="zoom in">+</button>
    <button id="zoom-out" title="zoom out">&minus;</button>
    <button id="reset" title="fit the whole map">fit</button>
  </div>
  <p class="hint">Drag to pan, wheel to zoom, hover or click a feature for details.</p>
</aside>
<div id="tooltip" hidden></div>
<div id="popup" hidden>
  <button id="popup-close" title="close">&times;</button><div id="popup-text"></div>
</div>
<div id="scale"><div id="scale-bar"></div><span id="scale-text"></span></div>
<div id="attribution"><a id="attribution-link" target="_blank" rel="noopener"></a></div>
<script type="application/json" id="map-data">%%DATA%%</script>
<script>%%SCRIPT%%</script>
</body>
</html>
"""

_STYLE = """
html, body { margin: 0; height: 100%; overflow: hidden; font: 13px/1.35 system-ui, sans-serif;
  color: #222; background: #f4f3ef; }
#map { position: absolute; inset: 0; width: 100%; height: 100%; cursor: grab; touch-action: none; }
#map.dragging { cursor: grabbing; }
#panel { position: absolute; top: 10px; left: 10px; max-width: 300px; max-height: calc(100% - 60px);
  overflow: auto; background: rgba(255,255,255,0.93); border-radius: 6px; padding: 10px 12px;
  box-shadow: 0 1px 4px rgba(0,0,0,0.25); }
#panel h1 { font-size: 15px; margin: 0 0 6px; }
#notes p { margin: 0 0 4px; color: #444; }
#extra { display: grid; grid-template-columns: auto auto; gap: 1px 10px; margin: 6px 0; }
#extra dt { color: #666; }
#extra dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
#legend label { display: flex; align-items: center; gap: 6px; margin: 2px 0; cursor: pointer; }
.swatch { display: inline-block; width: 18px; height: 10px; border-radius: 2px; flex: none; }
.swatch.line { height: 3px; } .swatch.point { width: 10px; border-radius: 50%; }
.buttons { margin-top: 8px; display: flex; gap: 4px; }
.buttons button { min-width: 28px; padding: 2px 6px; }
.hint { color: #777; font-size: 11px; margin: 6px 0 0; }
#tooltip { position: absolute; pointer-events: none; background: rgba(30,30,30,0.88); color: #fff;
  padding: 3px 6px; border-radius: 4px; white-space: pre-line; max-width: 320px; }
#popup { position: absolute; right: 10px; top: 10px; max-width: 340px; background: #fff;
  border-radius: 6px; padding: 10px 28px 10px 12px; box-shadow: 0 1px 6px rgba(0,0,0,0.3);
  white-space: pre-line; }
#popup-close { position: absolute; right: 4px; top: 4px; border: 0; background: none;
  font-size: 16px; cursor: pointer; }
#scale { position: absolute; left: 10px; bottom: 10px; background: rgba(255,255,255,0.8);
  padding: 2px 6px; border-radius: 3px; font-size: 11px; }
#scale-bar { height: 4px; border: 1px solid #333; border-top: 0; margin-bottom: 1px; }
#attribution { position: absolute; right: 0; bottom: 0; background: rgba(255,255,255,0.8);
  padding: 2px 6px; font-size: 11px; }
#attribution a { color: #0a58ca; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("map-data").textContent);
  const S = D.scale;
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip");
  const popup = document.getElementById("popup");
  const popupText = document.getElementById("popup-text");
  const DEG = Math.PI / 180;
  const mercY = (lat) => Math.log(Math.tan(Math.PI / 4 + (lat * DEG) / 2)) / DEG;

  // -- decode: every coordinate to projected (x = lon, y = mercator lat) ---------------------
  function decodeDelta(a) {
    const n = a.length / 2, xs = new Float64Array(n), ys = new Float64Array(n);
    let x = 0, y = 0;
    for (let i = 0; i < n; i++) {
      x += a[2 * i]; y += a[2 * i + 1];
      xs[i] = x / S; ys[i] = mercY(y / S);
    }
    return { xs: xs, ys: ys, bbox: bboxOf(xs, ys) };
  }
  function bboxOf(xs, ys) {
    let a = Infinity, b = Infinity, c = -Infinity, d = -Infinity;
    for (let i = 0; i < xs.length; i++) {
      if (xs[i] < a) a = xs[i]; if (xs[i] > c) c = xs[i];
      if (ys[i] < b) b = ys[i]; if (ys[i] > d) d = ys[i];
    }
    return [a, b, c, d];
  }
  const world = [Infinity, Infinity, -Infinity, -Infinity];
  function grow(bb) {
    world[0] = Math.min(world[0], bb[0]); world[1] = Math.min(world[1], bb[1]);
    world[2] = Math.max(world[2], bb[2]); world[3] = Math.max(world[3], bb[3]);
  }
  const layers = D.layers.map(function (L) {
    if (L.kind === "lines") {
      L.shapes = L.lines.map(decodeDelta); L.lines = null;
      L.shapes.forEach((s) => grow(s.bbox));
    } else if (L.kind === "polygons") {
      L.shapes = L.rings.map(decodeDelta); L.rings = null;
      L.shapes.forEach((s) => grow(s.bbox));
    } else {
      const n = L.xy.length / 2;
      L.px = new Float64Array(n); L.py = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        L.px[i] = L.xy[2 * i] / S; L.py[i] = mercY(L.xy[2 * i + 1] / S);
      }
      L.xy = null;
      if (n) grow(bboxOf(L.px, L.py));
    }
    return L;
  });

  // -- view ----------------------------------------------------------------------------------
  let W = 0, H = 0, dpr = 1, cx = 0, cy = 0, zoom = 1;
  function fit() {
    if (!isFinite(world[0])) { cx = 0; cy = 0; zoom = 1; return; }
    cx = (world[0] + world[2]) / 2; cy = (world[1] + world[3]) / 2;
    const w = Math.max(world[2] - world[0], 1e-6), h = Math.max(world[3] - world[1], 1e-6);
    zoom = 0.92 * Math.min(W / w, H / h);
  }
  const sx = (x) => (x - cx) * zoom + W / 2;
  const sy = (y) => -(y - cy) * zoom + H / 2;
  const wx = (px) => (px - W / 2) / zoom + cx;
  const wy = (py) => -(py - H / 2) / zoom + cy;
  function onScreen(bb, pad) {
    return !(sx(bb[2]) < -pad || sx(bb[0]) > W + pad || sy(bb[1]) < -pad || sy(bb[3]) > H + pad);
  }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    W = canvas.clientWidth; H = canvas.clientHeight;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  }

  // -- drawing -------------------------------------------------------------------------------
  function tracePath(s, close) {
    ctx.moveTo(sx(s.xs[0]), sy(s.ys[0]));
    for (let i = 1; i < s.xs.length; i++) ctx.lineTo(sx(s.xs[i]), sy(s.ys[i]));
    if (close) ctx.closePath();
  }
  function marker(kind, x, y, r) {
    ctx.beginPath();
    if (kind === "square") ctx.rect(x - r, y - r, 2 * r, 2 * r);
    else if (kind === "triangle") {
      ctx.moveTo(x, y - r * 1.2); ctx.lineTo(x + r, y + r * 0.8); ctx.lineTo(x - r, y + r * 0.8);
      ctx.closePath();
    } else if (kind === "diamond") {
      ctx.moveTo(x, y - r * 1.3); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r * 1.3);
      ctx.lineTo(x - r, y); ctx.closePath();
    }
    else ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill(); ctx.stroke();
  }
  function label(text, x, y) {
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,255,255,0.9)"; ctx.fillStyle = "#222";
    ctx.strokeText(text, x, y); ctx.fillText(text, x, y);
  }
  let pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(draw); } }
  function draw() {
    pending = false;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#f4f3ef"; ctx.fillRect(0, 0, W, H);
    ctx.lineJoin = "round"; ctx.lineCap = "round";
    for (const L of layers) {
      if (!L.visible) continue;
      if (L.kind === "polygons") {
        ctx.beginPath();
        for (const s of L.shapes) tracePath(s, true);
        ctx.globalAlpha = L.fill_opacity; ctx.fillStyle = L.fill; ctx.fill("evenodd");
        ctx.globalAlpha = 1; ctx.strokeStyle = L.edge; ctx.lineWidth = L.width; ctx.setLineDash([]);
        ctx.stroke();
      } else if (L.kind === "lines") {
        ctx.globalAlpha = L.opacity; ctx.lineWidth = L.width;
        ctx.setLineDash(L.dashed ? [6, 4] : []);
        if (L.colors) {
          for (let i = 0; i < L.shapes.length; i++) {
            const s = L.shapes[i]; if (!onScreen(s.bbox, 10)) continue;
            ctx.beginPath(); tracePath(s, false); ctx.strokeStyle = L.colors[i]; ctx.stroke();
          }
        } else {
          ctx.beginPath();
          for (const s of L.shapes) if (onScreen(s.bbox, 10)) tracePath(s, false);
          ctx.strokeStyle = L.color; ctx.stroke();
        }
        ctx.globalAlpha = 1; ctx.setLineDash([]);
      } else {
        ctx.lineWidth = 1.2; ctx.strokeStyle = "#ffffff";
        for (let i = 0; i < L.px.length; i++) {
          const x = sx(L.px[i]), y = sy(L.py[i]);
          if (x < -20 || y < -20 || x > W + 20 || y > H + 20) continue;
          ctx.fillStyle = L.colors ? L.colors[i] : L.color;
          marker(L.marker, x, y, L.radius);
        }
        if (L.show_labels && L.labels) {
          for (let i = 0; i < L.px.length; i++) {
            if (L.labels[i]) label(L.labels[i], sx(L.px[i]) + L.radius + 3, sy(L.py[i]) + 4);
          }
        }
      }
    }
    drawScale();
  }
  function drawScale() {
    const lat = Math.atan(Math.sinh(cy * DEG)) / DEG;
    const mPerPx = (111320 * Math.cos(lat * DEG)) / zoom;
    const target = 120 * mPerPx;
    const pow = Math.pow(10, Math.floor(Math.log10(target)));
    const nice = [5, 2, 1].map((k) => k * pow).find((v) => v <= target) || pow;
    document.getElementById("scale-bar").style.width = Math.round(nice / mPerPx) + "px";
    document.getElementById("scale-text").textContent =
      nice >= 1000 ? nice / 1000 + " km" : nice + " m";
  }

  // -- finding the feature under the pointer -------------------------------------------------
  function segDist(px, py, ax, ay, bx, by) {
    const dx = bx - ax, dy = by - ay, len = dx * dx + dy * dy;
    let t = len ? ((px - ax) * dx + (py - ay) * dy) / len : 0;
    t = Math.max(0, Math.min(1, t));
    const qx = ax + t * dx - px, qy = ay + t * dy - py;
    return Math.sqrt(qx * qx + qy * qy);
  }
  function pick(px, py) {
    for (let li = layers.length - 1; li >= 0; li--) {
      const L = layers[li];
      if (!L.visible) continue;
      if (L.kind === "points" && (L.labels || L.popups)) {
        let best = -1, bestD = L.radius + 5;
        for (let i = 0; i < L.px.length; i++) {
          const d = Math.hypot(sx(L.px[i]) - px, sy(L.py[i]) - py);
          if (d <= bestD) { best = i; bestD = d; }
        }
        if (best >= 0) return { L: L, i: best };
      } else if (L.kind === "lines" && L.hover && (L.labels || L.popups)) {
        let best = -1, bestD = L.width / 2 + 5;
        for (let i = 0; i < L.shapes.length; i++) {
          const s = L.shapes[i]; if (!onScreen(s.bbox, 0)) continue;
          for (let k = 1; k < s.xs.length; k++) {
            const d = segDist(px, py, sx(s.xs[k - 1]), sy(s.ys[k - 1]), sx(s.xs[k]), sy(s.ys[k]));
            if (d <= bestD) { best = i; bestD = d; }
          }
        }
        if (best >= 0) return { L: L, i: best };
      } else if (L.kind === "polygons" && L.label) {
        const x = wx(px), y = wy(py);
        let inside = false;
        for (const s of L.shapes) {
          for (let i = 0, j = s.xs.length - 1; i < s.xs.length; j = i++) {
            const cross = (s.xs[j] - s.xs[i]) * (y - s.ys[i]) / (s.ys[j] - s.ys[i]) + s.xs[i];
            if ((s.ys[i] > y) !== (s.ys[j] > y) && x < cross) inside = !inside;
          }
        }
        if (inside) return { L: L, i: -1 };
      }
    }
    return null;
  }
  const textOf = (hit, key) => hit.i < 0 ? hit.L.label : (hit.L[key] ? hit.L[key][hit.i] : "");

  // -- interaction ---------------------------------------------------------------------------
  let drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, cx: cx, cy: cy, moved: false };
    canvas.setPointerCapture(e.pointerId); canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", function (e) {
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      cx = drag.cx - dx / zoom; cy = drag.cy + dy / zoom; redraw(); tooltip.hidden = true;
      return;
    }
    const hit = pick(e.offsetX, e.offsetY);
    const text = hit ? textOf(hit, "labels") : "";
    if (text) {
      tooltip.textContent = text; tooltip.hidden = false;
      tooltip.style.left = e.clientX + 14 + "px"; tooltip.style.top = e.clientY + 10 + "px";
    } else tooltip.hidden = true;
  });
  canvas.addEventListener("pointerup", function (e) {
    canvas.classList.remove("dragging");
    const d = drag; drag = null;
    if (d && !d.moved) {
      const hit = pick(e.offsetX, e.offsetY);
      const text = hit ? textOf(hit, "popups") || textOf(hit, "labels") : "";
      if (text) { popupText.textContent = text; popup.hidden = false; } else popup.hidden = true;
    }
  });
  canvas.addEventListener("pointerleave", function () { tooltip.hidden = true; });
  function zoomAt(px, py, factor) {
    const x = wx(px), y = wy(py);
    zoom *= factor; cx = x - (px - W / 2) / zoom; cy = y + (py - H / 2) / zoom; redraw();
  }
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault(); zoomAt(e.offsetX, e.offsetY, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  document.getElementById("zoom-in").onclick = () => zoomAt(W / 2, H / 2, 1.6);
  document.getElementById("zoom-out").onclick = () => zoomAt(W / 2, H / 2, 1 / 1.6);
  document.getElementById("reset").onclick = () => { fit(); redraw(); };
  document.getElementById("popup-close").onclick = () => { popup.hidden = true; };
  window.addEventListener("resize", () => { resize(); redraw(); });

  // -- panel ---------------------------------------------------------------------------------
  document.getElementById("title").textContent = D.title;
  const notes = document.getElementById("notes");
  for (const n of D.notes) {
    const p = document.createElement("p"); p.textContent = n; notes.appendChild(p);
  }
  const extra = document.getElementById("extra");
  for (const kv of D.extra) {
    const dt = document.createElement("dt"); dt.textContent = kv[0];
    const dd = document.createElement("dd"); dd.textContent = kv[1];
    extra.appendChild(dt); extra.appendChild(dd);
  }
  const legend = document.getElementById("legend");
  for (const L of layers) {
    const row = document.createElement("label");
    const box = document.createElement("input"); box.type = "checkbox"; box.checked = L.visible;
    box.onchange = () => { L.visible = box.checked; redraw(); };
    const sw = document.createElement("span");
    sw.className = "swatch " + (L.kind === "lines" ? "line" : L.kind === "points" ? "point" : "");
    sw.style.background = L.kind === "polygons" ? L.fill : L.color;
    if (L.kind === "polygons") { sw.style.opacity = 0.5; sw.style.outline = "1px solid " + L.edge; }
    const name = document.createElement("span"); name.textContent = L.name;
    row.appendChild(box); row.appendChild(sw); row.appendChild(name); legend.appendChild(row);
  }
  const link = document.getElementById("attribution-link");
  link.textContent = D.attribution; link.href = D.attribution_url;

  resize(); fit(); draw();
})();
"""
