/* fleet's one map code: draws a map's layers (fleet.viz.layers, as fleet.viz.html.map_data
 * encodes them) with Leaflet, offline: no tiles, the roads come from the site's own OSM graph.
 * Used by the self-contained HTML maps (inlined) and by the dispatcher's console (served).
 * Every text is set with textContent (or escaped before Leaflet sees it), never as markup.
 */
(function (root) {
  "use strict";
  const L = root.L;

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }

  function textBox(text, cls) {
    const div = document.createElement("div");
    div.className = cls || "fm-text";
    div.textContent = text;
    return div;
  }

  // Coordinates travel as integers in 1/scale degrees, each line delta-encoded.
  function decodeDelta(a, scale) {
    const out = new Array(a.length / 2);
    let x = 0, y = 0;
    for (let i = 0; i < out.length; i++) {
      x += a[2 * i]; y += a[2 * i + 1];
      out[i] = [y / scale, x / scale];  // Leaflet wants [lat, lon]
    }
    return out;
  }

  const SHAPES = { square: "fm-square", triangle: "fm-triangle", diamond: "fm-diamond" };

  function pointMarker(latlng, kind, radius, color, renderer) {
    if (!SHAPES[kind]) {
      return L.circleMarker(latlng, {
        renderer: renderer, radius: radius, fillColor: color, fillOpacity: 1,
        color: "#ffffff", weight: 1.2,
      });
    }
    const size = Math.round(radius * 2 + 2);
    const el = document.createElement("div");
    el.className = "fm-shape " + SHAPES[kind];
    el.style.background = color;
    el.style.width = size + "px"; el.style.height = size + "px";
    return L.marker(latlng, {
      icon: L.divIcon({ className: "fm-icon", html: el, iconSize: [size, size] }),
      keyboard: false,
    });
  }

  function bind(layer, label, popup) {
    if (label) layer.bindTooltip(textBox(label), { sticky: true, className: "fm-tooltip" });
    if (popup || label) layer.bindPopup(textBox(popup || label), { maxWidth: 340 });
  }

  function buildLayer(spec, scale, renderer) {
    if (spec.kind === "lines") {
      const style = {
        renderer: renderer, color: spec.color, weight: spec.width, opacity: spec.opacity,
        dashArray: spec.dashed ? "6 4" : null, lineJoin: "round", lineCap: "round",
      };
      const lines = spec.lines.map((a) => decodeDelta(a, scale));
      const each = spec.hover || spec.popups || spec.colors;
      if (!each) {
        // One path for the whole layer (tens of thousands of road links draw at once).
        return L.polyline(lines, Object.assign({ interactive: false, smoothFactor: 1.5 }, style));
      }
      const group = L.featureGroup();
      lines.forEach(function (latlngs, i) {
        const color = spec.colors ? spec.colors[i] : spec.color;
        const line = L.polyline(latlngs, Object.assign({}, style, { color: color }));
        if (spec.hover) bind(line, spec.labels ? spec.labels[i] : "", spec.popups ? spec.popups[i] : "");
        else line.options.interactive = false;
        group.addLayer(line);
      });
      return group;
    }
    if (spec.kind === "polygons") {
      const rings = spec.rings.map((a) => decodeDelta(a, scale));
      const poly = L.polygon(rings, {
        renderer: renderer, color: spec.edge, weight: spec.width, fillColor: spec.fill,
        fillOpacity: spec.fill_opacity, fillRule: "evenodd", interactive: Boolean(spec.label),
      });
      if (spec.label) poly.bindTooltip(textBox(spec.label), { sticky: true, className: "fm-tooltip" });
      return poly;
    }
    const group = L.featureGroup();
    const n = spec.xy.length / 2;
    for (let i = 0; i < n; i++) {
      const latlng = [spec.xy[2 * i + 1] / scale, spec.xy[2 * i] / scale];
      const color = spec.colors ? spec.colors[i] : spec.color;
      const m = pointMarker(latlng, spec.marker, spec.radius, color, renderer);
      const label = spec.labels ? spec.labels[i] : "";
      const popup = spec.popups ? spec.popups[i] : "";
      // a marker has one tooltip: a label written beside it, or one shown on hover
      bind(m, spec.show_labels ? "" : label, popup || label);
      if (spec.show_labels && label) {
        m.bindTooltip(textBox(label), {
          permanent: true, direction: "right", offset: [spec.radius + 2, 0], className: "fm-label",
        });
      }
      group.addLayer(m);
    }
    return group;
  }

  /* Draw ``data`` into ``element``; returns {map, renderer, overlays, control, fit}.
   * options.panel: an element for the title, notes and key/value list (omit for none). */
  function create(element, data, options) {
    options = options || {};
    const renderer = L.canvas({ padding: 0.3 });
    const map = L.map(element, {
      preferCanvas: true, renderer: renderer, zoomSnap: 0.25, zoomDelta: 0.5,
      attributionControl: false, minZoom: 3, maxZoom: 19,
    });
    L.control.scale({ imperial: false, position: "bottomleft" }).addTo(map);
    const attribution = L.control.attribution({ prefix: false, position: "bottomright" });
    attribution.addAttribution(
      '<a href="' + esc(data.attribution_url) + '" target="_blank" rel="noopener">' +
      esc(data.attribution) + "</a>");
    attribution.addTo(map);
    const overlays = {};
    let bounds = null;
    for (const spec of data.layers) {
      const layer = buildLayer(spec, data.scale, renderer);
      overlays[esc(spec.name)] = layer;
      if (spec.visible) layer.addTo(map);
      const b = layer.getBounds ? layer.getBounds() : null;
      if (b && b.isValid()) bounds = bounds ? bounds.extend(b) : L.latLngBounds(b.getSouthWest(), b.getNorthEast());
    }
    const control = L.control.layers(null, overlays, {
      collapsed: Boolean(options.collapsed), position: "topright",
    }).addTo(map);
    function fit() {
      if (bounds) map.fitBounds(bounds, { padding: [12, 12] });
      else map.setView([0, 0], 3);
    }
    fit();
    if (options.panel) fillPanel(options.panel, data, fit);
    return { map: map, renderer: renderer, overlays: overlays, control: control, fit: fit, bounds: bounds };
  }

  function fillPanel(panel, data, fit) {
    const h = document.createElement("h1"); h.textContent = data.title; panel.appendChild(h);
    for (const n of data.notes) {
      const p = document.createElement("p"); p.className = "fm-note"; p.textContent = n;
      panel.appendChild(p);
    }
    if (data.extra.length) {
      const dl = document.createElement("dl"); dl.className = "fm-extra";
      for (const kv of data.extra) {
        const dt = document.createElement("dt"); dt.textContent = kv[0];
        const dd = document.createElement("dd"); dd.textContent = kv[1];
        dl.appendChild(dt); dl.appendChild(dd);
      }
      panel.appendChild(dl);
    }
    const b = document.createElement("button"); b.type = "button"; b.textContent = "fit";
    b.title = "fit the whole map"; b.className = "fm-fit"; b.onclick = fit;
    panel.appendChild(b);
    const hint = document.createElement("p"); hint.className = "fm-hint";
    hint.textContent = "Drag to pan, wheel to zoom, hover or click a feature for details; " +
      "the box on the right shows and hides layers.";
    panel.appendChild(hint);
  }

  root.FleetMap = { create: create, esc: esc, textBox: textBox, decodeDelta: decodeDelta };
})(window);
