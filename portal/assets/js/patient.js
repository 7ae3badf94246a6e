// Patient (and facility) pages: "My studies", "Claim a study", and the study page with its
// series strip, the image viewer, the ZIP download and the access history.
// Every DICOM string (names, descriptions) goes into the page as text (ui.js h()), never as HTML.

import { api, ApiError, dicomweb, dicomUrl, value, values, personName, formatDate, TAG } from './api.js';
import { h, mount, field, errorBox, page, submitting } from './ui.js';
import { createViewer } from './viewer.js';

const SOURCE = {
  delivered: ['Delivered by the hospital', 'delivered'],
  uploaded: ['Uploaded by me', 'uploaded'],
  shared: ['Shared with us', 'shared'],
};

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function modalityText(list) {
  return (list ?? []).filter(Boolean).join(', ');
}

/** "3 series · 120 images" */
function countText(series, images) {
  const parts = [];
  if (series != null) parts.push(plural(series, 'series', 'series'));
  if (images != null) parts.push(plural(images, 'image'));
  return parts.join(' · ');
}

/** A thumbnail <img>; when the server has no preview (e.g. a report), a neutral placeholder. */
function thumb(src, alt) {
  const img = h('img', { src, alt, loading: 'lazy', decoding: 'async', width: 128, height: 128 });
  img.addEventListener('error', () => {
    img.replaceWith(h('span', { class: 'no-preview' }, 'No preview'));
  }, { once: true });
  return img;
}

// ---------------------------------------------------------------------------------------------
// My studies

function studyCard(s) {
  const a = s.attributes ?? {};
  const uid = s.study;
  const desc = value(a, TAG.StudyDescription) || 'Study';
  const date = formatDate(value(a, TAG.StudyDate));
  const name = personName(a, TAG.PatientName);
  const mods = modalityText(s.modalities?.length ? s.modalities : values(a, TAG.ModalitiesInStudy));
  const [badgeText, badgeClass] = SOURCE[s.source] ?? [s.source ?? '', ''];
  const href = `#/study/${encodeURIComponent(uid)}`;
  return h('li', { class: 'study-card', dataset: { study: uid } },
    // The cover repeats the title link, so it is hidden from the tab order and screen readers.
    h('a', { class: 'cover', href, tabIndex: -1, attrs: { 'aria-hidden': 'true' } },
      thumb(dicomUrl(`/studies/${uid}/thumbnail`), `Preview of ${desc}`)),
    h('div', { class: 'body' },
      h('h2', { class: 'title' }, h('a', { href }, desc)),
      h('p', { class: 'meta' }, [date, mods].filter(Boolean).join(' · ')),
      name ? h('p', { class: 'meta patient-name' }, name) : null,
      h('p', { class: 'meta counts' }, countText(s.series, s.instances)),
      badgeText ? h('p', {}, h('span', { class: `badge ${badgeClass}` }, badgeText)) : null));
}

async function myStudies(main, _params, ctx) {
  page(main, 'My studies', h('p', { class: 'muted' }, 'Loading…'));
  const list = await api.get('/studies');
  list.sort((x, y) => String(value(y.attributes, TAG.StudyDate) ?? '').localeCompare(String(value(x.attributes, TAG.StudyDate) ?? '')));
  const isPatient = ctx.me?.role === 'patient';
  if (!list.length) {
    page(main, 'My studies',
      h('div', { class: 'card empty' },
        h('p', {}, isPatient ? 'You have no studies here yet.' : 'No study has been shared with this account yet.'),
        isPatient ? h('p', {}, 'Did the hospital give you a code? ', h('a', { href: '#/claim' }, 'Claim a study'), ' with it.') : null));
    return;
  }
  page(main, 'My studies',
    isPatient ? h('p', { class: 'lead' }, plural(list.length, 'study', 'studies'), '. Got a new code from the hospital? ',
      h('a', { href: '#/claim' }, 'Claim a study'), '.') : h('p', { class: 'lead' }, plural(list.length, 'study', 'studies')),
    h('ul', { class: 'cards', attrs: { 'aria-label': 'Studies' } }, list.map(studyCard)));
}

