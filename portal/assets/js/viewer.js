// The image viewer of a series: server-rendered JPEGs from /rendered (one per instance, one per
// frame of a multi-frame instance), prefetched ahead of the current one.
// Move: mouse wheel, arrow keys, Page Up/Down (10 images), Home/End, the slider, the buttons,
// or (drag mode "Image") a swipe. Window/level: presets (CT: soft tissue, lung, bone, brain) or
// drag on the image (horizontal = width, vertical = center), sent as `?window=center,width`
// after a short pause (debounced), with the current values shown.
// Zoom: the buttons, + / - / 0 keys, a double click (2× there, again to fit) or a two-finger
// pinch; drag mode "Pan" (or a pinch) moves a zoomed image. Zoom is a CSS transform of the
// rendered image; when the zoomed image needs more pixels than were rendered, a larger viewport
// is asked for (never more than the image's own Rows×Columns).

import { dicomUrl, value, TAG } from './api.js';
import { h } from './ui.js';

const CT_PRESETS = [
  ['Default', null],
  ['Soft tissue', { c: 40, w: 400 }],
  ['Lung', { c: -600, w: 1500 }],
  ['Bone', { c: 300, w: 1500 }],
  ['Brain', { c: 40, w: 80 }],
];
const PREFETCH_AHEAD = 5;
const PREFETCH_BEHIND = 1;
const CACHE_MAX = 96;
const WINDOW_DEBOUNCE_MS = 150;
const WHEEL_STEP = 100; // pixels of wheel delta per image (one notch)
const SWIPE_STEP = 16; // pixels of finger travel per image
const ZOOM_MIN = 1;
const ZOOM_MAX = 8;
const ZOOM_STEP = 1.5;
const ZOOM_RENDER_DEBOUNCE_MS = 250;

let viewerSeq = 0;

const num = (v) => {
  const n = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(n) ? n : undefined;
};

/** The window stored in the first image (center/width), else one covering its value range. */
function defaultWindow(inst) {
  const c = num(value(inst, '00281050'));
  const w = num(value(inst, '00281051'));
  if (c !== undefined && w !== undefined && w >= 1) return { c, w };
  const bits = num(value(inst, '00280101')) ?? 8;
  const signed = num(value(inst, '00280103')) === 1;
  const slope = num(value(inst, '00281053')) ?? 1;
  const icpt = num(value(inst, '00281052')) ?? 0;
  const lo = (signed ? -(2 ** (bits - 1)) : 0) * slope + icpt;
  const hi = (signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1) * slope + icpt;
  return { c: (lo + hi) / 2, w: Math.max(1, Math.abs(hi - lo)) };
}

/**
 * createViewer({study, series, instances (QIDO instance results), modality, label})
 * → {el, destroy(), show(index)}. Mount `el`; the first image loads once it is in the page.
 */
