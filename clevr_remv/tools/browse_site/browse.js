// CLEVR-REMV static browser: no server, no network.  Data arrive through
// CLEVR_REMV.index(...) (data/index.js) and CLEVR_REMV.scene(...) (data/scene-K.js).
"use strict";
const CLEVR_REMV = (() => {
  const $ = (id) => document.getElementById(id);
  const state = { index: null, scene: null, u: 0, v: 0, masks: false, selected: null, strips: null };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, attrs || {});
    for (const c of children) e.append(c);
    return e;
  }

  function index(meta) {
    state.index = meta;
    $("meta").textContent = `${meta.scenes.length} scenes, ${meta.grid[0]}x${meta.grid[1]} views at ` +
      `${meta.resolution[0]}x${meta.resolution[1]}`;
    const list = $("scene-list");
    for (const s of meta.scenes) {
      const a = el("a", { href: `#scene=${s.index}`, id: `scene-link-${s.index}` }, `scene ${s.index} `,
        el("span", {}, `${s.split}, ${s.objects} obj., ${s.expressions} expr.`));
      list.append(el("li", {}, a));
    }
    window.addEventListener("hashchange", route);
    document.addEventListener("keydown", onKey);
    $("masks").addEventListener("change", () => { state.masks = $("masks").checked; draw(); });
    $("u").addEventListener("input", () => setView(+$("u").value, state.v));
    $("v").addEventListener("input", () => setView(state.u, +$("v").value));
    route();
  }

  function params() {
    const p = {};
    for (const kv of location.hash.replace(/^#/, "").split("&")) {
      const [k, v] = kv.split("=");
      if (k) p[k] = decodeURIComponent(v || "");
    }
    return p;
  }

  function route() {
    const p = params();
    const want = p.scene !== undefined ? +p.scene : (state.index.scenes[0] || {}).index;
    if (want === undefined) return;
    if (state.scene && state.scene.index === want) return;
    document.querySelectorAll("#scene-list a").forEach((a) => a.classList.toggle("current", a.id === `scene-link-${want}`));
    const old = $("scene-data");
    if (old) old.remove();
    const tag = el("script", { id: "scene-data", src: `data/scene-${want}.js` });
    tag.onerror = () => { $("scene-title").textContent = `scene ${want} is not in this site`; };
    document.body.append(tag);
  }

  function scene(data) {
    state.scene = data;
    state.selected = null;
    const [rows, cols] = data.grid;
    state.u = Math.floor(rows / 2);
    state.v = Math.floor(cols / 2);
    $("scene-title").textContent = `scene ${data.index} (${data.split}, ${data.shard}): ${data.objects.length} objects, ` +
      `${data.expressions.length} expressions, ${rows}x${cols} views at ${data.width}x${data.height}`;
    $("u").max = rows - 1;
    $("v").max = cols - 1;
    const canvas = $("overlay");
    canvas.width = data.width;
    canvas.height = data.height;
    const nav = $("navigator");
    nav.replaceChildren();
    nav.style.gridTemplateColumns = `repeat(${cols}, 16px)`;
    for (let u = 0; u < rows; u++) {
      for (let v = 0; v < cols; v++) {
        const b = el("button", { id: `view-${u}-${v}`, title: `view (${u},${v})` });
        b.addEventListener("click", () => setView(u, v));
        nav.append(b);
      }
    }
    const list = $("expressions");
    list.replaceChildren();
    data.expressions.forEach((e, k) => {
      const n = e.valid_views.flat().reduce((a, b) => a + b, 0);
      const targets = e.targets || [e.object];
      const anchors = e.anchors || (e.anchor !== null ? [e.anchor] : []);
      const named = targets.length === 1 ? `target ${targets[0]}` :
        targets.length ? `targets ${targets.join(", ")}` : "no target";
      const li = el("li", { id: `expr-${k}` }, ...targets.slice(0, 1).map((t) => swatches(data, t)), e.text, " ",
        el("span", { className: "info" }, `${e.id} ${e.family}, ${named}` +
          (anchors.length ? `, anchor ${anchors.join(", ")}` : "") + `, valid in ${n}/${rows * cols} views `),
        el("span", { className: "here" }));
      li.addEventListener("click", () => select(state.selected === k ? null : k));
      list.append(li);
    });
    const objs = $("objects");
    objs.replaceChildren();
    data.objects.forEach((o, k) => {
      const li = el("li", { id: `object-${k}` }, swatches(data, k),
        `${o.size} ${o.color} ${o.material} ${o.shape}`, el("span", { className: "info" }));
      objs.append(li);
    });
    $("viewer").hidden = false;
    $("expressions-box").hidden = false;
    setView(state.u, state.v);
  }

  // Two squares per object, labelled: its own colour (from the scene record), then its colour
  // in the masks overlay (a blue cylinder may be red there).
  function swatches(data, k) {
    const own = (data.object_colors || [])[k];
    const a = el("span", { className: "swatch object-colour", title: "object colour" });
    if (own) a.style.background = `rgb(${own.join(",")})`; else a.classList.add("unknown");
    const b = el("span", { className: "swatch mask-colour", title: "mask colour (overlay)" });
    b.style.background = `rgb(${data.colors[k].join(",")})`;
    return el("span", { className: "swatches" }, a, b);
  }

  function select(k) {
    state.selected = k;
    document.querySelectorAll("#expressions li").forEach((li, i) => li.classList.toggle("selected", i === k));
    refresh();
    draw();
  }

  function setView(u, v) {
    const [rows, cols] = state.scene.grid;
    state.u = Math.max(0, Math.min(rows - 1, u));
    state.v = Math.max(0, Math.min(cols - 1, v));
    const base = `img/${state.scene.index}/${state.u}-${state.v}`;
    $("photo").src = `${base}.webp`;
    const strips = new Image();
    strips.onload = () => { if (state.strips === strips) draw(); };
    strips.src = `${base}.png`;
    state.strips = strips;
    $("u").value = state.u;
    $("v").value = state.v;
    $("view-label").textContent = `view (${state.u},${state.v})`;
    refresh();
    draw();
  }

  function refresh() {
    const s = state.scene;
    const e = state.selected === null ? null : s.expressions[state.selected];
    const [rows, cols] = s.grid;
    for (let u = 0; u < rows; u++) {
      for (let v = 0; v < cols; v++) {
        const b = $(`view-${u}-${v}`);
        b.className = (e ? (e.valid_views[u][v] ? "valid" : "not-valid") : "") +
          (u === state.u && v === state.v ? " current" : "");
      }
    }
    s.expressions.forEach((x, k) => {
      const here = $(`expr-${k}`).querySelector(".here");
      const ok = x.valid_views[state.u][state.v] === 1;
      here.textContent = ok ? "valid in this view" : "not valid in this view";
      here.className = "here " + (ok ? "yes" : "no");
    });
    s.objects.forEach((o, k) => {
      $(`object-${k}`).querySelector(".info").textContent =
        ` ${s.visible_pixels[state.u][state.v][k]} px in this view`;
    });
  }

  function draw() {
    const canvas = $("overlay");
    const ctx = canvas.getContext("2d");
    const s = state.scene;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const layers = [];
    const img = state.strips;
    if (!img || !img.complete || !img.naturalWidth) { canvas.dataset.layers = ""; return; }
    const h = s.height;
    if (state.masks) { ctx.drawImage(img, 0, 0, s.width, h, 0, 0, s.width, h); layers.push("masks"); }
    if (state.selected !== null) {
      const e = s.expressions[state.selected];
      for (const t of e.targets || [e.object]) {
        if (t < 0 || t >= s.objects.length) continue;
        ctx.drawImage(img, 0, (1 + t) * h, s.width, h, 0, 0, s.width, h);
        layers.push(`target-${t}`);
      }
      for (const a of e.anchors || (e.anchor !== null ? [e.anchor] : [])) {
        if (a < 0 || a >= s.objects.length) continue;
        ctx.drawImage(img, 0, (1 + s.objects.length + a) * h, s.width, h, 0, 0, s.width, h);
        layers.push(`anchor-${a}`);
      }
    }
    canvas.dataset.layers = layers.join(" ");
    canvas.dataset.view = `${state.u},${state.v}`;
  }

  function onKey(ev) {
    if (!state.scene || ev.target.tagName === "INPUT" && ev.target.type === "range") return;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (moves[ev.key]) {
      ev.preventDefault();
      setView(state.u + moves[ev.key][0], state.v + moves[ev.key][1]);
    } else if (ev.key === "m") {
      $("masks").checked = !$("masks").checked;
      state.masks = $("masks").checked;
      draw();
    }
  }

  return { index, scene, state };
})();
