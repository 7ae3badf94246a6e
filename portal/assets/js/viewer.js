// The image viewer of a series: server-rendered JPEGs from /rendered (one per instance, one per
// frame of a multi-frame instance), prefetched ahead of the current one.
// Move: mouse wheel, arrow keys, Page Up/Down (10 images), Home/End, the slider, the buttons,
// or (drag mode "Image") a swipe. Window/level: presets (CT: soft tissue, lung, bone, brain) or
// drag on the image (horizontal = width, vertical = center), sent as `?window=center,width`
// after a short pause (debounced), with the current values shown.

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
  const maxDim = Math.max(num(value(first, '00280010')) ?? 0, num(value(first, '00280011')) ?? 0);
  const presets = modality === 'CT' ? CT_PRESETS : CT_PRESETS.slice(0, 1);

  let cur = 0;
  let dir = 1;
  let win = null;          // null: the image's own window; else {c, w} sent as ?window=
  let viewport = null;
  let want = null;
  let timer = 0;
  let destroyed = false;
  let mode = 'window';
  const cache = new Map(); // url → Image (insertion order = LRU)

  // --- DOM -------------------------------------------------------------------------------
  const empty = h('p', { class: 'viewer-empty' }, n ? 'Loading…' : 'This series has no images to show.');
  const counterOverlay = h('span', { class: 'ov-counter' });
  const wlOverlay = h('span', { class: 'ov-wl' });
  const status = h('p', { class: 'viewer-status', hidden: true, attrs: { role: 'alert' } });
  const frame = h('div', { class: 'frame-box' }, empty);
  const stage = h('div', {
    class: 'stage', tabIndex: 0,
    attrs: { role: 'application', 'aria-roledescription': 'image viewer', 'aria-describedby': `${id}-help`, 'data-testid': 'viewer-stage' },
  }, frame, h('div', { class: 'overlay', attrs: { 'aria-hidden': 'true' } }, counterOverlay, h('br'), wlOverlay), status);

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
  const modeButtons = [['window', 'Window'], ['image', 'Image']].map(([m, text]) => {
    const b = h('button', { type: 'button', dataset: { mode: m }, attrs: { 'aria-pressed': String(m === mode) } }, text);
    b.addEventListener('click', () => {
      mode = m;
      for (const x of modeButtons) x.setAttribute('aria-pressed', String(x === b));
      stage.classList.toggle('mode-image', m === 'image');
    });
    return b;
  });

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
        h('span', { class: 'group-label', attrs: { 'aria-hidden': 'true' } }, 'Drag changes:'), modeButtons)),
    h('p', { id: `${id}-help`, class: 'viewer-help' },
      'Mouse wheel, arrow keys, Page Up/Down and Home/End move through the images. ',
      'Drag on the image: left/right changes the contrast (width), up/down the brightness (level); ',
      'with “Image” a drag or swipe moves through the images.'));

  // --- images ------------------------------------------------------------------------------
  function ensureViewport() {
    if (viewport !== null || !maxDim) return;
    const px = Math.max(stage.clientWidth, stage.clientHeight) * (window.devicePixelRatio || 1);
    if (px > 0 && maxDim > px) {
      const vp = Math.ceil(px / 256) * 256;
      viewport = `${vp},${vp}`;
    } else {
      viewport = '';
    }
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
    if (to === undefined || ev.altKey || ev.ctrlKey || ev.metaKey) return;
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
  stage.addEventListener('pointerdown', (ev) => {
    if (ev.button !== 0 || !n) return;
    stage.focus({ preventScroll: true });
    try { stage.setPointerCapture(ev.pointerId); } catch { /* a pointer the browser does not track */ }
    drag = { x: ev.clientX, y: ev.clientY, id: ev.pointerId, win: { ...(win ?? base) }, index: cur, moved: false };
    ev.preventDefault();
  });
  stage.addEventListener('pointermove', (ev) => {
    if (!drag || ev.pointerId !== drag.id) return;
    const dx = ev.clientX - drag.x;
    const dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 3) return;
    drag.moved = true;
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
    if (!drag || ev.pointerId !== drag.id) return;
    const moved = drag.moved;
    drag = null;
    if (moved && mode === 'window') setWindow(win, true);
  };
  stage.addEventListener('pointerup', endDrag);
  stage.addEventListener('pointercancel', endDrag);

  showWL();
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
      for (const im of cache.values()) if (!im.complete) im.src = '';
      cache.clear();
    },
  };
}
