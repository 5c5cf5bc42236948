/* The dispatcher's console: the live fleet on fleet's map (fleetmap.js on Leaflet), offline.
 * Data comes from the console's API and its live stream (/api/stream, server-sent events);
 * every action is a request the server checks (role, CSRF) and hands to the controller.
 * Every text from a van, a CSV or the controller is set with textContent, never as markup.
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MODE_COLOR = {
    driving: "#1a7f37", at_stop: "#0969da", idle: "#6e7781", paused: "#bf8700",
    charging: "#8250df", error: "#cf222e", stale: "#8c959f", offline: "#57606a", unknown: "#afb8c1",
  };
  const PARCEL_COLOR = {
    waiting: "#6e7781", loaded: "#0969da", delivered: "#1a7f37", late: "#d4a72c",
    failed: "#cf222e", cancelled: "#57606a", unserved: "#8250df",
  };
  const NOT_LIVE_AFTER_MS = 12000;

  let session = null, fmt = null, fm = null, map = null;
  const vans = new Map();      // van_id -> latest van JSON
  const vanMarkers = new Map();
  const parcels = new Map();   // parcel_id -> brief
  const parcelMarkers = new Map();
  const alerts = new Map();
  let events = [];
  let selected = null;         // {kind: "van"|"parcel", id}
  let routeLayer = null, allRoutesLayer = null, routesVersion = -1, routesFetched = -1;
  let lastMessage = 0, streamOk = false, placing = false;
  let parcelLayer = null, vanLayer = null;

  // ---------------------------------------------------------------- helpers
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : fmt.format(d);
  }
  function num(x, digits, unit) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits) + (unit || "");
  }
  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text; t.className = "toast" + (bad ? " bad" : ""); t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }
  async function api(path, options) {
    options = options || {};
    const headers = { "content-type": "application/json" };
    if (session && session.csrf_token) headers["x-csrf-token"] = session.csrf_token;
    const r = await fetch(path, {
      method: options.method || "GET", headers: headers, credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (r.status === 401 && !options.quiet) { window.location.replace("/login"); }
    return { ok: r.ok, status: r.status, body: body || {} };
  }
  function confirmDialog(text) {
    return new Promise(function (resolve) {
      const d = $("confirm");
      $("confirm-text").textContent = text;
      d.returnValue = "";
      d.onclose = () => resolve(d.returnValue === "ok");
      d.showModal();
    });
  }
  async function act(path, body, label) {
    const r = await api(path, { method: "POST", body: body === undefined ? {} : body, quiet: true });
    if (r.ok) toast(label + ": " + (r.body.message || "done"));
    else toast(label + " refused (" + r.status + "): " + (r.body.error || "error"), true);
    return r;
  }

  // ---------------------------------------------------------------- map drawing
  function vanIcon(v) {
    const live = v.mode !== "stale" && v.mode !== "offline" && v.mode !== "unknown";
    const box = el("div", null, "van" + (live ? "" : " not-live") + (v.emergency_stop ? " estop" : ""));
    const arrow = el("div", null, "van-arrow");
    arrow.style.background = MODE_COLOR[v.mode] || "#333";
    arrow.style.transform = "rotate(" + (v.heading_deg || 0) + "deg)";
    box.appendChild(arrow);
    box.dataset.van = v.van_id;
    return L.divIcon({ className: "van-icon", html: box, iconSize: [22, 22] });
  }
  function drawVan(v) {
    let m = vanMarkers.get(v.van_id);
    if (v.lat === null || v.lon === null) { if (m) { vanLayer.removeLayer(m); vanMarkers.delete(v.van_id); } return; }
    if (!m) {
      m = L.marker([v.lat, v.lon], { icon: vanIcon(v), keyboard: false, zIndexOffset: 1000 });
      m.on("click", () => select("van", v.van_id));
      m.bindTooltip(FleetMap.textBox(v.van_id), { direction: "top", offset: [0, -10] });
      vanMarkers.set(v.van_id, m);
      vanLayer.addLayer(m);
    } else {
      m.setLatLng([v.lat, v.lon]);
      m.setIcon(vanIcon(v));
    }
  }
  function drawParcel(p) {
    let m = parcelMarkers.get(p.id);
    if (p.lat === null || p.lon === null) return;
    const color = PARCEL_COLOR[p.s] || "#333";
    if (!m) {
      m = L.circleMarker([p.lat, p.lon], {
        renderer: fm.renderer, radius: 4, weight: 1, color: "#ffffff", fillColor: color, fillOpacity: 0.95,
      });
      m.on("click", () => select("parcel", p.id));
      parcelMarkers.set(p.id, m);
      parcelLayer.addLayer(m);
    } else {
      m.setStyle({ fillColor: color });
    }
  }
  function drawRoute(route, layer, strong) {
    for (const leg of route.legs) {
      const latlngs = leg.coords.map((c) => [c[1], c[0]]);
      layer.addLayer(L.polyline(latlngs, {
        renderer: fm.renderer, interactive: false,
        color: leg.done ? "#8c959f" : strong ? "#0550ae" : "#218bff",
        weight: strong ? 4 : 2, opacity: leg.done ? 0.5 : 0.85,
        dashArray: leg.released ? null : "6 6",
      }));
    }
    if (strong) {
      for (const s of route.stops) {
        const c = L.circleMarker([s.lat, s.lon], {
          renderer: fm.renderer, radius: 5, weight: 2, color: "#0550ae",
          fillColor: s.done ? "#8c959f" : s.released ? "#ffffff" : "#ddf4ff", fillOpacity: 1,
        });
        c.bindTooltip(FleetMap.textBox(s.name + "\nplanned " + time(s.planned_arrival) +
          "\npredicted " + time(s.predicted_arrival)));
        layer.addLayer(c);
      }
    }
  }
  async function refreshAllRoutes() {
    if (routesFetched === routesVersion || !map.hasLayer(allRoutesLayer)) return;
    const want = routesVersion;
    const r = await api("/api/routes");
    if (!r.ok) return;
    allRoutesLayer.clearLayers();
    for (const route of r.body.routes) drawRoute(route, allRoutesLayer, false);
    routesFetched = want;
  }

  // ---------------------------------------------------------------- panels
  function renderKpis(k) {
    const box = $("kpis");
    box.replaceChildren();
    const tiles = [
      ["delivered", k.delivered], ["on time", k.on_time], ["late", k.late],
      ["failed", k.failed], ["km", k.km], ["energy kWh", k.energy_kwh],
    ];
    for (const [name, value] of tiles) {
      const t = el("div", null, "kpi");
      t.dataset.kpi = name;
      t.appendChild(el("span", value, "v"));
      t.appendChild(el("span", name, "k"));
      box.appendChild(t);
    }
    const c = $("controller");
    c.textContent = "controller " + (k.controller || "unknown").toLowerCase();
    c.className = "pill " + (k.controller === "ONLINE" ? "ok" : "bad");
  }
  const vanRows = new Map();
  function renderVanTable() {
    // rows are kept and updated in place (a click never lands on a row being replaced)
    const body = $("van-table").tBodies[0];
    const list = Array.from(vans.values()).sort((a, b) => a.van_id.localeCompare(b.van_id));
    list.forEach(function (v, i) {
      let tr = vanRows.get(v.van_id);
      if (!tr) {
        tr = el("tr");
        tr.dataset.van = v.van_id;
        for (let k = 0; k < 5; k++) tr.appendChild(el("td"));
        tr.cells[0].textContent = v.van_id;
        tr.cells[1].className = "state";
        tr.onclick = () => select("van", v.van_id);
        vanRows.set(v.van_id, tr);
      }
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
      tr.className = "mode-" + v.mode;
      let state = v.mode.replace("_", " ");
      if (v.emergency_stop) state = "E-STOPPED";
      if (!v.in_service) state += " (out)";
      tr.cells[1].textContent = state;
      tr.cells[1].style.color = MODE_COLOR[v.mode] || "#333";
      tr.cells[2].textContent = num(v.soc_pct, 0, " %");
      tr.cells[3].textContent = num(v.load_kg, 0, " kg");
      tr.cells[4].textContent = v.next_stop ? v.next_stop + " (" + time(v.next_eta) + ")" : "–";
    });
  }
  function renderAlerts() {
    const ul = $("alert-list");
    ul.replaceChildren();
    const list = Array.from(alerts.values()).sort((a, b) => b.id - a.id);
    let open = 0;
    for (const a of list) {
      const li = el("li", null, "alert " + a.kind + (a.acknowledged_by ? " acked" : ""));
      li.dataset.alert = a.id;
      li.appendChild(el("span", time(a.time), "t"));
      li.appendChild(el("span", a.kind.replace("_", " "), "tag"));
      li.appendChild(el("span", a.text, "text"));
      if (a.acknowledged_by) {
        li.appendChild(el("span", "ack " + a.acknowledged_by, "ack"));
      } else {
        open++;
        const b = el("button", "acknowledge");
        b.type = "button";
        b.onclick = () => act("/api/alerts/" + a.id + "/ack", {}, "acknowledge");
        li.appendChild(b);
      }
      if (a.van_id) li.onclick = (e) => { if (e.target.tagName !== "BUTTON") select("van", a.van_id); };
      ul.appendChild(li);
    }
    $("alert-count").textContent = open ? String(open) : "";
  }
  function renderEvents() {
    const ul = $("event-list");
    ul.replaceChildren();
    for (const e of events.slice(-300).reverse()) {
      const li = el("li");
      li.appendChild(el("span", time(e.time), "t"));
      li.appendChild(el("span", e.kind, "tag"));
      const who = [e.van_id, e.parcel_id].filter(Boolean).join(" ");
      li.appendChild(el("span", who + (e.detail ? " " + e.detail : ""), "text"));
      if (e.parcel_id) li.onclick = () => select("parcel", e.parcel_id);
      else if (e.van_id) li.onclick = () => select("van", e.van_id);
      ul.appendChild(li);
    }
  }
  function dl(rows) {
    const d = el("dl", null, "facts");
    for (const [k, v] of rows) { d.appendChild(el("dt", k)); d.appendChild(el("dd", v)); }
    return d;
  }
  function button(text, cls, onclick) {
    const b = el("button", text, cls); b.type = "button"; b.onclick = onclick; return b;
  }
  function vanSkeleton(id) {
    // built once per selection: the buttons stay put while the facts refresh under them
    const box = $("details");
    box.replaceChildren();
    box.dataset.van = id;
    box.appendChild(el("h2", "Van " + id));
    const status = el("p", "…", "van-mode");
    status.id = "van-mode";
    box.appendChild(status);
    const facts = el("div"); facts.id = "van-facts"; box.appendChild(facts);
    const acts = el("div", null, "actions");
    const path = "/api/vans/" + encodeURIComponent(id) + "/";
    acts.appendChild(button("Pause", "", () => act(path + "pause", {}, "pause " + id)));
    acts.appendChild(button("Resume", "", () => act(path + "resume", {}, "resume " + id)));
    acts.appendChild(button("E-STOP", "danger estop-van", async () => {
      if (await confirmDialog("Emergency-stop " + id + " now?")) act(path + "estop", {}, "e-stop " + id);
    }));
    acts.appendChild(button("Cancel van", "", async () => {
      if (await confirmDialog("Cancel " + id + "'s order? It goes out of service and its parcels are re-planned.")) act(path + "cancel", {}, "cancel " + id);
    }));
    box.appendChild(acts);
    box.appendChild(el("h3", "Route"));
    const stops = el("ol", null, "stops"); stops.id = "van-stops"; box.appendChild(stops);
  }
  async function showVan(id, redraw) {
    const r = await api("/api/vans/" + encodeURIComponent(id));
    if (!r.ok || !selected || selected.kind !== "van" || selected.id !== id) return;
    const v = r.body;
    if ($("details").dataset.van !== id) vanSkeleton(id);
    let mode = v.mode.replace("_", " ");
    if (v.emergency_stop) mode = "E-STOPPED (" + mode + ")";
    const status = $("van-mode");
    status.textContent = mode;
    status.className = "van-mode mode-" + v.mode;
    status.dataset.mode = v.mode;
    status.dataset.estop = String(v.emergency_stop);
    const facts = $("van-facts");
    facts.replaceChildren();
    if (v.stale_reason) facts.appendChild(el("p", "not live: " + v.stale_reason, "warn"));
    facts.appendChild(dl([
      ["in service", v.in_service ? "yes" : "no: " + v.out_reason],
      ["position", v.lat === null ? "–" : v.lat.toFixed(5) + ", " + v.lon.toFixed(5)],
      ["heading", num(v.heading_deg, 0, "°")],
      ["speed", num(v.speed_mps * 3.6, 0, " km/h")],
      ["charge", num(v.soc_pct, 0, " %") + " (" + num(v.remaining_range_m / 1000, 1, " km") + ")"],
      ["load", num(v.load_kg, 0, " kg") + ", " + num(v.volume_m3, 2, " m³") + ", " + v.parcels_on_board + " parcels"],
      ["current stop", v.current_stop || "–"],
      ["next stop", v.next_stop ? v.next_stop + " at " + time(v.next_eta) : "–"],
      ["order", v.order_id ? v.order_id + " #" + v.order_update_id : "–"],
      ["last state", time(v.state_time)],
    ]));
    for (const e of v.errors) facts.appendChild(el("p", e, "warn"));
    const stops = $("van-stops");
    stops.replaceChildren();
    for (const s of v.route.stops) {
      stops.appendChild(el("li", s.name + ": planned " + time(s.planned_arrival) +
        (s.done ? " (done)" : ", predicted " + time(s.predicted_arrival)) + (s.released ? "" : " · horizon"),
        s.done ? "done" : s.released ? "base" : "horizon"));
    }
    const key = v.order_id + "#" + v.order_update_id + ":" + v.current_stop;
    if (redraw || key !== showVan.key) {
      showVan.key = key;
      routeLayer.clearLayers();
      drawRoute(v.route, routeLayer, true);
    }
  }
  async function showParcel(id) {
    const r = await api("/api/parcels/" + encodeURIComponent(id));
    if (!selected || selected.kind !== "parcel" || selected.id !== id) return;
    const box = $("details");
    box.replaceChildren();
    delete box.dataset.van;
    box.appendChild(el("h2", "Parcel " + id));
    if (!r.ok) { box.appendChild(el("p", r.body.error || "unknown parcel", "warn")); return; }
    const p = r.body;
    box.appendChild(el("p", p.display_status, "parcel-status s-" + p.display_status));
    box.appendChild(dl([
      ["status", p.status + (p.detail ? ": " + p.detail : "")],
      ["van", p.van_id || "–"],
      ["planned arrival", time(p.planned_eta)],
      ["predicted arrival", time(p.predicted_eta)],
      ["delivered", time(p.delivered)],
    ]));
    const acts = el("div", null, "actions");
    if (p.van_id) acts.appendChild(button("Show van", "", () => select("van", p.van_id)));
    acts.appendChild(button("Cancel parcel", "", async () => {
      if (await confirmDialog("Cancel parcel " + id + "?")) act("/api/parcels/" + encodeURIComponent(id) + "/cancel", {}, "cancel " + id);
    }));
    box.appendChild(acts);
    box.appendChild(el("h3", "History"));
    const ul = el("ul", null, "list");
    for (const h of p.history) {
      const li = el("li");
      li.appendChild(el("span", time(h.time), "t"));
      li.appendChild(el("span", h.text, "text"));
      ul.appendChild(li);
    }
    box.appendChild(ul);
  }
  function select(kind, id) {
    selected = { kind: kind, id: id };
    delete $("details").dataset.van;
    showTab("details");
    routeLayer.clearLayers();
    if (kind === "van") {
      showVan(id, true);
      const v = vans.get(id);
      if (v && v.lat !== null) map.panTo([v.lat, v.lon]);
    } else {
      showParcel(id);
    }
  }
  function showTab(name) {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  }

  // ---------------------------------------------------------------- the stream
  let dirtyTable = false, dirtyAlerts = false, dirtyEvents = false, dirtySelected = false;
  function apply(msg) {
    lastMessage = Date.now();
    if (msg.type === "ping") return;
    if (msg.now) $("now").textContent = time(msg.now);
    if (msg.type === "snapshot") {
      vans.clear(); alerts.clear(); events = [];
    }
    for (const v of msg.vans || []) { vans.set(v.van_id, v); drawVan(v); }
    for (const p of msg.parcels || []) { parcels.set(p.id, p); drawParcel(p); }
    for (const a of msg.alerts || []) alerts.set(a.id, a);
    if ((msg.events || []).length) { events = events.concat(msg.events).slice(-1000); dirtyEvents = true; }
    if (msg.kpis) renderKpis(msg.kpis);
    if ((msg.vans || []).length) dirtyTable = true;
    if ((msg.alerts || []).length || msg.type === "snapshot") dirtyAlerts = true;
    if (msg.routes_version !== undefined) routesVersion = msg.routes_version;
    if (selected && selected.kind === "van" && (msg.vans || []).some((v) => v.van_id === selected.id)) {
      dirtySelected = true;
    }
  }
  function renderDirty() {
    if (dirtyTable) { renderVanTable(); dirtyTable = false; }
    if (dirtyAlerts) { renderAlerts(); dirtyAlerts = false; }
    if (dirtyEvents) { renderEvents(); dirtyEvents = false; }
    if (dirtySelected && selected && selected.kind === "van") { dirtySelected = false; showVan(selected.id, false); }
    refreshAllRoutes();
  }
  function connect() {
    const source = new EventSource("/api/stream");
    source.onopen = () => { streamOk = true; liveness(); };
    source.onmessage = (e) => {
      try { apply(JSON.parse(e.data)); } catch (err) { console.warn("bad stream message", err); }
    };
    source.onerror = () => { streamOk = false; liveness(); };
  }
  function liveness() {
    const banner = $("banner");
    const quiet = Date.now() - lastMessage > NOT_LIVE_AFTER_MS;
    if (!streamOk || quiet) {
      banner.textContent = "Not live: the console's stream is " + (streamOk ? "silent" : "lost") +
        " — everything shown is as last received; reconnecting…";
      banner.hidden = false;
      document.body.classList.add("not-live");
    } else {
      banner.hidden = true;
      document.body.classList.remove("not-live");
    }
  }

  // ---------------------------------------------------------------- start
  async function start() {
    const s = await api("/api/session");
    if (!s.ok) return;
    session = s.body;
    fmt = new Intl.DateTimeFormat("en-GB", { timeZone: session.timezone, hour: "2-digit", minute: "2-digit", second: "2-digit" });
    $("site").textContent = session.site;
    $("user").textContent = session.user + " (" + session.role + ")";
    document.body.classList.add(session.may_act ? "may-act" : "read-only");
    const m = await api("/api/map");
    fm = FleetMap.create($("map"), m.body, { collapsed: true });
    map = fm.map;
    parcelLayer = L.featureGroup().addTo(map);
    allRoutesLayer = L.featureGroup();
    routeLayer = L.featureGroup().addTo(map);
    vanLayer = L.featureGroup().addTo(map);
    fm.control.addOverlay(allRoutesLayer, "All routes (base solid, horizon dashed)");
    fm.control.addOverlay(parcelLayer, "Parcels");
    fm.control.addOverlay(vanLayer, "Vans");
    map.on("overlayadd", (e) => { if (e.layer === allRoutesLayer) { routesFetched = -1; refreshAllRoutes(); } });
    map.on("click", (e) => {
      if (!placing) return;
      const f = $("order-form");
      f.elements.lon.value = e.latlng.lng.toFixed(6);
      f.elements.lat.value = e.latlng.lat.toFixed(6);
      placing = false;
      $("order-dialog").showModal();
    });
    for (const b of document.querySelectorAll(".tabs button")) b.onclick = () => showTab(b.dataset.tab);
    $("logout").onclick = async () => { await api("/api/logout", { method: "POST", body: {} }); window.location.replace("/login"); };
    $("pause-all").onclick = async () => { if (await confirmDialog("Pause every van?")) act("/api/fleet/pause", { confirm: true }, "pause all"); };
    $("resume-all").onclick = async () => { if (await confirmDialog("Resume every van?")) act("/api/fleet/resume", { confirm: true }, "resume all"); };
    $("estop-all").onclick = async () => { if (await confirmDialog("EMERGENCY-STOP EVERY VAN now?")) act("/api/fleet/estop", { confirm: true }, "e-stop all"); };
    $("replan").onclick = async () => { if (await confirmDialog("Re-plan the day from the fleet as it is now?")) act("/api/replan", { reason: "dispatcher's request" }, "re-plan"); };
    $("add-parcels").onclick = () => { $("order-error").textContent = ""; $("order-dialog").showModal(); };
    $("order-cancel").onclick = () => $("order-dialog").close();
    $("order-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = e.target.elements;
      const parcel = {};
      for (const k of ["parcel_id", "lon", "lat", "weight_kg", "volume_m3", "earliest", "latest", "station"]) {
        const v = f[k].value.trim();
        if (v !== "") parcel[k] = v;
      }
      const r = await api("/api/orders", { method: "POST", body: { parcels: [parcel] }, quiet: true });
      if (r.ok) { $("order-dialog").close(); toast("order " + parcel.parcel_id + ": " + r.body.message); }
      else $("order-error").textContent = r.body.error || ("refused: HTTP " + r.status);
    });
    $("order-pick").onclick = () => { placing = true; $("order-dialog").close(); toast("click the map where the door is"); };
    // read-only handles for troubleshooting from the browser's devtools (and the page tests)
    window.fleetConsole = { vans: vans, parcels: parcels, alerts: alerts, map: map };
    connect();
    setInterval(renderDirty, 500);
    setInterval(liveness, 1000);
    setInterval(() => { if (selected && selected.kind === "parcel") showParcel(selected.id); }, 5000);
  }
  start();
})();