// ---------------------------------------------------------------------------------------------
// Claim a study

function claimExplain(e) {
  if (!(e instanceof ApiError)) return e.message || String(e);
  if (e.status === 404) return 'This code does not work: it is unknown, was withdrawn by the hospital, or another account has used it. Check the code on your hand-out and try again.';
  if (e.status === 429) return `Too many wrong codes: ${e.message}.`;
  if (e.status === 403) return `Only patient accounts can claim studies (${e.message}).`;
  if (e.status === 400) return `This is not a valid code: ${e.message}.`;
  return e.message;
}

function claim(main) {
  const code = field('Claim code', {
    name: 'code', required: true, autocomplete: 'off', spellcheck: false,
    attrs: { autocapitalize: 'characters', inputmode: 'text' }, class: 'code-input',
  }, 'The code from the hospital’s hand-out, e.g. 7K2QF-9XW3M-…; spaces, dashes and lower case are fine.');
  const box = errorBox();
  const result = h('div', { attrs: { 'aria-live': 'polite' } });
  const form = h('form', { class: 'card narrow', attrs: { 'aria-label': 'Claim a study' } },
    code.wrap, box.el, h('button', { type: 'submit', class: 'primary' }, 'Claim'));
  submitting(form, box, async () => {
    mount(result);
    const typed = code.input.value.trim();
    if (!typed) throw new Error('Enter the code from your hand-out.');
    let r;
    try {
      r = await api.post('/grants/claim', { code: typed });
    } catch (e) {
      throw new Error(claimExplain(e));
    }
    code.input.value = '';
    let found = null;
    try { found = (await api.get('/studies')).find((s) => s.study === r.study); } catch { /* shown without details */ }
    const href = `#/study/${encodeURIComponent(r.study)}`;
    mount(result,
      h('div', { class: 'card claimed', attrs: { role: 'status' } },
        h('h2', {}, 'The study is yours'),
        h('p', { class: 'ok' }, 'It is now in My studies.'),
        found ? h('ul', { class: 'cards single' }, studyCard(found)) : null,
        h('p', { class: 'actions' }, h('a', { class: 'button primary', href }, 'Open the study'),
          h('a', { class: 'button', href: '#/studies' }, 'My studies'))));
    result.querySelector('h2')?.setAttribute('tabindex', '-1');
    result.querySelector('h2')?.focus();
  });
  page(main, 'Claim a study',
    h('p', { class: 'lead' }, 'The hospital gives you a code with your images. Enter it here once; the study then stays in My studies.'),
    form, result);
  code.input.focus();
}

// ---------------------------------------------------------------------------------------------
// Study page

const STUDY_FIELDS = [TAG.StudyDescription, TAG.StudyDate, TAG.ModalitiesInStudy, TAG.PatientName, TAG.PatientID,
  TAG.AccessionNumber, TAG.NumberOfStudyRelatedSeries, TAG.NumberOfStudyRelatedInstances];
const SERIES_FIELDS = [TAG.SeriesDescription, TAG.Modality, TAG.SeriesNumber, TAG.NumberOfSeriesRelatedInstances];
const INSTANCE_FIELDS = [TAG.InstanceNumber, TAG.NumberOfFrames, '00280010', '00280011', '00281050', '00281051',
  '00280101', '00280103', '00281052', '00281053'];

function notFound(main) {
  page(main, 'Study not found',
    h('p', {}, 'This study does not exist, or this account may not see it.'),
    h('p', {}, h('a', { href: '#/studies' }, 'Back to My studies')));
}

function seriesLabel(s) {
  const no = value(s, TAG.SeriesNumber);
  const desc = value(s, TAG.SeriesDescription);
  const mod = value(s, TAG.Modality);
  return [no != null ? `#${no}` : null, desc || mod || 'Series'].filter(Boolean).join(' ');
}

