// DOM helpers. Text from the server (names, descriptions: any DICOM string) only ever goes in as
// text nodes: nothing here sets innerHTML, so a PatientName like <img src=x onerror=...> shows
// literally.

/** h('button', {class: 'primary', onclick: f, attrs: {'aria-label': 'x'}}, 'Text', child...) */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'attrs') for (const [a, av] of Object.entries(v)) { if (av !== undefined && av !== null && av !== false) el.setAttribute(a, av === true ? '' : String(av)); }
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k in el) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's content. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldSeq = 0;
/** A labelled form field: returns {wrap, input}. `hint` is linked with aria-describedby. */
export function field(label, inputProps = {}, hint) {
  const id = inputProps.id ?? `f${++fieldSeq}`;
  const hintId = hint ? `${id}-hint` : undefined;
  const tag = inputProps.tag ?? 'input';
  const { tag: _t, options, ...rest } = inputProps;
  const input = h(tag, { ...rest, id, attrs: { ...(rest.attrs ?? {}), 'aria-describedby': hintId } },
    ...(options ?? []).map(([v, text]) => h('option', { value: v }, text)));
  const wrap = h('div', { class: 'field' },
    h('label', { attrs: { for: id } }, label),
    input,
    hint ? h('small', { id: hintId, class: 'hint' }, hint) : null);
  return { wrap, input };
}

/** An error box for a form; `show(message)` / `clear()`. role=alert so it is announced. */
export function errorBox() {
  const el = h('p', { class: 'error', attrs: { role: 'alert' }, hidden: true });
  return {
    el,
    show(msg) { el.textContent = msg; el.hidden = false; },
    clear() { el.textContent = ''; el.hidden = true; },
  };
}

/** A short message at the bottom of the screen, read out by screen readers. */
export function toast(message, kind = 'info') {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = message;
  t.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 4000);
}

/** Page heading + focus management: moves focus to the heading for screen readers. */
export function page(main, title, ...children) {
  if (main.isConnected) document.title = `${title} · Lightbox`; // not for a page left while loading
  const h1 = h('h1', { attrs: { tabindex: '-1' } }, title);
  mount(main, h1, ...children);
  h1.focus({ preventScroll: true });
  return main;
}

/** A submit handler wrapper: disables the button while running, shows errors in `box`. */
export function submitting(form, box, fn) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    box.clear();
    const btn = form.querySelector('button[type=submit]');
    if (btn) btn.disabled = true;
    try {
      await fn();
    } catch (e) {
      box.show(e.message || String(e));
    } finally {
      if (btn) btn.disabled = false;
    }
  });
}

/** A simple data table: columns [{label, cell(row) → node|string}]. */
export function table(columns, rows, caption) {
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { attrs: { scope: 'col' } }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', {}, c.cell(r))))))));
}

/** Human-readable date and time from milliseconds since the epoch. */
export function formatTime(ms) {
  if (!ms) return '';
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}