export function createViewer({ study, series, instances, modality, label }) {
  const id = `viewer${++viewerSeq}`;
  const sorted = [...instances].sort((a, b) =>
    (num(value(a, TAG.InstanceNumber)) ?? 1e9) - (num(value(b, TAG.InstanceNumber)) ?? 1e9));
  const images = [];
  for (const inst of sorted) {
    const sop = value(inst, TAG.SOPInstanceUID);
    const frames = num(value(inst, TAG.NumberOfFrames)) ?? 1;
    if (frames > 1) for (let f = 1; f <= frames; f++) images.push({ sop, frame: f });
    else images.push({ sop, frame: null });
  }
  const n = images.length;
  const first = sorted[0];
  const base = first ? defaultWindow(first) : { c: 128, w: 256 };
  const imgH = num(value(first, '00280010')) ?? 0; // Rows
  const imgW = num(value(first, '00280011')) ?? 0; // Columns
  const maxDim = Math.max(imgW, imgH);
  const presets = modality === 'CT' ? CT_PRESETS : CT_PRESETS.slice(0, 1);

  let cur = 0;
  let dir = 1;
  let win = null;          // null: the image's own window; else {c, w} sent as ?window=
  let viewport = null;
  let want = null;
  let timer = 0;
  let destroyed = false;
  let mode = 'window';
  let zoom = 1;
  let pan = { x: 0, y: 0 }; // CSS px, applied after scaling about the stage centre
  let zoomTimer = 0;
  const cache = new Map(); // url → Image (insertion order = LRU)

  // --- DOM -------------------------------------------------------------------------------
  const empty = h('p', { class: 'viewer-empty' }, n ? 'Loading…' : 'This series has no images to show.');
  const counterOverlay = h('span', { class: 'ov-counter' });
  const wlOverlay = h('span', { class: 'ov-wl' });
  const zoomOverlay = h('span', { class: 'ov-zoom' });
  const status = h('p', { class: 'viewer-status', hidden: true, attrs: { role: 'alert' } });
  const frame = h('div', { class: 'frame-box' }, empty);
  const stage = h('div', {
    class: 'stage', tabIndex: 0,
    attrs: { role: 'application', 'aria-roledescription': 'image viewer', 'aria-describedby': `${id}-help`, 'data-testid': 'viewer-stage' },
  }, frame, h('div', { class: 'overlay', attrs: { 'aria-hidden': 'true' } }, counterOverlay, h('br'), wlOverlay, h('br'), zoomOverlay), status);

  const slider = h('input', {
    type: 'range', id: `${id}-slider`, min: 1, max: Math.max(n, 1), step: 1, value: 1, disabled: n < 2,
  });
  const counter = h('output', { class: 'counter', attrs: { for: `${id}-slider`, 'data-testid': 'viewer-counter' } });
  const prev = h('button', { type: 'button', attrs: { 'aria-label': 'Previous image' }, disabled: n < 2 }, '‹');
  const next = h('button', { type: 'button', attrs: { 'aria-label': 'Next image' }, disabled: n < 2 }, '›');
  const wlText = h('output', { class: 'wl', attrs: { 'aria-live': 'polite', 'data-testid': 'viewer-wl' } });
  const presetButtons = presets.map(([name, p]) => {
    const b = h('button', { type: 'button', dataset: { preset: name }, attrs: { 'aria-pressed': String(p === null) } }, name);
    b.addEventListener('click', () => setWindow(p ? { ...p } : null, true));
    return b;
  });
  const modeButtons = [['window', 'Window'], ['image', 'Image'], ['pan', 'Pan']].map(([m, text]) => {
    const b = h('button', { type: 'button', dataset: { mode: m }, attrs: { 'aria-pressed': String(m === mode) } }, text);
    b.addEventListener('click', () => {
      mode = m;
      for (const x of modeButtons) x.setAttribute('aria-pressed', String(x === b));
      stage.classList.toggle('mode-image', m === 'image');
      stage.classList.toggle('mode-pan', m === 'pan');
    });
    return b;
  });
  const zoomIn = h('button', { type: 'button', dataset: { zoom: 'in' }, attrs: { 'aria-label': 'Zoom in' }, disabled: !n }, '+');
  const zoomOut = h('button', { type: 'button', dataset: { zoom: 'out' }, attrs: { 'aria-label': 'Zoom out' }, disabled: true }, '−');
  const zoomFit = h('button', { type: 'button', dataset: { zoom: 'fit' }, attrs: { 'aria-label': 'Fit the image to the screen' }, disabled: true }, 'Fit');
  const zoomText = h('output', { class: 'zoom', attrs: { 'aria-live': 'polite', 'data-testid': 'viewer-zoom' } });

  const el = h('section', { class: 'viewer', attrs: { 'aria-label': `Viewer: ${label}` } },
    stage,
    h('div', { class: 'controls' },
      prev,
      h('label', { class: 'slider-label', attrs: { for: `${id}-slider` } }, 'Image'),
      slider, next, counter),
    h('div', { class: 'controls' },
      h('div', { class: 'group', attrs: { role: 'group', 'aria-label': 'Window presets' } },
        h('span', { class: 'group-label', attrs: { 'aria-hidden': 'true' } }, 'Window:'), presetButtons),
      wlText),
    h('div', { class: 'controls' },
      h('div', { class: 'group', attrs: { role: 'group', 'aria-label': 'Dragging on the image changes' } },
        h('span', { class: 'group-label', attrs: { 'aria-hidden': 'true' } }, 'Drag changes:'), modeButtons),
      h('div', { class: 'group', attrs: { role: 'group', 'aria-label': 'Zoom' } },
        h('span', { class: 'group-label', attrs: { 'aria-hidden': 'true' } }, 'Zoom:'), zoomOut, zoomIn, zoomFit, zoomText)),
    h('p', { id: `${id}-help`, class: 'viewer-help' },
      'Mouse wheel, arrow keys, Page Up/Down and Home/End move through the images. ',
      'Drag on the image: left/right changes the contrast (width), up/down the brightness (level); ',
      'with “Image” a drag or swipe moves through the images; with “Pan” it moves a zoomed image. ',
      'Zoom with + and − (0 fits), a double click, or two fingers.'));

  // --- images ------------------------------------------------------------------------------
  /** The viewport to render at: the stage's device pixels times the zoom, rounded up to 256,
   * or '' (native Rows×Columns) when that is at least the image's size. */
  function wantedViewport() {
    const px = Math.max(stage.clientWidth, stage.clientHeight) * (window.devicePixelRatio || 1) * zoom;
    if (!(px > 0) || maxDim <= px) return '';
    const vp = Math.ceil(px / 256) * 256;
    return vp >= maxDim ? '' : `${vp},${vp}`;
  }

  function ensureViewport() {
    if (viewport !== null || !maxDim) return;
    viewport = wantedViewport();
  }

  function url(i, w = win) {
    const im = images[i];
    const path = `/studies/${study}/series/${series}/instances/${im.sop}${im.frame ? `/frames/${im.frame}` : ''}/rendered`;
    const p = {};
    if (w) p.window = `${Math.round(w.c)},${Math.max(1, Math.round(w.w))}`;
    if (viewport) p.viewport = viewport;
    return dicomUrl(path, Object.keys(p).length ? p : undefined);
  }

  function load(u) {
    let im = cache.get(u);
    if (im) {
      cache.delete(u);
      cache.set(u, im);
      return im;
    }
    im = new Image();
    im.decoding = 'async';
    im.draggable = false;
    im.className = 'frame';
    im.addEventListener('load', () => { if (want === u && !destroyed) put(im); });
    im.addEventListener('error', () => {
      cache.delete(u);
      if (want === u && !destroyed) {
        status.textContent = 'This image cannot be shown: the server could not render it.';
        status.hidden = false;
        stage.classList.remove('loading');
      }
    });
    im.src = u;
    cache.set(u, im);
    while (cache.size > CACHE_MAX) {
      const [oldUrl, old] = cache.entries().next().value;
      cache.delete(oldUrl);
      if (!old.complete) old.src = ''; // stop a prefetch no longer needed
    }
    return im;
  }

  function describe(i) {
    return `${label}: image ${i + 1} of ${n}`;
  }

  /** Puts a loaded image on the stage (the element itself: no second request). */
  function put(im) {
    im.alt = describe(cur);
    if (frame.firstChild !== im) frame.replaceChildren(im);
    stage.classList.remove('loading');
    status.hidden = true;
  }

  function show(i) {
    if (!n || destroyed) return;
    ensureViewport();
    i = Math.max(0, Math.min(n - 1, i));
    if (i !== cur) dir = i > cur ? 1 : -1;
    cur = i;
    const text = `${i + 1} / ${n}`;
    counter.value = text;
    counter.textContent = text;
    counterOverlay.textContent = text;
    slider.value = String(i + 1);
    slider.setAttribute('aria-valuetext', `Image ${i + 1} of ${n}`);
    stage.setAttribute('aria-label', `${describe(i)}. Image viewer`);
    stage.dataset.index = String(i + 1);
    const u = url(i);
    want = u;
    const im = load(u);
    if (im.complete && im.naturalWidth) put(im);
    else stage.classList.add('loading');
    prefetch(i);
  }

  function prefetch(i) {
    for (let k = 1; k <= PREFETCH_AHEAD; k++) {
      const j = i + k * dir;
      if (j >= 0 && j < n) load(url(j));
    }
    for (let k = 1; k <= PREFETCH_BEHIND; k++) {
      const j = i - k * dir;
      if (j >= 0 && j < n) load(url(j));
    }
    load(url(i)); // keep the current one the most recently used
  }

  // --- window / level ----------------------------------------------------------------------
  function showWL() {
    const w = win ?? base;
    const t = `W ${Math.round(w.w)} · L ${Math.round(w.c)}${win ? '' : ' (image default)'}`;
    wlText.value = t;
    wlText.textContent = t;
    wlOverlay.textContent = `W ${Math.round(w.w)} L ${Math.round(w.c)}`;
    stage.dataset.window = win ? `${Math.round(win.c)},${Math.round(win.w)}` : '';
    for (const b of presetButtons) {
      const p = presets.find(([name]) => name === b.dataset.preset)[1];
      const on = p === null ? win === null : !!win && Math.round(win.c) === p.c && Math.round(win.w) === p.w;
      b.setAttribute('aria-pressed', String(on));
    }
  }

  /** Sets the window; the image request follows at once or after a short pause (dragging). */
  function setWindow(w, now) {
    win = w;
    showWL();
    clearTimeout(timer);
    if (now) show(cur);
    else timer = setTimeout(() => show(cur), WINDOW_DEBOUNCE_MS);
  }

  // --- zoom and pan ------------------------------------------------------------------------
  function clampZoom(z) {
    return Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, Number.isFinite(z) ? z : 1));
  }

  /** Sets the zoom (about the stage centre) and the pan; the pan is kept within the zoomed
   * image, so the image can never be pushed off the stage. */
  function setZoom(z, to = null) {
    z = clampZoom(z);
    const old = zoom;
    zoom = Math.abs(z - 1) < 0.01 ? 1 : z;
    let p = to ?? { x: pan.x * (zoom / old), y: pan.y * (zoom / old) };
    // The image is fitted inside the stage (letterboxed): only the part of the zoomed picture
    // wider or taller than the stage may move, so an edge never comes away from the stage's.
    const sw = stage.clientWidth;
    const sh = stage.clientHeight;
    const fitScale = imgW && imgH ? Math.min(sw / imgW, sh / imgH) : 0;
    const maxX = Math.max(0, (imgW * fitScale * zoom - sw) / 2);
    const maxY = Math.max(0, (imgH * fitScale * zoom - sh) / 2);
    p = { x: Math.max(-maxX, Math.min(maxX, p.x)), y: Math.max(-maxY, Math.min(maxY, p.y)) };
    pan = p;
    frame.style.transform = zoom === 1 ? '' : `translate(${p.x}px, ${p.y}px) scale(${zoom})`;
    stage.dataset.zoom = String(Math.round(zoom * 100) / 100);
    stage.classList.toggle('zoomed', zoom > 1);
    const pct = `${Math.round(zoom * 100)}%`;
    zoomText.value = pct;
    zoomText.textContent = pct;
    zoomOverlay.textContent = zoom === 1 ? '' : `Zoom ${pct}`;
    zoomOut.disabled = zoom <= ZOOM_MIN;
    zoomFit.disabled = zoom === 1;
    zoomIn.disabled = !n || zoom >= ZOOM_MAX;
    // More pixels when the zoomed image needs them (after the gesture settles).
    clearTimeout(zoomTimer);
    if (maxDim && viewport !== null) {
      zoomTimer = setTimeout(() => {
        const vp = wantedViewport();
        // Only ever sharper: a viewport is replaced by a larger one or by the native size.
        if (!destroyed && viewport !== '' && (vp === '' || parseInt(vp, 10) > parseInt(viewport, 10))) {
          viewport = vp;
          show(cur);
        }
      }, ZOOM_RENDER_DEBOUNCE_MS);
    }
  }

  // --- input -------------------------------------------------------------------------------
  slider.addEventListener('input', () => show(Number(slider.value) - 1));
  prev.addEventListener('click', () => show(cur - 1));
  next.addEventListener('click', () => show(cur + 1));

  stage.addEventListener('keydown', (ev) => {
    const step = Math.max(1, Math.round(n / 10));
    const to = {
      ArrowDown: cur + 1, ArrowRight: cur + 1, ArrowUp: cur - 1, ArrowLeft: cur - 1,
      PageDown: cur + step, PageUp: cur - step, Home: 0, End: n - 1,
    }[ev.key];
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const z = { '+': zoom * ZOOM_STEP, '=': zoom * ZOOM_STEP, '-': zoom / ZOOM_STEP, 0: 1 }[ev.key];
    if (z !== undefined && n) {
      ev.preventDefault();
      setZoom(z);
      return;
    }
    if (to === undefined) return;
    ev.preventDefault();
    show(to);
  });

  let wheelAcc = 0;
  stage.addEventListener('wheel', (ev) => {
    if (n < 2 || ev.ctrlKey) return; // ctrl+wheel is the browser's zoom
    ev.preventDefault();
    const d = ev.deltaY * (ev.deltaMode === 1 ? 40 : ev.deltaMode === 2 ? 400 : 1);
    let steps;
    if (Math.abs(d) >= WHEEL_STEP / 2) {
      // A mouse wheel notch (~100 px): at least one image per notch.
      steps = Math.sign(d) * Math.max(1, Math.round(Math.abs(d) / WHEEL_STEP));
      wheelAcc = 0;
    } else {
      // A touchpad's small deltas add up.
      wheelAcc += d;
      steps = Math.trunc(wheelAcc / WHEEL_STEP);
      wheelAcc -= steps * WHEEL_STEP;
    }
    if (steps) show(cur + steps);
  }, { passive: false });

  let drag = null;
  const pointers = new Map(); // pointerId → {x, y}: two of them make a pinch
  let pinch = null;
  function pinchState() {
    const [a, b] = [...pointers.values()];
    return { d: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)), mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2 };
  }
  stage.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0 || !n) return;
    stage.focus({ preventScroll: true });
    try { stage.setPointerCapture(ev.pointerId); } catch { /* a pointer the browser does not track */ }
    pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
    ev.preventDefault();
    if (pointers.size === 2) {
      // A second finger: the one-finger gesture stops (a window change so far is kept) and
      // the two fingers zoom and move the image.
      if (drag?.moved && mode === 'window') setWindow(win, true);
      drag = null;
      pinch = { start: pinchState(), zoom, pan: { ...pan } };
      return;
    }
    if (pointers.size > 2) return;
    drag = { x: ev.clientX, y: ev.clientY, id: ev.pointerId, win: { ...(win ?? base) }, index: cur, moved: false, pan: { ...pan } };
  });
  stage.addEventListener('pointermove', (ev) => {
    if (pointers.has(ev.pointerId)) pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
    if (pinch && pointers.size === 2) {
      const now = pinchState();
      const rect = stage.getBoundingClientRect();
      // Keep the stage point under the fingers' midpoint under it while scaling.
      const cx = rect.left + rect.width / 2;
      const cy = rect.top + rect.height / 2;
      const z = clampZoom(pinch.zoom * (now.d / pinch.start.d));
      const k = z / pinch.zoom;
      setZoom(z, {
        x: (now.mx - cx) - k * (pinch.start.mx - cx - pinch.pan.x),
        y: (now.my - cy) - k * (pinch.start.my - cy - pinch.pan.y),
      });
      return;
    }
    if (!drag || ev.pointerId !== drag.id) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 3) return;
    drag.moved = true;
    if (mode === 'pan') {
      setZoom(zoom, { x: drag.pan.x + dx, y: drag.pan.y + dy });
      return;
    }
    if (mode === 'image') {
      const d = Math.abs(dx) > Math.abs(dy) ? -dx : dy;
      const to = drag.index + Math.trunc(d / SWIPE_STEP);
      if (to !== cur) show(to);
      return;
    }
    // Sensitivity follows the current width, so narrow and wide windows both feel usable.
    const k = Math.max(drag.win.w, 20) / 250;
    setWindow({ c: drag.win.c + dy * k, w: Math.max(1, drag.win.w + dx * k) }, false);
  });
  const endDrag = (ev) => {
    pointers.delete(ev.pointerId);
    if (pointers.size < 2) pinch = null;
    if (!drag || ev.pointerId !== drag.id) return;
    const moved = drag.moved;
    drag = null;
    if (moved && mode === 'window') setWindow(win, true);
  };
  stage.addEventListener('dblclick', (ev) => {
    if (!n) return;
    ev.preventDefault();
    if (zoom > 1) {
      setZoom(1);
      return;
    }
    // 2× about the clicked point.
    const rect = stage.getBoundingClientRect();
    const px = ev.clientX - (rect.left + rect.width / 2);
    const py = ev.clientY - (rect.top + rect.height / 2);
    setZoom(2, { x: -px, y: -py });
  });
  zoomIn.addEventListener('click', () => setZoom(zoom * ZOOM_STEP));
  zoomOut.addEventListener('click', () => setZoom(zoom / ZOOM_STEP));
  zoomFit.addEventListener('click', () => setZoom(1));
  stage.addEventListener('pointerup', endDrag);
  stage.addEventListener('pointercancel', endDrag);

  showWL();
  setZoom(1);
  if (n) {
    counter.textContent = `1 / ${n}`;
    // The first image once the stage is in the page (its size chooses the viewport).
    requestAnimationFrame(() => { if (!destroyed) show(0); });
  }

  return {
    el,
    show,
    destroy() {
      destroyed = true;
      clearTimeout(timer);
      clearTimeout(zoomTimer);
      for (const im of cache.values()) if (!im.complete) im.src = '';
      cache.clear();
    },
  };
}
