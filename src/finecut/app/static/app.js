// finecut annotation app: plain JavaScript, no build step.
// The server holds the session of each image (prompts, undo/redo, objects) and saves it after every action;
// this page draws the photo, the masks and the prompts, and turns mouse/keyboard input into API calls.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const stage = $("stage");
  const canvas = $("view");
  const ctx = canvas.getContext("2d");

  const PALETTE = [
    [255, 99, 71], [60, 179, 113], [255, 193, 7], [186, 104, 200], [0, 188, 212], [255, 138, 101],
    [139, 195, 74], [240, 98, 146], [121, 134, 203], [77, 182, 172], [255, 213, 79], [161, 136, 127],
  ];
  const CURRENT_COLOR = [47, 155, 255];
  const CLICK_COLORS = { positive: "#2ecc40", negative: "#ff4136", tolerant: "#ffdc00" };

  const store = {
    get(key, fallback) {
      try { const v = localStorage.getItem("finecut." + key); return v === null ? fallback : JSON.parse(v); }
      catch (e) { return fallback; }
    },
    set(key, value) { try { localStorage.setItem("finecut." + key, JSON.stringify(value)); } catch (e) { /* ignore */ } },
  };

  const state = {
    config: null,
    images: [],
    index: -1,
    name: null,
    img: null,           // HTMLImageElement of the current photo
    W: 0, H: 0,
    data: null,          // last server state of the image
    objects: [],         // [{id, label, area, runs}]
    model: store.get("model", null),
    opacity: store.get("opacity", 0.5),
    tool: "click",
    brushWidth: store.get("brushWidth", 8),
    view: { s: 1, tx: 0, ty: 0 },
    drag: null,          // in-progress pointer interaction
    tHeld: false,
    busy: 0,            // requests queued or running
    queued: 0,           // actions waiting for the one in flight
    pending: [],         // queued clicks, drawn as hollow markers until computed
    inflight: null,      // the click being computed
    epoch: 0,            // bumped on a version conflict: actions queued before it are dropped
    versions: {},        // image name -> version of its annotation state last seen (sent as If-Match)
    editing: null,       // {id, label} of a finished object being edited again
    notice: false,       // #message shows a notice that the next successful action clears
    loadToken: 0,
    layers: { curFill: null, curLine: null, objFill: null, objLine: null, selLine: null },
    labels: null,        // the label set: [{name, id, color, hotkey}] or null (free-text labels)
    selected: null,      // id of the selected finished object
    masks: new Map(),    // object id -> {runs, mask}: decoded masks, for selecting by click
    filter: store.get("filter", "all"),  // image list filter by status
    hidden: new Set(),   // ids of the current image's objects not drawn (kept per image in localStorage)
    locked: new Set(),   // ids of the current image's objects protected from edits and selection
    alphaView: store.get("alphaView", false),  // draw the current object from its alpha matte (when it has one)
    alpha: { key: null, layer: null },  // the matte layer shown, and the "<image>@<version>" it was asked for
  };
  const STATUS_TEXT = { new: "new", in_progress: "in progress", done: "done", skipped: "skipped" };

  // ------------------------------------------------------------------ status & messages
  let statusTimer = null;
  function status(text, kind = "") {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + kind;
    clearTimeout(statusTimer);
    if (kind === "ok") statusTimer = setTimeout(() => { el.className = "status"; }, 2500);
  }
  // A message over the photo: an error, or (notice) a banner at the top that does not block clicks.
  function showMessage(text, isError = false, notice = false) {
    const el = $("message");
    el.textContent = text;
    el.className = "message" + (isError ? " error" : "") + (notice ? " notice" : "");
    el.hidden = !text;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  function summary() {
    if (!state.data) return state.name || "";
    return `${state.name}: ${state.W}×${state.H}, ${plural(state.objects.length, "object")}`;
  }

  // ------------------------------------------------------------------ API
  let queue = Promise.resolve();
  // Busy state: the cursor (CSS on #stage[data-busy]) and the spinner with the number of queued actions.
  function renderBusy() {
    stage.dataset.busy = state.busy > 0 ? "1" : "0";
    stage.dataset.queued = String(state.queued);
    $("spinner").hidden = state.busy === 0;
    $("spinner-text").textContent = state.queued ? `computing… (${state.queued} queued)` : "computing…";
  }
  function setBusy(delta) {
    state.busy += delta;
    renderBusy();
  }
  async function request(method, url, body, raw = false, headers = {}) {
    const opts = { method, headers: Object.assign({}, headers) };
    if (body !== undefined) {
      if (body instanceof Blob) { opts.body = body; }
      else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    }
    const res = await fetch(url, opts);
    if (raw) return res;
    let payload = null;
    try { payload = await res.json(); } catch (e) { payload = null; }
    if (!res.ok) {
      let detail = payload && payload.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("; ");
      const err = new Error(detail || `${res.status} ${res.statusText}`);
      err.status = res.status;
      err.payload = payload;
      throw err;
    }
    return payload;
  }
  // Serialise interactions so that clicks reach the server (and its history) in the order they were made.
  function enqueue(fn) {
    setBusy(1);
    const run = queue.then(fn).catch((err) => { status(err.message, "error"); }).finally(() => setBusy(-1));
    queue = run;
    return run;
  }
  const imageUrl = (name, action) => `/api/images/${encodeURIComponent(name)}/${action}`;

  // ------------------------------------------------------------------ masks
  function decodeRuns(runs, W, H) {
    const mask = new Uint8Array(W * H);
    let pos = 0, on = false;
    for (const n of runs) {
      if (on) mask.fill(1, pos, pos + n);
      pos += n;
      on = !on;
    }
    return mask;
  }
  function newLayer(W, H) {
    const c = document.createElement("canvas");
    c.width = W; c.height = H;
    return c;
  }
  // Paint one or several masks: a fill layer (drawn with the opacity) and an outline layer (drawn opaque).
  function paintLayers(items, W, H) {
    const fill = new ImageData(W, H), line = new ImageData(W, H);
    const f = fill.data, l = line.data;
    for (const { mask, color, outline } of items) {
      for (let y = 0; y < H; y++) {
        const row = y * W;
        for (let x = 0; x < W; x++) {
          const i = row + x;
          if (!mask[i]) continue;
          const p = i * 4;
          f[p] = color[0]; f[p + 1] = color[1]; f[p + 2] = color[2]; f[p + 3] = 255;
          const edge = x === 0 || y === 0 || x === W - 1 || y === H - 1 ||
            !mask[i - 1] || !mask[i + 1] || !mask[i - W] || !mask[i + W];
          if (edge) { l[p] = outline[0]; l[p + 1] = outline[1]; l[p + 2] = outline[2]; l[p + 3] = 255; }
        }
      }
    }
    const fc = newLayer(W, H), lc = newLayer(W, H);
    fc.getContext("2d").putImageData(fill, 0, 0);
    lc.getContext("2d").putImageData(line, 0, 0);
    return [fc, lc];
  }
  const hexRgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const classOf = (label) => (state.labels ? state.labels.find((c) => c.name === label) || null : null);
  // an object's colour follows its class (label set); without one, its id
  function colorOf(o) {
    const cls = classOf(o.label);
    return cls ? hexRgb(cls.color) : PALETTE[(o.id - 1) % PALETTE.length];
  }
  function rebuildCurrent() {
    rebuildAlpha();
    const cur = state.data && state.data.current;
    if (!cur || !cur.area) { state.layers.curFill = state.layers.curLine = null; return; }
    const mask = decodeRuns(cur.runs, state.W, state.H);
    [state.layers.curFill, state.layers.curLine] = paintLayers(
      [{ mask, color: CURRENT_COLOR, outline: [255, 255, 255] }], state.W, state.H);
  }
  // Alpha view: when the model gave the current object an alpha matte, it is drawn in the current object's colour
  // with the matte as its opacity (times the Opacity slider), instead of the binary mask and its outline. The matte
  // is fetched as an 8-bit PNG for each state version; the previous matte stays until the new one has arrived.
  const alphaShown = () => Boolean(state.alphaView && state.data && state.data.current.has_alpha);
  function rebuildAlpha() {
    if (!alphaShown()) { state.alpha = { key: null, layer: null }; return; }
    const name = state.name, version = state.data.version;
    const key = `${name}@${version}`;
    if (state.alpha.key === key) return;
    state.alpha = { key, layer: state.alpha.layer };
    request("GET", imageUrl(name, "alpha.png") + `?v=${version}`, undefined, true)
      .then(async (res) => {
        if (!res.ok) {
          const body = await res.json().catch(() => null);
          throw new Error((body && body.detail) || `alpha matte: ${res.status} ${res.statusText}`);
        }
        const bitmap = await createImageBitmap(await res.blob(), { colorSpaceConversion: "none", premultiplyAlpha: "none" });
        if (state.alpha.key !== key) return;  // a newer state, or another image, asked for another matte
        if (bitmap.width !== state.W || bitmap.height !== state.H) throw new Error("alpha matte: wrong size");
        state.alpha.layer = alphaLayer(bitmap);
        draw();
      })
      .catch((err) => {
        if (state.alpha.key !== key) return;
        state.alpha.layer = null;  // back to the mask
        draw();
        status(err.message, "error");
      });
  }
  function alphaLayer(bitmap) {
    const c = newLayer(state.W, state.H);
    const g = c.getContext("2d");
    g.drawImage(bitmap, 0, 0);
    const img = g.getImageData(0, 0, state.W, state.H);
    const d = img.data;
    for (let p = 0; p < d.length; p += 4) {  // a grayscale PNG: R = G = B = the matte
      d[p + 3] = d[p];
      d[p] = CURRENT_COLOR[0]; d[p + 1] = CURRENT_COLOR[1]; d[p + 2] = CURRENT_COLOR[2];
    }
    g.putImageData(img, 0, 0);
    return c;
  }
  function renderAlphaButton() {
    const cur = state.data && state.data.current;
    const has = Boolean(cur && cur.has_alpha);
    $("alpha").disabled = !has;
    $("alpha").setAttribute("aria-pressed", String(has && state.alphaView));
    $("alpha").title = has ? "Draw the current object from the model's alpha matte instead of its mask (Shift+A)"
      : "Alpha matte view (Shift+A): only when the model gives the current object an alpha matte";
  }
  function toggleAlpha() {
    if (!(state.data && state.data.current.has_alpha)) {
      status("No alpha matte: the current model gives none for this object.");
      return;
    }
    state.alphaView = !state.alphaView;
    store.set("alphaView", state.alphaView);
    rebuildAlpha();
    renderAlphaButton();
    draw();
    status(state.alphaView ? "Alpha matte view: the current object is drawn from the model's matte."
      : "Mask view: the current object is drawn from its mask.");
  }
  function maskOf(o) {  // decoded once per object version
    const hit = state.masks.get(o.id);
    if (hit && hit.runs === o.runs) return hit.mask;
    const mask = decodeRuns(o.runs, state.W, state.H);
    state.masks.set(o.id, { runs: o.runs, mask });
    return mask;
  }
  function rebuildObjects() {
    // drawing order: later objects on top; the object being edited again is shown as the current object only
    const shown = state.objects.filter((o) => !(state.editing && state.editing.id === o.id) && !state.hidden.has(o.id));
    if (!shown.length) { state.layers.objFill = state.layers.objLine = null; }
    else {
      const items = shown.map((o) => {
        const c = colorOf(o);
        return { mask: maskOf(o), color: c, outline: c.map((v) => Math.min(255, v + 60)) };
      });
      [state.layers.objFill, state.layers.objLine] = paintLayers(items, state.W, state.H);
    }
    rebuildSelection();
  }
  function rebuildSelection() {
    const o = state.objects.find((ob) => ob.id === state.selected);
    if (!o || state.hidden.has(o.id)) { state.layers.selLine = null; return; }
    const mask = maskOf(o);
    const grown = new Uint8Array(mask.length);  // a 2-px outline around the selected object
    const W = state.W, H = state.H;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = y * W + x;
        if (mask[i]) continue;
        for (let d = 1; d <= 2 && !grown[i]; d++) {
          if ((x >= d && mask[i - d]) || (x < W - d && mask[i + d]) || (y >= d && mask[i - d * W]) ||
              (y < H - d && mask[i + d * W])) grown[i] = 1;
        }
      }
    }
    state.layers.selLine = paintLayers([{ mask: grown, color: [255, 255, 255], outline: [255, 255, 255] }], W, H)[0];
  }

  // ------------------------------------------------------------------ view transform
  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const r = stage.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
    draw();
  }
  function fit() {
    if (!state.img) return;
    const r = stage.getBoundingClientRect();
    const pad = 24;
    const s = Math.min((r.width - pad) / state.W, (r.height - pad) / state.H);
    state.view.s = Math.max(0.01, s);
    state.view.tx = (r.width - state.W * state.view.s) / 2;
    state.view.ty = (r.height - state.H * state.view.s) / 2;
    draw();
  }
  function zoomAt(factor, sx, sy) {
    const v = state.view;
    const ns = Math.min(40, Math.max(0.02, v.s * factor));
    const ix = (sx - v.tx) / v.s, iy = (sy - v.ty) / v.s;
    v.s = ns;
    v.tx = sx - ix * ns;
    v.ty = sy - iy * ns;
    draw();
  }
  function zoomCenter(factor) {
    const r = stage.getBoundingClientRect();
    zoomAt(factor, r.width / 2, r.height / 2);
  }
  function toImage(e) {
    const r = canvas.getBoundingClientRect();
    const sx = e.clientX - r.left, sy = e.clientY - r.top;
    return { sx, sy, x: (sx - state.view.tx) / state.view.s, y: (sy - state.view.ty) / state.view.s };
  }
  const inside = (p) => p.x >= 0 && p.y >= 0 && p.x < state.W && p.y < state.H;
  const clampX = (x) => Math.min(state.W, Math.max(0, x));
  const clampY = (y) => Math.min(state.H, Math.max(0, y));

  // ------------------------------------------------------------------ drawing
  function draw() {
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    $("zoom").textContent = Math.round(state.view.s * 100) + "%";
    if (!state.img) return;
    const v = state.view;
    ctx.setTransform(dpr * v.s, 0, 0, dpr * v.s, dpr * v.tx, dpr * v.ty);
    ctx.imageSmoothingEnabled = v.s < 2;
    ctx.drawImage(state.img, 0, 0);
    const L = state.layers;
    const matte = alphaShown() ? state.alpha.layer : null;  // the alpha view replaces the current mask's layers
    stage.dataset.alpha = matte ? "1" : "0";
    ctx.globalAlpha = state.opacity * 0.8;
    if (L.objFill) ctx.drawImage(L.objFill, 0, 0);
    ctx.globalAlpha = state.opacity;
    if (matte) ctx.drawImage(matte, 0, 0);
    else if (L.curFill) ctx.drawImage(L.curFill, 0, 0);
    ctx.globalAlpha = Math.min(1, 0.35 + state.opacity);
    if (L.objLine) ctx.drawImage(L.objLine, 0, 0);
    ctx.globalAlpha = 1;
    if (L.selLine) ctx.drawImage(L.selLine, 0, 0);
    if (L.curLine && !matte) ctx.drawImage(L.curLine, 0, 0);

    // prompts, in screen space so that they keep their size when zooming
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const S = (x, y) => [x * v.s + v.tx, y * v.s + v.ty];
    const cur = state.data && state.data.current;
    if (cur) {
      for (const sc of cur.scribbles) drawStroke(sc.points, sc.positive, sc.width, S);
      if (cur.box) drawBox(cur.box, S, false);
      cur.clicks.forEach((c, i) => drawClick(c, S, i === cur.clicks.length - 1));
    }
    for (const c of [state.inflight, ...state.pending]) if (c) drawPendingClick(c, S);
    const d = state.drag;
    if (d && d.mode === "box") drawBox([d.x0, d.y0, d.x1, d.y1].map((q, i) => (i % 2 ? clampY(q) : clampX(q))), S, true);
    if (d && d.mode === "brush") drawStroke(d.points, d.positive, state.brushWidth, S);
    if (d && d.mode === "paint") drawStroke(d.points, !d.erase, state.brushWidth, S);
  }
  function drawClick(c, S, last) {
    const [x, y] = S(c.x, c.y);
    ctx.beginPath();
    ctx.arc(x, y, last ? 7 : 6, 0, Math.PI * 2);
    ctx.fillStyle = CLICK_COLORS[c.kind];
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#111";
    ctx.stroke();
    if (c.kind === "tolerant") {
      ctx.beginPath();
      ctx.arc(x, y, 12, 0, Math.PI * 2);
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = CLICK_COLORS.tolerant;
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }
  function drawPendingClick(c, S) {  // a click sent or queued, not computed yet
    const [x, y] = S(c.x, c.y);
    ctx.beginPath();
    ctx.arc(x, y, 6, 0, Math.PI * 2);
    ctx.lineWidth = 2;
    ctx.setLineDash([3, 2]);
    ctx.strokeStyle = CLICK_COLORS[c.kind];
    ctx.stroke();
    ctx.setLineDash([]);
  }
  function drawBox(b, S, live) {
    const [x0, y0] = S(Math.min(b[0], b[2]), Math.min(b[1], b[3]));
    const [x1, y1] = S(Math.max(b[0], b[2]), Math.max(b[1], b[3]));
    ctx.lineWidth = 2;
    ctx.setLineDash(live ? [6, 4] : []);
    ctx.strokeStyle = "#000";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash(live ? [6, 4] : [8, 4]);
    ctx.lineDashOffset = 0;
    ctx.strokeStyle = "#ffdc00";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  function drawStroke(points, positive, width, S) {
    if (!points.length) return;
    ctx.beginPath();
    points.forEach((p, i) => { const [x, y] = S(p[0], p[1]); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    if (points.length === 1) { const [x, y] = S(points[0][0], points[0][1]); ctx.lineTo(x + 0.1, y); }
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(2, width * state.view.s);
    ctx.globalAlpha = 0.75;
    ctx.strokeStyle = positive ? CLICK_COLORS.positive : CLICK_COLORS.negative;
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  // ------------------------------------------------------------------ panel rendering
  function renderPanel() {
    const cur = state.data && state.data.current;
    $("undo").disabled = !cur || !cur.can_undo;
    $("redo").disabled = !cur || !cur.can_redo;
    $("finish").disabled = !cur || !cur.area;
    $("reset").disabled = !cur || (!cur.clicks.length && !cur.box && !cur.scribbles.length && !cur.area && !state.editing);
    stage.dataset.area = cur ? String(cur.area) : "0";
    stage.dataset.objects = String(state.objects.length);
    stage.dataset.clicks = cur ? String(cur.clicks.length) : "0";
    if (cur) {
      const parts = [];
      if (cur.clicks.length) parts.push(`${cur.clicks.length} click${cur.clicks.length > 1 ? "s" : ""}`);
      if (cur.box) parts.push("box");
      if (cur.scribbles.length) parts.push(`${cur.scribbles.length} scribble${cur.scribbles.length > 1 ? "s" : ""}`);
      if (cur.has_prior) parts.push("prior mask");
      $("current-info").textContent = parts.length
        ? `${parts.join(", ")} · ${cur.area.toLocaleString()} px` : "No prompts yet.";
      if (state.editing) $("current-info").textContent += ` · editing object #${state.editing.id}`;
    } else {
      $("current-info").textContent = "No prompts yet.";
    }
    $("finish").textContent = state.editing ? "Finish edit" : "Finish";
    renderAlphaButton();
    if (state.data) {
      const t = Math.round(state.data.threshold * 100);
      $("threshold").value = t;
      $("threshold-value").textContent = state.data.threshold.toFixed(2);
    }
    renderObjects();
  }
  const ICONS = {
    eye: '<path d="M1 8s2.5-5 7-5 7 5 7 5-2.5 5-7 5-7-5-7-5z"/><circle cx="8" cy="8" r="2.2"/>',
    eyeOff: '<path d="M1 8s2.5-5 7-5 7 5 7 5-2.5 5-7 5-7-5-7-5z"/><path d="M2 14L14 2"/>',
    lock: '<rect x="3" y="7" width="10" height="7" rx="1"/><path d="M5 7V5a3 3 0 0 1 6 0v2"/>',
    unlock: '<rect x="3" y="7" width="10" height="7" rx="1"/><path d="M5 7V5a3 3 0 0 1 6 0"/>',
    up: '<path d="M8 13V3M4 7l4-4 4 4"/>',
    down: '<path d="M8 3v10M4 9l4 4 4-4"/>',
  };
  function iconButton(cls, icon, title, onClick, disabled = false) {
    const b = document.createElement("button");
    b.className = "icon " + cls;
    b.innerHTML = `<svg viewBox="0 0 16 16" aria-hidden="true">${ICONS[icon]}</svg>`;
    b.title = title;
    b.setAttribute("aria-label", title);
    b.disabled = disabled;
    b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
    return b;
  }
  function renderObjects() {
    const ul = $("objects");
    ul.innerHTML = "";
    const n = state.objects.length;
    // listed top first: the first row is drawn on top of the others
    state.objects.map((o, index) => ({ o, index })).reverse().forEach(({ o, index }) => {
      const li = document.createElement("li");
      li.dataset.id = o.id;
      const locked = state.locked.has(o.id), hidden = state.hidden.has(o.id);
      if (state.editing && state.editing.id === o.id) li.className = "editing";
      if (state.selected === o.id) li.classList.add("selected");
      if (hidden) li.classList.add("hidden-object");
      if (locked) li.classList.add("locked");
      li.addEventListener("click", () => select(state.selected === o.id ? null : o.id));
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = `rgb(${colorOf(o).join(",")})`;
      const label = document.createElement("span");
      label.className = "obj-label";
      label.textContent = `#${o.id} ${o.label}`;
      label.title = locked ? "Locked" : "Double-click to rename" + (state.labels ? " (or select and press its class key)" : "");
      if (state.labels && !classOf(o.label)) { label.classList.add("unknown-class"); label.title = "Not a class of the label set"; }
      if (o.imported) {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = "imported";
        label.append(" ", tag);
      }
      label.addEventListener("dblclick", (e) => { e.stopPropagation(); if (!locked) editLabel(o, label); });
      li.title = `#${o.id} ${o.label}: ${o.area.toLocaleString()} px` + (o.imported ? " · imported" : "");
      const vis = iconButton("visibility", hidden ? "eyeOff" : "eye", hidden ? `Show object #${o.id}` : `Hide object #${o.id}`,
        () => toggleView("hidden", o.id));
      const lock = iconButton("lock", locked ? "lock" : "unlock", locked ? `Unlock object #${o.id}` : `Lock object #${o.id}`,
        () => toggleView("locked", o.id));
      const up = iconButton("move-up", "up", `Bring object #${o.id} forward`, () => moveObject(o, index + 1),
        locked || index === n - 1);
      const down = iconButton("move-down", "down", `Send object #${o.id} backward`, () => moveObject(o, index - 1),
        locked || index === 0);
      const edit = document.createElement("button");
      edit.className = "reopen";
      edit.textContent = "✎";
      edit.title = `Correct object #${o.id}: its mask becomes the current object (clicks change only what is around them; Paint / Erase edit pixels); Finish stores it, Esc cancels`;
      edit.setAttribute("aria-label", `Edit object ${o.id}`);
      edit.disabled = locked;
      edit.addEventListener("click", (e) => { e.stopPropagation(); reopenObject(o); });
      const del = document.createElement("button");
      del.className = "delete";
      del.textContent = "×";
      del.title = `Delete object #${o.id}`;
      del.setAttribute("aria-label", `Delete object ${o.id}`);
      del.disabled = locked;
      del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(o); });
      li.append(vis, lock, sw, label, up, down, edit, del);
      ul.append(li);
    });
    $("object-count").textContent = n ? `(${n})` : "";
    $("objects-empty").hidden = n > 0;
    $("objects-hint").hidden = n < 2;
    const labels = new Set(state.objects.map((o) => o.label));
    $("labels").innerHTML = "";
    for (const l of labels) { const opt = document.createElement("option"); opt.value = l; $("labels").append(opt); }
    renderClasses();
  }
  // ------------------------------------------------------------------ label set
  function currentLabel() { return $("label").value.trim() || state.config.default_label || "object"; }
  function setLabel(name) { $("label").value = name; renderClasses(); }
  function renderClasses() {
    const box = $("classes");
    if (!state.labels) { box.hidden = true; return; }
    box.hidden = false;
    $("label-row").hidden = true;
    const active = currentLabel();
    box.innerHTML = "";
    for (const c of state.labels) {
      const b = document.createElement("button");
      b.className = "class-chip" + (c.name === active ? " active" : "");
      b.dataset.label = c.name;
      b.title = `${c.name} (category ${c.id})` + (c.hotkey ? ` · key ${c.hotkey}` : "");
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = c.hotkey || "";
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = c.color;
      const name = document.createElement("span");
      name.textContent = c.name;
      b.append(key, sw, name);
      b.addEventListener("click", () => chooseClass(c));
      box.append(b);
    }
  }
  // a class key or chip: renames the selected object (unless locked), else sets the current object's class
  function chooseClass(c) {
    const o = state.objects.find((ob) => ob.id === state.selected);
    if (o) {
      if (state.locked.has(o.id)) { status(`Object #${o.id} is locked.`); return; }
      if (o.label !== c.name) {
        act("PATCH", `objects/${o.id}`, { label: c.name }, true, "rename").then((data) => {
          if (data) status(`Object #${o.id} is now “${c.name}”`, "ok");
        });
      }
      return;
    }
    setLabel(c.name);
    status(`Class: ${c.name}`);
  }
  function editLabel(o, span) {
    const input = document.createElement("input");
    input.type = "text";
    input.value = o.label;
    span.textContent = "";
    span.append(input);
    input.focus();
    input.select();
    let closed = false;
    const done = (save) => {
      if (closed) return;  // removing the input fires "blur": finish once
      closed = true;
      const v = input.value.trim();
      input.remove();
      span.textContent = `#${o.id} ${o.label}`;
      if (save && v && v !== o.label) act("PATCH", `objects/${o.id}`, { label: v }, true, "rename");
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); done(true); }
      if (e.key === "Escape") done(false);
      e.stopPropagation();
    });
    input.addEventListener("blur", () => done(true));
  }
  const matches = (im) => state.filter === "all" ||
    (state.filter === "unfinished" ? im.status === "new" || im.status === "in_progress" : im.status === state.filter);
  function renderImages() {
    const ul = $("images");
    ul.innerHTML = "";
    let shown = 0;
    state.images.forEach((im, i) => {
      if (!matches(im) && i !== state.index) return;
      shown += 1;
      const li = document.createElement("li");
      li.dataset.name = im.name;
      li.dataset.status = im.status || "new";
      if (i === state.index) li.className = "current";
      if (im.bad) li.classList.add("bad");
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.title = STATUS_TEXT[im.status || "new"];
      const n = document.createElement("span");
      n.className = "name";
      n.textContent = im.name;
      n.title = im.bad || `${im.name} · ${STATUS_TEXT[im.status || "new"]}`;
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = im.objects ? String(im.objects) : "";
      li.append(dot, n, c);
      li.addEventListener("click", () => openIndex(i));
      ul.append(li);
    });
    const cur = ul.querySelector(".current");
    if (cur) {  // scroll the list only (scrollIntoView would scroll the whole panel too)
      const r = cur.getBoundingClientRect(), u = ul.getBoundingClientRect();
      if (r.top < u.top) ul.scrollTop -= u.top - r.top;
      else if (r.bottom > u.bottom) ul.scrollTop += r.bottom - u.bottom;
    }
    $("images-count").textContent = state.filter === "all" ? "" : `(${shown} of ${state.images.length})`;
    $("image-pos").textContent = state.images.length ? `${state.index + 1} / ${state.images.length}` : "";
    $("prev").disabled = neighbour(-1) < 0;
    $("next").disabled = neighbour(1) < 0;
    renderProgress();
  }
  function renderProgress() {
    const counts = { new: 0, in_progress: 0, done: 0, skipped: 0 };
    for (const im of state.images) counts[im.status || "new"] += 1;
    const total = state.images.length || 1;
    $("progress-done").style.width = `${(100 * counts.done) / total}%`;
    $("progress-skipped").style.width = `${(100 * counts.skipped) / total}%`;
    $("progress-text").textContent = `${counts.done} / ${state.images.length} done` +
      (counts.skipped ? ` · ${counts.skipped} skipped` : "");
    $("progress").title = `${counts.done} done, ${counts.skipped} skipped, ${counts.in_progress} in progress, ` +
      `${counts.new} new of ${state.images.length} images`;
    $("progress").dataset.done = String(counts.done);
    const im = state.images[state.index];
    const st = (im && im.status) || "new";
    $("image-status").textContent = STATUS_TEXT[st];
    $("image-status").dataset.status = st;
    $("status-clear").hidden = !(st === "done" || st === "skipped");
  }
  // the index of the next (d = 1) or previous (d = -1) image that the filter shows; -1 if none
  function neighbour(d) {
    for (let i = state.index + d; i >= 0 && i < state.images.length; i += d) if (matches(state.images[i])) return i;
    return -1;
  }
  // the first unfinished image after the current one (wrapping around), -1 if none
  function nextUnfinished() {
    const n = state.images.length;
    for (let k = 1; k <= n; k++) {
      const i = (state.index + k) % n;
      const st = state.images[i].status || "new";
      if ((st === "new" || st === "in_progress") && !state.images[i].bad) return i;
    }
    return -1;
  }
  function showLatency(t, roundTrip, what) {
    if (!t) return;
    const parts = [];
    if (t.model_ms !== null && t.model_ms !== undefined) parts.push(`model ${t.model_ms.toFixed(0)} ms`);
    if (t.encode_ms !== null && t.encode_ms !== undefined) parts.push(`encode ${t.encode_ms.toFixed(0)} ms`);
    parts.push(`round trip ${roundTrip.toFixed(0)} ms`);
    $("latency").textContent = `${what}: ${parts.join(" · ")}`;
  }

  // ------------------------------------------------------------------ state updates
  function applyState(data, withObjects) {
    if (!data) return;
    if (typeof data.version === "number") state.versions[data.image] = data.version;
    if (data.image !== state.name) return;
    state.data = data;
    const editing = data.editing || null;
    const editingChanged = (state.editing && state.editing.id) !== (editing && editing.id);
    state.editing = editing;
    if (data.model && data.model !== state.model) {  // e.g. undoing a model switch
      state.model = data.model;
      $("model").value = data.model;
      store.set("model", data.model);
    }
    const im = state.images[state.index];
    if (withObjects && data.objects) {
      state.objects = data.objects;
      if (!state.objects.some((o) => o.id === state.selected)) state.selected = null;
      if (im) im.objects = data.objects.length;
    }
    if (im && data.status) im.status = data.status;
    if (im) renderImages();
    if ((withObjects && data.objects) || editingChanged) rebuildObjects();
    rebuildCurrent();
    renderPanel();
    draw();
  }
  // Send an action on an image (by default the current one); the answer replaces the local state. Every write
  // carries the version of the state it is based on; the server answers 409 when another tab changed the image.
  function act(method, action, body, withObjects = false, what = action, click = null) {
    const name = state.name;
    if (!name || !state.img) return Promise.resolve();
    const epoch = state.epoch;
    if (click) state.pending.push(click);
    state.queued += 1;
    renderBusy();
    if (click) draw();
    return enqueue(async () => {
      state.queued -= 1;
      state.pending = state.pending.filter((c) => c !== click);
      renderBusy();
      if (epoch !== state.epoch) { draw(); return; }  // queued before a conflict: based on a stale state
      state.inflight = click;
      const headers = name in state.versions ? { "If-Match": String(state.versions[name]) } : {};
      const t0 = performance.now();
      let data;
      try {
        data = await request(method, imageUrl(name, action), body, false, headers);
      } catch (err) {
        if (err.status === 409) { await recoverConflict(name, err); return; }
        throw err;
      } finally {
        state.inflight = null;
        if (name === state.name) draw();
      }
      applyState(data, withObjects || Boolean(data.objects));
      if (name !== state.name) return data;
      if (state.notice) { showMessage(""); state.notice = false; }
      showLatency(data.timing, performance.now() - t0, what);
      if (data.objects && (what === "undo" || what === "redo")) {
        status(`${what === "undo" ? "Undone" : "Redone"} · ${summary()}`);
      }
      return data;
    });
  }
  // Another tab or window changed the image: drop what was queued on the old state and show the saved state.
  async function recoverConflict(name, err) {
    state.epoch += 1;
    state.pending = [];
    const current = err.payload && err.payload.version;
    if (typeof current === "number") state.versions[name] = current;
    if (name !== state.name) return;
    const data = await request("POST", imageUrl(name, "open"), {});
    applyState(data, true);
    showMessage("This image was changed in another tab or window: this page now shows the saved state " +
      "(your last action was not applied).", false, true);
    state.notice = true;
    status(`Reloaded ${summary()}`, "error");
  }
  const withModel = (body) => Object.assign({ model: state.model }, body);

  // ------------------------------------------------------------------ images
  async function loadImages() {
    const data = await request("GET", "/api/images");
    const old = new Map(state.images.map((im) => [im.name, im]));
    state.images = data.images.map((im) => Object.assign({}, old.get(im.name) || {}, im));
    renderImages();
  }
  function loadPhoto(name) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = async () => {
        try {
          const res = await fetch(imageUrl(name, "file"));
          const body = await res.json().catch(() => null);
          reject(new Error((body && body.detail) || `${name}: the browser cannot display this image`));
        } catch (e) { reject(new Error(`${name}: cannot load image`)); }
      };
      img.src = imageUrl(name, "file");
    });
  }
  async function openIndex(i) {
    if (i < 0 || i >= state.images.length) return;
    const token = ++state.loadToken;
    state.index = i;
    const name = state.images[i].name;
    state.name = name;
    state.img = null;
    state.data = null;
    state.objects = [];
    state.editing = null;
    state.pending = [];
    state.notice = false;
    state.selected = null;
    state.masks = new Map();
    loadView(name);
    state.layers = { curFill: null, curLine: null, objFill: null, objLine: null, selLine: null };
    state.alpha = { key: null, layer: null };
    $("latency").textContent = "\u00a0";
    stage.dataset.image = "";
    $("image-name").textContent = name;
    document.title = `${name} — finecut`;
    history.replaceState(null, "", "#" + encodeURIComponent(name));
    store.set("image", name);
    renderImages();
    renderPanel();
    showMessage("Loading " + name + " …");
    draw();
    setBusy(1);
    try {
      const t0 = performance.now();
      const [img, data] = await Promise.all([
        loadPhoto(name),
        request("POST", imageUrl(name, "open"), withModel({})),
      ]);
      if (token !== state.loadToken) return;
      state.img = img;
      state.W = data.width;
      state.H = data.height;
      if (data.model && data.model !== state.model) { state.model = data.model; $("model").value = data.model; }
      showMessage("");
      state.images[i].bad = null;
      applyState(data, true);
      fit();
      stage.dataset.image = name;
      showLatency(data.timing, performance.now() - t0, "open");
      status(`${summary()} · saved to ${state.config.out_dir}`);
    } catch (err) {
      if (token !== state.loadToken) return;
      state.images[i].bad = err.message;
      renderImages();
      showMessage(err.message + "\nUse ◀ ▶ to go on with the other images.", true);
      status(err.message, "error");
    } finally {
      setBusy(-1);
    }
  }
  const step = (d) => { const i = neighbour(d); if (i >= 0) openIndex(i); };

  // ------------------------------------------------------------------ per-image view: hidden and locked objects
  function loadView(name) {
    const v = store.get("view." + name, {});
    state.hidden = new Set(v.hidden || []);
    state.locked = new Set(v.locked || []);
  }
  function saveView() {
    if (state.name) store.set("view." + state.name, { hidden: [...state.hidden], locked: [...state.locked] });
  }
  function toggleView(which, id) {
    const set = state[which];
    if (set.has(id)) set.delete(id); else set.add(id);
    if (which === "locked" && set.has(id) && state.selected === id) state.selected = null;
    saveView();
    rebuildObjects();
    renderObjects();
    draw();
  }
  // select a finished object (null: none): shown with a white outline; class keys rename it, Delete deletes it
  function select(id) {
    state.selected = id;
    for (const li of $("objects").querySelectorAll("li")) li.classList.toggle("selected", Number(li.dataset.id) === id);
    stage.dataset.selected = id === null ? "" : String(id);
    rebuildSelection();
    draw();
    const o = state.objects.find((ob) => ob.id === id);
    if (o) status(`Selected #${o.id} “${o.label}”` + (state.labels ? " · a class key renames it" : "") +
      " · Delete deletes it · Enter edits it");
  }
  // the topmost shown, unlocked object whose mask holds image pixel (x, y)
  function objectAt(x, y) {
    const i = Math.floor(y) * state.W + Math.floor(x);
    for (let k = state.objects.length - 1; k >= 0; k--) {
      const o = state.objects[k];
      if (state.hidden.has(o.id) || state.locked.has(o.id)) continue;
      if (state.editing && state.editing.id === o.id) continue;
      if (maskOf(o)[i]) return o;
    }
    return null;
  }
  function moveObject(o, index) {
    const from = state.objects.findIndex((ob) => ob.id === o.id);
    if (index < 0 || index >= state.objects.length || index === from) return;
    act("POST", `objects/${o.id}/move`, { index }, true, "reorder").then((data) => {
      if (data) status(`Object #${o.id} moved ${index > from ? "forward" : "backward"} · Ctrl+Z undoes`);
    });
  }

  // ------------------------------------------------------------------ pointer input
  function clickKind(e) {
    if (e.button === 1 || state.tHeld) return "tolerant";
    if (e.button === 2 || e.shiftKey) return "negative";
    return "positive";
  }
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.img) return;
    const p = toImage(e);
    canvas.setPointerCapture(e.pointerId);
    if (e.button === 1) e.preventDefault();
    const pan = state.tool === "pan" || e.altKey;
    if (pan) {
      state.drag = { mode: "pan", sx: p.sx, sy: p.sy, tx: state.view.tx, ty: state.view.ty };
      stage.classList.add("panning");
      return;
    }
    if (state.tool === "brush" && e.button !== 1) {
      const positive = !(e.button === 2 || e.shiftKey);
      state.drag = { mode: "brush", positive, points: inside(p) ? [[p.x, p.y]] : [] };
      draw();
      return;
    }
    if ((state.tool === "paint" || state.tool === "erase") && e.button !== 1) {
      const erase = state.tool === "erase" || e.button === 2 || e.shiftKey;
      state.drag = { mode: "paint", erase, points: inside(p) ? [[p.x, p.y]] : [] };
      draw();
      return;
    }
    if (state.tool === "select" && e.button === 0) {
      const o = inside(p) ? objectAt(p.x, p.y) : null;
      select(o ? o.id : null);
      return;
    }
    state.drag = {
      mode: "press", button: e.button, kind: clickKind(e), sx: p.sx, sy: p.sy,
      x0: p.x, y0: p.y, x1: p.x, y1: p.y, boxOnly: state.tool === "box",
      tx: state.view.tx, ty: state.view.ty,
    };
  });
  canvas.addEventListener("pointermove", (e) => {
    const d = state.drag;
    if (!d) return;
    const p = toImage(e);
    if (d.mode === "pan") {
      state.view.tx = d.tx + (p.sx - d.sx);
      state.view.ty = d.ty + (p.sy - d.sy);
      draw();
    } else if (d.mode === "brush" || d.mode === "paint") {
      if (!inside(p)) return;
      const last = d.points[d.points.length - 1];
      if (!last || Math.hypot(p.x - last[0], p.y - last[1]) * state.view.s >= 2) { d.points.push([p.x, p.y]); draw(); }
    } else if (d.mode === "press" || d.mode === "box") {
      const moved = Math.hypot(p.sx - d.sx, p.sy - d.sy);
      if (d.mode === "press" && moved > 6) {
        if (d.button === 1) {  // middle-drag pans
          d.mode = "pan";
          stage.classList.add("panning");
        } else if (d.button === 0) {
          d.mode = "box";
        }
      }
      if (d.mode === "box") { d.x1 = p.x; d.y1 = p.y; draw(); }
      if (d.mode === "pan") { state.view.tx = d.tx + (p.sx - d.sx); state.view.ty = d.ty + (p.sy - d.sy); draw(); }
    }
  });
  const endPointer = (e) => {
    const d = state.drag;
    state.drag = null;
    stage.classList.remove("panning");
    if (!d) return;
    if (d.mode === "brush") {
      draw();
      if (d.points.length) {
        const pts = d.points.map(([x, y]) => [Math.min(state.W - 0.01, x), Math.min(state.H - 0.01, y)]);
        act("POST", "scribble", withModel({ points: pts, positive: d.positive, width: state.brushWidth }), false, "scribble");
      }
    } else if (d.mode === "paint") {
      draw();
      if (d.points.length) {
        const pts = d.points.map(([x, y]) => [Math.min(state.W - 0.01, x), Math.min(state.H - 0.01, y)]);
        act("POST", "paint", { points: pts, width: state.brushWidth, erase: d.erase }, false, d.erase ? "erase" : "paint");
      }
    } else if (d.mode === "box") {
      const x0 = clampX(Math.min(d.x0, d.x1)), x1 = clampX(Math.max(d.x0, d.x1));
      const y0 = clampY(Math.min(d.y0, d.y1)), y1 = clampY(Math.max(d.y0, d.y1));
      draw();
      if (x1 - x0 >= 2 && y1 - y0 >= 2) act("POST", "box", withModel({ box: [x0, y0, x1, y1] }), false, "box");
    } else if (d.mode === "press" && e.type === "pointerup" && !d.boxOnly) {
      if (!inside({ x: d.x0, y: d.y0 })) { status("Click inside the image.", ""); return; }
      act("POST", "click", withModel({ x: d.x0, y: d.y0, kind: d.kind }), false, `${d.kind} click`,
        { x: d.x0, y: d.y0, kind: d.kind });
    }
  };
  canvas.addEventListener("pointerup", endPointer);
  canvas.addEventListener("pointercancel", endPointer);
  canvas.addEventListener("auxclick", (e) => e.preventDefault());
  canvas.addEventListener("dblclick", (e) => {  // Select tool: double-click an object's mask to correct it
    if (state.tool !== "select" || !state.img) return;
    const p = toImage(e);
    const o = inside(p) ? objectAt(p.x, p.y) : null;
    if (o) reopenObject(o);
  });
  canvas.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const p = toImage(e);
    zoomAt(Math.pow(1.0015, -e.deltaY), p.sx, p.sy);
  }, { passive: false });

  // ------------------------------------------------------------------ controls
  function setTool(tool) {
    state.tool = tool;
    for (const b of $("tools").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tool === tool);
    stage.className = "tool-" + tool;
    $("brush-options").hidden = !["brush", "paint", "erase"].includes(tool);
    const hints = {
      click: "Left click: object · Right/Shift click: background · Middle/T click: tolerant · Drag: box",
      box: "Drag a box around the object; then refine with clicks.",
      brush: "Scribble over the object (left) or the background (right / Shift); the model follows.",
      paint: "Paint pixels onto the current mask (right / Shift erases); no model involved.",
      erase: "Erase pixels from the current mask; no model involved.",
      select: "Click an object's mask to select it · double-click to correct it" ,
      pan: "Drag to move the image; the wheel zooms.",
    };
    $("tool-hint").textContent = hints[tool];
  }
  function finish() {
    if (!state.data || !state.data.current.area) { status("Nothing to finish: click on an object first."); return; }
    const label = currentLabel();
    act("POST", "finish", { label }, true, "finish").then((data) => {
      if (data) status(`Object #${data.finished_id} “${label}” saved · ${summary()}`, "ok");
    });
  }
  function deleteObject(o) {  // undoable: Ctrl+Z brings it back
    act("DELETE", `objects/${o.id}`, undefined, true, "delete").then((data) => {
      if (data) status(`Deleted object #${o.id} “${o.label}” — Ctrl+Z brings it back · ${summary()}`);
    });
  }
  function reopenObject(o) {
    if (state.locked.has(o.id)) { status(`Object #${o.id} is locked: unlock it to edit it.`); return; }
    if (state.data && (state.data.current.area || state.data.current.clicks.length || state.editing)) {
      status("Finish (Space) or reset (Esc) the current object before correcting another one.", "error");
      return;
    }
    select(null);
    act("POST", `objects/${o.id}/reopen`, undefined, true, "reopen").then((data) => {
      if (!data || !data.editing) return;
      setLabel(data.editing.label);
      status(`Correcting object #${o.id} “${data.editing.label}”: clicks change only the part around them, ` +
        "Paint / Erase edit pixels · Finish stores it, Esc cancels.");
    });
  }
  // the image's status: done or skipped (then on to the next unfinished image), or null to unmark it
  async function setStatus(value, advance) {
    const name = state.name;
    if (!name || !state.img) return;
    const cur = state.data && state.data.current;
    if (value && cur && (cur.area || cur.clicks.length || cur.box || cur.scribbles.length)) {
      status("Finish (Space) or reset (Esc) the current object before marking the image " + value + ".", "error");
      return;
    }
    const data = await act("POST", "status", { status: value }, false, "status");
    if (!data) return;
    status(value ? `${name}: ${STATUS_TEXT[value]}` : `${name}: unmarked`, "ok");
    if (!advance || name !== state.name) return;
    const i = nextUnfinished();
    if (i >= 0) openIndex(i);
    else {
      showMessage("Every image is done or skipped. Export… writes the annotations.", false, true);
      state.notice = true;
    }
  }
  const undo = () => act("POST", "undo", undefined, false, "undo");
  const redo = () => act("POST", "redo", undefined, false, "redo");
  const reset = () => act("POST", "reset", undefined, false, "reset");

  $("tools").addEventListener("click", (e) => { if (e.target.dataset.tool) setTool(e.target.dataset.tool); });
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("reset").addEventListener("click", reset);
  $("finish").addEventListener("click", finish);
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("done-next").addEventListener("click", () => setStatus("done", true));
  $("skip-next").addEventListener("click", () => setStatus("skipped", true));
  $("status-clear").addEventListener("click", () => setStatus(null, false));
  $("image-filter").value = state.filter;
  $("image-filter").addEventListener("change", (e) => {
    state.filter = e.target.value;
    store.set("filter", state.filter);
    renderImages();
  });
  $("fit").addEventListener("click", fit);
  $("alpha").addEventListener("click", toggleAlpha);
  $("zoom-in").addEventListener("click", () => zoomCenter(1.25));
  $("zoom-out").addEventListener("click", () => zoomCenter(0.8));
  $("zoom-1").addEventListener("click", () => zoomCenter(1 / state.view.s));
  $("opacity").value = Math.round(state.opacity * 100);
  $("opacity-value").textContent = Math.round(state.opacity * 100) + "%";
  $("opacity").addEventListener("input", (e) => {
    state.opacity = e.target.value / 100;
    $("opacity-value").textContent = e.target.value + "%";
    store.set("opacity", state.opacity);
    draw();
  });
  let thresholdTimer = null;
  $("threshold").addEventListener("input", (e) => {
    const t = e.target.value / 100;
    $("threshold-value").textContent = t.toFixed(2);
    clearTimeout(thresholdTimer);
    thresholdTimer = setTimeout(() => act("POST", "threshold", { threshold: t }, false, "threshold"), 120);
  });
  $("brush-width").value = state.brushWidth;
  $("brush-width-value").textContent = state.brushWidth + " px";
  $("brush-width").addEventListener("input", (e) => {
    state.brushWidth = Number(e.target.value);
    $("brush-width-value").textContent = state.brushWidth + " px";
    store.set("brushWidth", state.brushWidth);
  });
  $("model").addEventListener("change", (e) => {
    const model = e.target.value;
    const previous = state.model;
    state.model = model;
    store.set("model", model);
    if (!state.name || !state.img) return;
    status(`Loading model ${model} …`);
    act("POST", "model", { model }, false, `model ${model}`).then((data) => {
      if (data) status(`Model: ${model} (Ctrl+Z goes back)`, "ok");
      else if (state.data) { state.model = state.data.model; $("model").value = state.data.model; }
      else { state.model = previous; $("model").value = previous; }
    });
  });
  $("label").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); $("label").blur(); finish(); }
    e.stopPropagation();
  });

  // upload
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    setBusy(1);
    try {
      await request("PUT", "/api/upload/" + encodeURIComponent(file.name), file);
      await loadImages();
      const i = state.images.findIndex((im) => im.name === file.name);
      status(`Added ${file.name}.`, "ok");
      if (i >= 0) openIndex(i);
    } catch (err) {
      status(err.message, "error");
    } finally { setBusy(-1); }
  });

  // import: a COCO file into the folder's images
  $("import").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    const out = $("import-result");
    out.textContent = `Importing ${file.name} …`;
    $("import-dialog").hidden = false;
    setBusy(1);
    try {
      await queue;  // let pending edits land first
      const res = await request("POST", "/api/import", file, false, { "X-Filename": file.name.replace(/[^\x20-\x7e]/g, "_") });
      out.innerHTML = "";
      const head = document.createElement("p");
      head.id = "import-summary";
      head.textContent = `${res.objects} object(s) imported into ${res.images} image(s)` +
        (res.duplicates ? `; ${res.duplicates} already there` : "") +
        (res.unmatched_count ? `; ${res.unmatched_count} image(s) of the file are not in the folder` : "");
      out.append(head);
      for (const text of res.problems) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = text;
        out.append(p);
      }
      if (res.problem_count > res.problems.length) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = `… and ${res.problem_count - res.problems.length} more`;
        out.append(p);
      }
      status(head.textContent, "ok");
      await loadImages();
      if (state.name && state.img) {  // show the current image's imported objects
        const data = await request("POST", imageUrl(state.name, "open"), withModel({}));
        applyState(data, true);
      }
    } catch (err) {
      out.textContent = err.message;
      status(err.message, "error");
    } finally { setBusy(-1); }
  });
  $("import-close").addEventListener("click", () => { $("import-dialog").hidden = true; });

  // export dialog
  $("export-open").addEventListener("click", () => { $("export-result").innerHTML = ""; $("export-dialog").hidden = false; });
  $("export-cancel").addEventListener("click", () => { $("export-dialog").hidden = true; });
  $("export-dialog").addEventListener("click", (e) => { if (e.target === $("export-dialog")) $("export-dialog").hidden = true; });
  $("export-run").addEventListener("click", async () => {
    const formats = [...document.querySelectorAll('input[name="fmt"]:checked')].map((i) => i.value);
    const out = $("export-result");
    if (!formats.length) { out.textContent = "Choose at least one format."; return; }
    const body = { formats };
    out.textContent = "Exporting …";
    setBusy(1);
    try {
      await queue;  // let pending edits land first
      const res = await request("POST", "/api/export", body);
      out.innerHTML = "";
      const head = document.createElement("p");
      head.textContent = `${res.objects} object(s) from ${res.images} image(s) written to ${res.folder}`;
      head.id = "export-summary";
      out.append(head);
      res.urls.forEach((url, k) => {
        const a = document.createElement("a");
        a.href = url;
        a.textContent = res.files[k];
        a.target = "_blank";
        out.append(a);
      });
      for (const s of res.skipped) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = `skipped ${s.image}: ${s.error}`;
        out.append(p);
      }
      status(head.textContent, "ok");
    } catch (err) {
      out.textContent = err.message;
      status(err.message, "error");
    } finally { setBusy(-1); }
  });

  // keyboard
  document.addEventListener("keydown", (e) => {
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") return;
    if (!$("export-dialog").hidden) { if (e.key === "Escape") $("export-dialog").hidden = true; return; }
    if (!$("import-dialog").hidden) { if (e.key === "Escape" || e.key === "Enter") $("import-dialog").hidden = true; return; }
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    if (mod && key === "z") { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
    if (mod && key === "y") { e.preventDefault(); redo(); return; }
    if (mod) return;
    const sel = state.objects.find((o) => o.id === state.selected);
    if (e.key === "Enter" && sel && !(state.data && state.data.current.area)) { e.preventDefault(); reopenObject(sel); return; }
    if (e.key === " " || e.key === "Enter") { e.preventDefault(); finish(); return; }
    if (e.key === "Escape") { if (sel) select(null); else reset(); return; }
    if ((e.key === "Delete" || e.key === "Backspace") && sel) {
      e.preventDefault();
      if (state.locked.has(sel.id)) status(`Object #${sel.id} is locked.`); else deleteObject(sel);
      return;
    }
    if ((e.key === "[" || e.key === "]") && sel && !state.locked.has(sel.id)) {
      const i = state.objects.indexOf(sel);
      moveObject(sel, e.key === "]" ? i + 1 : i - 1);
      return;
    }
    if (state.labels && /^[1-9]$/.test(e.key)) {
      const c = state.labels.find((cl) => cl.hotkey === e.key);
      if (c) chooseClass(c);
      return;
    }
    if (key === "d") { setStatus("done", true); return; }
    if (key === "s") { setStatus("skipped", true); return; }
    if (e.key === "ArrowRight" || key === "n" || e.key === "PageDown") { e.preventDefault(); step(1); return; }
    if (e.key === "ArrowLeft" || key === "p" || e.key === "PageUp") { e.preventDefault(); step(-1); return; }
    if (key === "t") { state.tHeld = true; return; }
    const tools = { c: "click", x: "box", b: "brush", h: "pan", m: "paint", e: "erase", v: "select" };
    if (tools[key]) { setTool(tools[key]); return; }
    if (key === "f" || key === "0") { fit(); return; }
    if (key === "a" && e.shiftKey) { toggleAlpha(); return; }
    if (key === "1" || key === "a") { zoomCenter(1 / state.view.s); return; }
    if (e.key === "+" || e.key === "=") { zoomCenter(1.25); return; }
    if (e.key === "-" || e.key === "_") { zoomCenter(0.8); return; }
  });
  document.addEventListener("keyup", (e) => { if (e.key.toLowerCase() === "t") state.tHeld = false; });
  window.addEventListener("blur", () => { state.tHeld = false; });
  window.addEventListener("resize", () => { resizeCanvas(); });
  if (window.ResizeObserver) new ResizeObserver(() => resizeCanvas()).observe(stage);

  // ------------------------------------------------------------------ start
  async function start() {
    try {
      state.config = await request("GET", "/api/config");
      const sel = $("model");
      for (const m of state.config.models) {
        const opt = document.createElement("option");
        opt.value = m.name;
        opt.textContent = m.name;
        opt.title = m.description || "";
        sel.append(opt);
      }
      const names = state.config.models.map((m) => m.name);
      if (!names.includes(state.model)) state.model = state.config.default_model;
      sel.value = state.model;
      state.labels = state.config.labels;
      if (state.labels) { $("label").value = state.config.default_label; renderClasses(); }
      await loadImages();
      resizeCanvas();
      setTool("click");
      if (!state.images.length) {
        showMessage(`No images in ${state.config.image_dir}. Add one with “Add image…”.`);
        status("No images.");
        return;
      }
      const wanted = decodeURIComponent(location.hash.slice(1)) || store.get("image", "");
      let i = state.images.findIndex((im) => im.name === wanted);
      if (i < 0) { state.index = -1; i = Math.max(0, nextUnfinished()); }  // else start with the first unfinished
      await openIndex(i);
    } catch (err) {
      showMessage(err.message, true);
      status(err.message, "error");
    }
  }
  window.finecutApp = { state, openIndex, fit, select };  // for debugging from the console
  start();
})();