async function studyPage(main, { uid }) {
  page(main, 'Study', h('p', { class: 'muted' }, 'Loading…'));
  let found;
  try {
    found = await dicomweb('/studies', { StudyInstanceUID: uid, includefield: STUDY_FIELDS.join(',') });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 400)) return notFound(main);
    throw e;
  }
  const st = found?.[0];
  if (!st) return notFound(main);
  let series;
  try {
    series = (await dicomweb(`/studies/${uid}/series`, { includefield: SERIES_FIELDS.join(',') })) ?? [];
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound(main);
    throw e;
  }
  series.sort((a, b) => (value(a, TAG.SeriesNumber) ?? 1e9) - (value(b, TAG.SeriesNumber) ?? 1e9));

  const desc = value(st, TAG.StudyDescription) || 'Study';
  const date = value(st, TAG.StudyDate);
  const name = personName(st, TAG.PatientName);
  const mods = modalityText(values(st, TAG.ModalitiesInStudy));
  const facts = [
    ['Date', formatDate(date)],
    ['Patient', name],
    ['Patient ID', value(st, TAG.PatientID)],
    ['Modality', mods],
    ['Accession', value(st, TAG.AccessionNumber)],
    ['Contents', countText(value(st, TAG.NumberOfStudyRelatedSeries), value(st, TAG.NumberOfStudyRelatedInstances))],
  ].filter(([, v]) => v);
  const zipName = `study-${date || 'images'}.zip`;

  const viewerHost = h('div', { class: 'viewer-host' });
  const strip = h('ul', { class: 'series-strip', attrs: { 'aria-label': 'Series' } });
  let viewer = null;
  const buttons = [];
  const select = async (s, btn) => {
    for (const b of buttons) b.setAttribute('aria-pressed', String(b === btn));
    viewer?.destroy();
    viewer = null;
    mount(viewerHost, h('p', { class: 'muted' }, 'Loading images…'));
    const se = value(s, TAG.SeriesInstanceUID);
    let inst;
    try {
      inst = (await dicomweb(`/studies/${uid}/series/${se}/instances`, { includefield: INSTANCE_FIELDS.join(',') })) ?? [];
    } catch (e) {
      mount(viewerHost, h('p', { class: 'error', attrs: { role: 'alert' } }, `The images cannot be listed: ${e.message}`));
      return;
    }
    if (btn.getAttribute('aria-pressed') !== 'true') return; // another series was chosen meanwhile
    viewer = createViewer({ study: uid, series: se, instances: inst, modality: value(s, TAG.Modality), label: seriesLabel(s) });
    mount(viewerHost, viewer.el);
  };
  for (const s of series) {
    const se = value(s, TAG.SeriesInstanceUID);
    const n = value(s, TAG.NumberOfSeriesRelatedInstances);
    const btn = h('button', { type: 'button', class: 'series', dataset: { series: se }, attrs: { 'aria-pressed': 'false' } },
      thumb(dicomUrl(`/studies/${uid}/series/${se}/thumbnail`), ''),
      h('span', { class: 'series-name' }, seriesLabel(s)),
      n != null ? h('span', { class: 'muted small' }, plural(n, 'image')) : null);
    btn.addEventListener('click', () => select(s, btn));
    buttons.push(btn);
    strip.append(h('li', {}, btn));
  }

  const history = h('div', { class: 'history' });
  const showHistory = h('button', { type: 'button' }, 'Show who accessed this study');
  showHistory.addEventListener('click', () => loadHistory(uid, history, showHistory));

  page(main, desc,
    h('dl', { class: 'facts' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
    h('p', { class: 'actions' },
      h('a', { class: 'button primary', href: dicomUrl(`/studies/${uid}`, { accept: 'application/zip' }), download: zipName },
        'Download (ZIP)'),
      h('a', { class: 'button', href: '#/studies' }, 'My studies')),
    h('h2', {}, 'Series'),
    series.length ? strip : h('p', { class: 'muted' }, 'This study has no series.'),
    h('h2', { class: 'sr-only' }, 'Images'),
    viewerHost,
    h('h2', {}, 'Access history'),
    h('p', { class: 'muted' }, 'Every view, download and change of access to this study is recorded.'),
    history, showHistory);
  if (buttons.length) select(series[0], buttons[0]);
}

const ACTIONS = {
  rendered: 'Viewed images',
  thumbnail: 'Viewed a preview',
  retrieve: 'Retrieved images',
  'retrieve-zip': 'Downloaded (ZIP)',
  metadata: 'Read image details',
  frames: 'Retrieved images',
  pixeldata: 'Retrieved images',
  bulkdata: 'Retrieved images',
  'wado-uri': 'Retrieved images',
  search: 'Found it in a search',
  'my-studies': 'Listed it in My studies',
  claim: 'Claimed it with a code',
  grant: 'Gave access (delivery or share)',
  'revoke-grant': 'Withdrew access',
  stow: 'Stored images',
  delete: 'Deleted images',
  'access-history': 'Looked at this history',
};

function who(acc) {
  switch (acc?.who) {
    case 'you': return 'You';
    case 'facility': return `Facility: ${acc.organisation || 'unnamed'}`;
    case 'staff': return 'Hospital staff';
    case 'admin': return 'Hospital administrator';
    case 'patient': return 'A patient account';
    case 'anonymous': return 'Anonymous';
    default: return acc?.who ?? 'Unknown';
  }
}

async function loadHistory(uid, host, button) {
  button.disabled = true;
  mount(host, h('p', { class: 'muted' }, 'Loading…'));
  let rows;
  try {
    rows = await api.get(`/studies/${encodeURIComponent(uid)}/access-history`);
  } catch (e) {
    mount(host, h('p', { class: 'error', attrs: { role: 'alert' } }, `The access history cannot be shown: ${e.message}`));
    button.disabled = false;
    return;
  }
  rows.sort((a, b) => b.time_ms - a.time_ms);
  // Each image viewed is one record: the same accessor doing the same thing on one day is one
  // line ("Viewed images (12×), 9:02–9:05"), newest first.
  const days = new Map();
  for (const r of rows) {
    const t = new Date(r.time_ms);
    const day = t.toLocaleDateString(undefined, { weekday: 'short', year: 'numeric', month: 'short', day: 'numeric' });
    const what = ACTIONS[r.action] ?? r.action ?? r.event;
    const by = who(r.accessor);
    const key = `${by}\u0000${what}\u0000${r.outcome}`;
    if (!days.has(day)) days.set(day, new Map());
    const groups = days.get(day);
    const g = groups.get(key);
    // The server already groups runs of the same access: `count` records from `first_ms`.
    const n = r.count ?? 1;
    const first = r.first_ms ?? r.time_ms;
    if (g) { g.count += n; g.first = Math.min(g.first, first); } else groups.set(key, { by, what, outcome: r.outcome, count: n, first, last: r.time_ms });
  }
  const clock = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  const outcome = { refused: 'refused', failure: 'failed' };
  button.disabled = false;
  button.textContent = 'Refresh the access history';
  mount(host, days.size
    ? [...days].map(([day, groups]) => h('section', { class: 'history-day' },
      h('h3', {}, day),
      h('ul', {}, [...groups.values()].map((g) => {
        const span = clock(g.first) === clock(g.last) ? clock(g.last) : `${clock(g.first)}–${clock(g.last)}`;
        return h('li', { class: outcome[g.outcome] ? 'refused' : '' },
          h('time', { dateTime: new Date(g.last).toISOString() }, span), ' ',
          h('strong', {}, g.by), ' ',
          h('span', {}, g.count > 1 ? `${g.what} (${g.count}×)` : g.what),
          outcome[g.outcome] ? h('span', { class: 'error' }, ` (${outcome[g.outcome]})`) : null);
      }))))
    : h('p', {}, 'No access is recorded yet.'));
}

export const routes = {
  '#/studies': myStudies,
  '#/claim': claim,
  '#/study/:uid': studyPage,
};
