// Staff pages (image library): study search, a study with delivery to a patient (claim code and
// printable hand-out), sharing with a facility and the study's grants; facility accounts and
// their API tokens; the audit trail. Every DICOM string goes into the page as text (h() never
// uses innerHTML). The server decides who may do what: a refusal (403/404) is shown as a
// message in the page.

import { api, ApiError, dicomweb, dicomUrl, value, values, personName, formatDate, TAG } from './api.js';
import { h, mount, field, errorBox, toast, page, submitting, table, formatTime } from './ui.js';

const PAGE_SIZE = 20;
const DAY_MS = 86_400_000;

export function isStaff(me) {
  return me?.role === 'staff' || me?.role === 'admin';
}

// ---------------------------------------------------------------------------------------------
// Shared pieces (admin.js uses them too)

/** The query part of the hash (`#/staff/search?name=x`) as URLSearchParams. */
export function hashQuery() {
  const i = location.hash.indexOf('?');
  return new URLSearchParams(i < 0 ? '' : location.hash.slice(i + 1));
}

/** Put the current filters in the address (so Back returns to them) without re-rendering. */
export function setHashQuery(path, params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();
  history.replaceState(null, '', q ? `${path}?${q}` : path);
}

/** A refusal of the server (403, 404) as a message in the page; other errors go to the router. */
export function refusal(main, title, e) {
  if (!(e instanceof ApiError) || (e.status !== 403 && e.status !== 404)) throw e;
  const text = e.status === 403
    ? `You may not use this page: ${e.message}`
    : `Not found: ${e.message}`;
  page(main, title, h('p', { class: 'error', attrs: { role: 'alert', 'data-testid': 'refused', 'data-status': e.status } }, text));
  return null;
}

/** A term/description pair for a <dl>. */
export function pair(term, desc) {
  if (desc === undefined || desc === null || desc === '') return null;
  return h('div', {}, h('dt', {}, term), h('dd', {}, desc));
}

/** A secret shown once (temporary password, claim code, API token) with a Copy button. */
export function secretBox({ title, secret, testid, note, extra }) {
  const code = h('code', { class: 'code secret', attrs: { 'data-testid': testid } }, secret);
  const copy = h('button', {
    type: 'button',
    attrs: { 'aria-label': `Copy the ${title.toLowerCase()}` },
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
        toast('Copied.');
      } catch {
        const r = document.createRange();
        r.selectNodeContents(code);
        const sel = getSelection();
        sel.removeAllRanges();
        sel.addRange(r);
        toast('Selected: press Ctrl+C (or ⌘C) to copy.');
      }
    },
  }, 'Copy');
  const box = h('section', { class: 'card secret-box', attrs: { 'aria-label': title, tabindex: '-1' } },
    h('p', { class: 'secret-title' }, h('strong', {}, `${title}: `), code, ' ', copy),
    h('p', { class: 'notice' }, note ?? 'Shown only this once: copy it now.'),
    extra ?? null);
  return box;
}

/** A button that asks before it acts, in the page (no window.confirm): "Revoke" → "Revoke
 * access for x? [Yes, revoke] [Cancel]". `name` is the accessible name of the first button. */
export function confirmButton({ label, name, question, yes, onConfirm }) {
  const wrap = h('span', { class: 'confirm' });
  const start = h('button', { type: 'button', class: 'danger', attrs: { 'aria-label': name ?? label }, onclick: ask }, label);
  function reset() { mount(wrap, start); }
  function ask() {
    const yesBtn = h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        yesBtn.disabled = true;
        try {
          await onConfirm();
        } catch (e) {
          toast(e.message || String(e), 'error');
          reset();
          start.focus();
        }
      },
    }, yes ?? `Yes, ${label.toLowerCase()}`);
    const noBtn = h('button', { type: 'button', onclick: () => { reset(); start.focus(); } }, 'Cancel');
    mount(wrap, h('span', { class: 'confirm-q' }, question, ' '), yesBtn, ' ', noBtn);
    yesBtn.focus();
  }
  reset();
  return wrap;
}

/** A table whose cells carry their column label, so that on a phone it stacks into cards. */
export function stackTable(columns, rows, caption, cls = '') {
  const wrap = table(columns, rows, caption);
  const t = wrap.querySelector('table');
  t.className = `stack ${cls}`.trim();
  for (const tr of t.tBodies[0].rows) {
    [...tr.cells].forEach((td, i) => { td.dataset.label = columns[i].label; });
  }
  return wrap;
}

/** A thumbnail <img>; when there is none (no pixel data), a plain "No preview" box. */
export function thumb(src, alt = '', size = 96) {
  const img = h('img', { src, alt, width: size, height: size, decoding: 'async', class: 'thumb' });
  img.addEventListener('error', () => img.replaceWith(h('span', { class: 'thumb no-thumb' }, 'No preview')), { once: true });
  return img;
}

/** YYYY-MM-DD (date input) → YYYYMMDD. */
function da(v) {
  return v ? v.replaceAll('-', '') : '';
}

/** Milliseconds → "in 5 days" / "3 days ago". */
function relativeDays(ms) {
  const d = Math.round((ms - Date.now()) / DAY_MS);
  if (d === 0) return 'today';
  return d > 0 ? `in ${d} day${d === 1 ? '' : 's'}` : `${-d} day${d === -1 ? '' : 's'} ago`;
}

/** Status of an account with an expiry: [text, kind]. */
export function accountStatus(u) {
  if (u.disabled) return ['Disabled', 'off'];
  if (u.expires_at_ms && u.expires_at_ms <= Date.now()) return ['Expired', 'off'];
  if (u.expires_at_ms) return [`Active, expires ${relativeDays(u.expires_at_ms)}`, 'on'];
  return ['Active', 'on'];
}

export function statusBadge([text, kind]) {
  return h('span', { class: `badge status-${kind}` }, text);
}

// ---------------------------------------------------------------------------------------------
// #/staff/search

const MODALITIES = [
  ['', 'Any'], ['CT', 'CT'], ['MR', 'MR'], ['CR', 'CR (radiography)'], ['DX', 'DX (digital X-ray)'],
  ['US', 'US (ultrasound)'], ['MG', 'MG (mammography)'], ['PT', 'PT (PET)'], ['NM', 'NM (nuclear)'],
  ['XA', 'XA (angiography)'], ['RF', 'RF (fluoroscopy)'], ['IO', 'IO (dental)'], ['SC', 'SC (secondary capture)'],
  ['OT', 'OT (other)'],
];

function studyRow(s) {
  const uid = value(s, TAG.StudyInstanceUID);
  const href = `#/staff/study/${encodeURIComponent(uid)}`;
  const name = personName(s, TAG.PatientName) || '(no name)';
  const series = value(s, TAG.NumberOfStudyRelatedSeries);
  const images = value(s, TAG.NumberOfStudyRelatedInstances);
  return h('li', { class: 'sr-item', attrs: { 'data-study': uid } },
    thumb(dicomUrl(`/studies/${encodeURIComponent(uid)}/thumbnail`), ''),
    h('div', { class: 'sr-body' },
      h('a', { href, class: 'sr-name' }, name),
      h('p', { class: 'sr-meta' },
        [
          value(s, TAG.PatientID) ? `ID ${value(s, TAG.PatientID)}` : 'no patient ID',
          formatDate(value(s, TAG.StudyDate)) || 'no date',
          values(s, TAG.ModalitiesInStudy).join(', '),
          series != null ? `${series} series` : '',
          images != null ? `${images} image${images === 1 ? '' : 's'}` : '',
        ].filter(Boolean).join(' · ')),
      value(s, TAG.StudyDescription) ? h('p', { class: 'sr-desc' }, value(s, TAG.StudyDescription)) : null));
}

function searchPage(main, _params, ctx) {
  if (!isStaff(ctx.me)) {
    // QIDO would answer with the caller's own studies; this page is about all of them.
    page(main, 'Search studies', h('p', { class: 'error', attrs: { role: 'alert', 'data-testid': 'refused' } },
      'Only image-library staff can search all studies.'), h('p', {}, h('a', { href: '#/studies' }, 'Go to my studies')));
    return;
  }
  const q = hashQuery();
  const name = field('Patient name', { type: 'search', name: 'name', value: q.get('name') ?? '', autocomplete: 'off' });
  const pid = field('Patient ID', { type: 'search', name: 'id', value: q.get('id') ?? '', autocomplete: 'off' });
  const from = field('Date from', { type: 'date', name: 'from', value: q.get('from') ?? '' });
  const to = field('Date to', { type: 'date', name: 'to', value: q.get('to') ?? '' });
  const mod = field('Modality', { tag: 'select', name: 'modality', options: MODALITIES });
  mod.input.value = q.get('modality') ?? '';
  from.wrap.classList.add('half');
  to.wrap.classList.add('half');
  const box = errorBox();
  const form = h('form', { class: 'card search-form', attrs: { role: 'search', 'aria-label': 'Search studies' } },
    h('div', { class: 'search-grid' }, name.wrap, pid.wrap, from.wrap, to.wrap, mod.wrap),
    h('p', { class: 'hint' }, 'Name: the start of any part of the name ("doe jo"). ID: exact, or with * as a wildcard.'),
    box.el,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Search'),
      h('button', { type: 'reset', onclick: () => setTimeout(() => form.requestSubmit(), 0) }, 'Clear')));
  const status = h('p', { class: 'muted', attrs: { role: 'status', 'aria-live': 'polite', 'data-testid': 'search-status' } });
  const list = h('ul', { class: 'sr-list', attrs: { 'aria-label': 'Studies found' } });
  const more = h('button', { type: 'button', hidden: true }, 'Show more studies');

  let filters = {};
  let offset = 0;

  function params() {
    const p = { includefield: 'StudyDescription', limit: String(PAGE_SIZE + 1), offset: String(offset) };
    if (filters.name) {
      p.PatientName = filters.name.replace(/[,^]+/g, ' ').trim();
      p.fuzzymatching = 'true';
    }
    if (filters.id) p.PatientID = filters.id;
    if (filters.from || filters.to) p.StudyDate = `${da(filters.from)}-${da(filters.to)}`;
    if (filters.modality) p.ModalitiesInStudy = filters.modality;
    return p;
  }

  async function run(append) {
    status.textContent = 'Searching…';
    more.hidden = true;
    list.setAttribute('aria-busy', 'true');
    let rows;
    try {
      rows = await dicomweb('/studies', params());
    } finally {
      list.removeAttribute('aria-busy');
    }
    const shown = rows.slice(0, PAGE_SIZE);
    const hasMore = rows.length > PAGE_SIZE;
    if (!append) list.replaceChildren();
    const items = shown.map(studyRow);
    list.append(...items);
    offset += shown.length;
    more.hidden = !hasMore;
    status.textContent = offset === 0
      ? 'No study matches.'
      : `${offset} ${offset === 1 ? 'study' : 'studies'} shown${hasMore ? '; more are available' : ''}.`;
    if (append && items[0]) items[0].querySelector('a').focus();
  }

  submitting(form, box, async () => {
    filters = {
      name: name.input.value.trim(), id: pid.input.value.trim(),
      from: from.input.value, to: to.input.value, modality: mod.input.value,
    };
    if (filters.from && filters.to && filters.from > filters.to) {
      throw new Error('The "Date from" is after the "Date to".');
    }
    setHashQuery('#/staff/search', filters);
    offset = 0;
    try {
      await run(false);
    } catch (e) {
      status.textContent = '';
      throw e;
    }
  });
  more.addEventListener('click', async () => {
    more.disabled = true;
    try { await run(true); } catch (e) { box.show(e.message); } finally { more.disabled = false; }
  });

  page(main, 'Search studies', form, h('h2', { class: 'visually-hidden' }, 'Results'), status, list, more);
  form.requestSubmit();
}

// ---------------------------------------------------------------------------------------------
// #/staff/study/:uid

function handout(study, code, email) {
  const origin = `${location.origin}/`;
  const desc = value(study, TAG.StudyDescription);
  const date = formatDate(value(study, TAG.StudyDate));
  return h('section', { class: 'handout', attrs: { 'aria-labelledby': 'handout-title', 'data-testid': 'handout' } },
    h('h3', { id: 'handout-title' }, 'Your images are ready to view online'),
    h('dl', { class: 'sfacts' },
      pair('Patient', personName(study, TAG.PatientName) || '(no name)'),
      pair('Date of birth', formatDate(value(study, '00100030'))),
      pair('Study', [date, desc].filter(Boolean).join(' · ') || '(no description)'),
      pair('Modality', values(study, TAG.ModalitiesInStudy).join(', ')),
      pair('For', email)),
    h('p', { class: 'handout-label' }, 'Your claim code'),
    h('p', { class: 'code handout-code', attrs: { 'data-testid': 'claim-code' } }, code),
    h('p', {}, 'Portal address: ', h('strong', { class: 'handout-url', attrs: { 'data-testid': 'portal-url' } }, origin)),
    h('h4', {}, 'How to see your images'),
    h('ol', {},
      h('li', {}, `Open ${origin} in a web browser (phone or computer).`),
      h('li', {}, 'Choose "Create account" and sign up with your email address, or sign in if you already have an account.'),
      h('li', {}, 'Choose "Claim a study" and type the claim code above. Capital letters, spaces and dashes do not matter.'),
      h('li', {}, 'The study appears under "My studies": view the images, download them or share them with your doctor.')),
    h('p', { class: 'muted' }, 'Keep this code private: it works once, for the first account that enters it.'));
}

function seriesItem(study, s) {
  const se = value(s, TAG.SeriesInstanceUID);
  const num = value(s, TAG.SeriesNumber);
  const desc = value(s, TAG.SeriesDescription) ?? '';
  const n = value(s, TAG.NumberOfSeriesRelatedInstances);
  return h('li', { class: 'series-item' },
    h('figure', {},
      thumb(dicomUrl(`/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(se)}/thumbnail`), '', 112),
      h('figcaption', {},
        h('span', { class: 'title' }, [num != null ? `#${num}` : '', value(s, TAG.Modality) ?? ''].filter(Boolean).join(' ')),
        desc ? h('span', {}, desc) : null,
        n != null ? h('span', { class: 'muted' }, `${n} image${n === 1 ? '' : 's'}`) : null)));
}

async function studyPage(main, { uid }, ctx) {
  if (!isStaff(ctx.me)) {
    page(main, 'Study', h('p', { class: 'error', attrs: { role: 'alert', 'data-testid': 'refused' } },
      'Only image-library staff can deliver and share studies.'), h('p', {}, h('a', { href: '#/studies' }, 'Go to my studies')));
    return;
  }
  let study;
  try {
    [study] = await dicomweb('/studies', {
      StudyInstanceUID: uid,
      includefield: 'StudyDescription,PatientBirthDate,PatientSex,StudyTime,InstitutionName',
    });
  } catch (e) {
    return refusal(main, 'Study', e);
  }
  if (!study) {
    page(main, 'Study not found', h('p', { class: 'error', attrs: { role: 'alert', 'data-testid': 'refused' } },
      'No study with this UID is stored here.'), h('p', {}, h('a', { href: '#/staff/search' }, 'Back to the search')));
    return;
  }
  const enc = encodeURIComponent(uid);
  const [series, facilities] = await Promise.all([
    dicomweb(`/studies/${enc}/series`, { includefield: 'SeriesDescription' }),
    api.get('/facilities').catch((e) => { if (e instanceof ApiError && e.status === 403) return []; throw e; }),
  ]);
  const name = personName(study, TAG.PatientName) || '(no name)';
  const summary = h('section', { class: 'card scard', attrs: { 'aria-labelledby': 'study-summary' } },
    h('h2', { id: 'study-summary', class: 'visually-hidden' }, 'Summary'),
    h('dl', { class: 'sfacts wide' },
      pair('Patient', name),
      pair('Patient ID', value(study, TAG.PatientID) ?? ''),
      pair('Date of birth', formatDate(value(study, '00100030'))),
      pair('Sex', value(study, '00100040')),
      pair('Study date', formatDate(value(study, TAG.StudyDate))),
      pair('Description', value(study, TAG.StudyDescription)),
      pair('Modality', values(study, TAG.ModalitiesInStudy).join(', ')),
      pair('Accession', value(study, TAG.AccessionNumber)),
      pair('Institution', value(study, '00080080')),
      pair('Series / images', `${value(study, TAG.NumberOfStudyRelatedSeries) ?? series.length} / ${value(study, TAG.NumberOfStudyRelatedInstances) ?? '?'}`),
      pair('Study UID', h('span', { class: 'uid' }, uid))),
    h('div', { class: 'actions' },
      h('a', { class: 'button', href: `#/study/${enc}` }, 'Open in the viewer'),
      h('a', { class: 'button', href: dicomUrl(`/studies/${enc}`, { accept: 'application/zip' }), download: `study-${uid}.zip` }, 'Download (ZIP)')));

  const seriesSection = h('section', { attrs: { 'aria-labelledby': 'study-series' } },
    h('h2', { id: 'study-series' }, `Series (${series.length})`),
    h('ul', { class: 'series-grid' }, series.map((s) => seriesItem(uid, s))));

  // Grants of the study.
  const facilityById = new Map(facilities.map((f) => [f.id, f]));
  const grantsHolder = h('div', { attrs: { 'aria-live': 'polite' } });
  async function loadGrants() {
    const grants = await api.get(`/studies/${enc}/grants`);
    if (!grants.length) {
      mount(grantsHolder, h('p', { class: 'muted', attrs: { 'data-testid': 'no-grants' } }, 'Nobody outside the image library has access to this study.'));
      return;
    }
    const who = (g) => {
      if (g.kind === 'patient') return g.email;
      const f = facilityById.get(g.account_id);
      return f ? `${f.organisation ?? ''} (${f.email})` : g.account_id;
    };
    const status = (g) => {
      if (g.revoked_at_ms) return statusBadge([`Revoked ${formatTime(g.revoked_at_ms)}`, 'off']);
      if (g.kind === 'patient') {
        return g.claimed_at_ms
          ? statusBadge([`Claimed ${formatTime(g.claimed_at_ms)}`, 'on'])
          : statusBadge(['Waiting for the patient to claim', 'wait']);
      }
      return statusBadge(['Active', 'on']);
    };
    mount(grantsHolder, stackTable([
      { label: 'Given to', cell: who },
      { label: 'Kind', cell: (g) => (g.kind === 'patient' ? 'Patient (claim code)' : 'Facility') },
      { label: 'Given', cell: (g) => formatTime(g.created_at_ms) },
      { label: 'Status', cell: status },
      {
        label: 'Action',
        cell: (g) => (g.revoked_at_ms ? '' : confirmButton({
          label: 'Revoke',
          name: `Revoke access of ${who(g)}`,
          question: `Revoke access of ${who(g)}?`,
          yes: 'Yes, revoke',
          onConfirm: async () => {
            await api.del(`/grants/${encodeURIComponent(g.id)}`);
            toast('Access revoked.');
            await loadGrants();
            grantsHolder.querySelector('table')?.focus();
          },
        })),
      },
    ], grants, 'Who has access', 'grants'));
    const t = grantsHolder.querySelector('table');
    t.tabIndex = -1;
    [...t.tBodies[0].rows].forEach((tr, i) => { tr.dataset.grant = grants[i].id; tr.dataset.kind = grants[i].kind; });
  }

  // Deliver to a patient.
  const email = field('Patient’s email address', { type: 'email', name: 'email', required: true, autocomplete: 'off' },
    'The patient signs up with any address; the claim code is what gives access.');
  const deliverBox = errorBox();
  const handoutHolder = h('div', { class: 'handout-region' });
  const deliverForm = h('form', { class: 'card scard', attrs: { 'aria-labelledby': 'deliver-title' } },
    h('h2', { id: 'deliver-title' }, 'Deliver to a patient'),
    h('p', { class: 'muted' }, 'Creates a one-time claim code and a hand-out to print or read to the patient.'),
    email.wrap, deliverBox.el,
    h('button', { type: 'submit', class: 'primary' }, 'Create claim code'),
    handoutHolder);
  submitting(deliverForm, deliverBox, async () => {
    const addr = email.input.value.trim();
    const r = await api.post(`/studies/${enc}/grants`, { email: addr });
    const print = h('button', { type: 'button', class: 'primary', onclick: () => window.print() }, 'Print hand-out');
    mount(handoutHolder,
      h('div', { class: 'no-print handout-tools' },
        h('p', { class: 'notice', attrs: { role: 'status' } }, 'The claim code is shown only this once. Print the hand-out or read the code to the patient now.'),
        print),
      handout(study, r.claim_code, addr));
    email.input.value = '';
    print.focus();
    await loadGrants();
  });

  // Share with a facility.
  const now = Date.now();
  const active = facilities.filter((f) => !f.disabled && (!f.expires_at_ms || f.expires_at_ms > now));
  let shareForm;
  if (active.length) {
    const fac = field('Facility', {
      tag: 'select', name: 'facility', required: true,
      options: [['', 'Choose a facility…'], ...active.map((f) => [f.id, `${f.organisation ?? ''} (${f.email})`])],
    });
    const shareBox = errorBox();
    shareForm = h('form', { class: 'card scard', attrs: { 'aria-labelledby': 'share-title' } },
      h('h2', { id: 'share-title' }, 'Share with a facility'),
      h('p', { class: 'muted' }, 'The facility sees the study at once, in the portal and over DICOMweb with its API tokens.'),
      fac.wrap, shareBox.el,
      h('button', { type: 'submit', class: 'primary' }, 'Share'));
    submitting(shareForm, shareBox, async () => {
      if (!fac.input.value) throw new Error('Choose a facility.');
      await api.post(`/studies/${enc}/grants`, { account_id: fac.input.value });
      toast('Shared with the facility.');
      fac.input.value = '';
      await loadGrants();
    });
  } else {
    shareForm = h('section', { class: 'card scard', attrs: { 'aria-labelledby': 'share-title' } },
      h('h2', { id: 'share-title' }, 'Share with a facility'),
      h('p', {}, 'There is no active facility account. ', h('a', { href: '#/staff/facilities' }, 'Create one on the Facilities page'), '.'));
  }

  page(main, name,
    h('p', { class: 'lead' }, [formatDate(value(study, TAG.StudyDate)), value(study, TAG.StudyDescription)].filter(Boolean).join(' · '),
      ' ', h('a', { href: '#/staff/search', class: 'no-print' }, 'Back to the search')),
    summary,
    seriesSection,
    h('div', { class: 'two-col' }, deliverForm, shareForm),
    h('section', { attrs: { 'aria-labelledby': 'grants-title' } },
      h('h2', { id: 'grants-title' }, 'Access given'), grantsHolder));
  await loadGrants();
}

// ---------------------------------------------------------------------------------------------
// #/staff/facilities

/** API tokens of one account: list, create (shown once), revoke. */
function tokenPanel(owner, maxDays) {
  const holder = h('div', { class: 'tokens' });
  const listHolder = h('div');
  const shown = h('div', { attrs: { 'aria-live': 'polite' } });
  const ownerName = owner.organisation || owner.email;
  async function load() {
    const tokens = await api.get(`/users/${encodeURIComponent(owner.id)}/tokens`);
    if (!tokens.length) {
      mount(listHolder, h('p', { class: 'muted' }, 'No API token.'));
      return;
    }
    mount(listHolder, stackTable([
      { label: 'Label', cell: (t) => t.label },
      { label: 'Created', cell: (t) => formatTime(t.created_at_ms) },
      { label: 'Expires', cell: (t) => formatTime(t.expires_at_ms) },
      { label: 'Last used', cell: (t) => (t.last_used_at_ms ? formatTime(t.last_used_at_ms) : 'never') },
      {
        label: 'Action',
        cell: (t) => confirmButton({
          label: 'Revoke',
          name: `Revoke token ${t.label}`,
          question: `Revoke the token “${t.label}”? Clients using it stop working at once.`,
          yes: 'Yes, revoke',
          onConfirm: async () => {
            await api.del(`/tokens/${encodeURIComponent(t.id)}`);
            toast('Token revoked.');
            shown.replaceChildren();
            await load();
          },
        }),
      },
    ], tokens, `API tokens of ${ownerName}`, 'tokens-table'));
    const rows = listHolder.querySelector('tbody').rows;
    tokens.forEach((t, i) => { rows[i].dataset.token = t.id; });
  }
  const label = field('Token label', { name: 'label', required: true, maxLength: 100, placeholder: 'e.g. PACS gateway' });
  const days = field('Valid for (days)', { type: 'number', name: 'days', min: 1, max: maxDays, value: String(Math.min(14, maxDays)), required: true });
  const box = errorBox();
  const form = h('form', { class: 'row token-form', attrs: { 'aria-label': `New API token for ${ownerName}` } },
    label.wrap, days.wrap, h('button', { type: 'submit' }, 'Create token'));
  submitting(form, box, async () => {
    const t = await api.post(`/users/${encodeURIComponent(owner.id)}/tokens`,
      { label: label.input.value.trim(), expires_in_days: Number(days.input.value) });
    label.input.value = '';
    const box2 = secretBox({
      title: 'API token', secret: t.token, testid: 'api-token',
      note: 'Shown only this once: copy it into the DICOMweb client now. It is valid for /dicom-web only.',
      extra: h('p', { class: 'muted' }, 'Use as ', h('code', {}, 'Authorization: Bearer <token>'), ` with ${location.origin}/dicom-web`),
    });
    mount(shown, box2);
    box2.focus();
    await load();
  });
  mount(holder, listHolder, form, box.el, shown);
  return { el: holder, load };
}

function facilityCard(f, refresh) {
  const [text, kind] = accountStatus(f);
  const body = h('div', { class: 'fac-body' });
  const title = f.organisation || f.email;
  const card = h('li', { class: 'card facility', attrs: { 'data-facility': f.id, 'data-email': f.email } },
    h('div', { class: 'fac-head' },
      h('h3', {}, title),
      statusBadge([text, kind])),
    h('dl', { class: 'sfacts' },
      pair('Email', f.email),
      pair('Expires', f.expires_at_ms ? formatTime(f.expires_at_ms) : 'never'),
      f.must_change_password ? pair('Password', 'temporary, not yet changed') : null),
    body);
  if (f.disabled) return card;
  // Extend.
  const days = field(`Days to add`, { type: 'number', min: 1, max: 365, value: '14', required: true, attrs: { 'aria-label': `Days to add for ${title}` } });
  const extendBox = errorBox();
  const extend = h('form', { class: 'row', attrs: { 'aria-label': `Extend ${title}` } },
    days.wrap, h('button', { type: 'submit' }, 'Extend'));
  submitting(extend, extendBox, async () => {
    const u = await api.post(`/facilities/${encodeURIComponent(f.id)}/extend`, { days: Number(days.input.value) });
    toast(`${title}: now expires ${formatTime(u.expires_at_ms)}.`);
    await refresh(f.id);
  });
  const disable = confirmButton({
    label: 'Disable',
    name: `Disable ${title}`,
    question: `Disable ${title}? Its sessions and API tokens end at once.`,
    yes: 'Yes, disable',
    onConfirm: async () => {
      await api.post(`/facilities/${encodeURIComponent(f.id)}/disable`);
      toast(`${title} is disabled.`);
      await refresh(f.id);
    },
  });
  const tokens = tokenPanel(f, 365);
  const details = h('details', { class: 'token-details' },
    h('summary', {}, 'API tokens'),
    tokens.el);
  details.addEventListener('toggle', () => { if (details.open) tokens.load().catch((e) => toast(e.message, 'error')); });
  mount(body, h('div', { class: 'fac-actions' }, extend, disable), extendBox.el, details);
  return card;
}

async function facilitiesPage(main, _params, ctx) {
  let list;
  try {
    list = await api.get('/facilities');
  } catch (e) {
    return refusal(main, 'Facility accounts', e);
  }
  const email = field('Email', { type: 'email', name: 'email', required: true, autocomplete: 'off' });
  const org = field('Organisation', { name: 'organisation', required: true, maxLength: 128, autocomplete: 'off' });
  const days = field('Valid for (days)', { type: 'number', name: 'days', min: 1, max: 365, value: '14', required: true }, '1 to 365 days; 14 by default.');
  const box = errorBox();
  const created = h('div', { attrs: { 'aria-live': 'polite' } });
  const form = h('form', { class: 'card scard', attrs: { 'aria-labelledby': 'fac-new' } },
    h('h2', { id: 'fac-new' }, 'New facility account'),
    h('div', { class: 'search-grid' }, email.wrap, org.wrap, days.wrap),
    box.el,
    h('button', { type: 'submit', class: 'primary' }, 'Create facility account'),
    created);
  const listEl = h('ul', { class: 'facility-list', attrs: { 'aria-labelledby': 'fac-list' } });
  const listHead = h('h2', { id: 'fac-list' });

  async function refresh(focusId) {
    list = await api.get('/facilities');
    // Active first, then by organisation.
    list.sort((a, b) => (a.disabled - b.disabled) || String(a.organisation ?? a.email).localeCompare(String(b.organisation ?? b.email)));
    listHead.textContent = `Facility accounts (${list.length})`;
    const cards = list.map((f) => facilityCard(f, refresh));
    mount(listEl, cards.length ? cards : h('li', { class: 'muted' }, 'No facility account yet.'));
    if (focusId) listEl.querySelector(`[data-facility="${CSS.escape(focusId)}"] h3`)?.setAttribute('tabindex', '-1');
    if (focusId) listEl.querySelector(`[data-facility="${CSS.escape(focusId)}"] h3`)?.focus();
  }

  submitting(form, box, async () => {
    const r = await api.post('/facilities', {
      email: email.input.value.trim(), organisation: org.input.value.trim(), expires_in_days: Number(days.input.value),
    });
    const s = secretBox({
      title: 'Temporary password', secret: r.temporary_password, testid: 'facility-password',
      note: `Give ${r.user.email} this temporary password (by phone or letter); it must be changed at the first sign-in. Shown only this once.`,
    });
    mount(created, s);
    email.input.value = '';
    org.input.value = '';
    await refresh();
    s.focus();
  });

  // The staff member's own tokens (at most 90 days).
  const mine = tokenPanel({ id: ctx.me.id, email: ctx.me.email, organisation: 'you' }, 90);
  const mineDetails = h('details', { class: 'card token-details' },
    h('summary', {}, 'Tokens for your own DICOMweb clients (at most 90 days)'), mine.el);
  mineDetails.addEventListener('toggle', () => { if (mineDetails.open) mine.load().catch((e) => toast(e.message, 'error')); });

  page(main, 'Facility accounts',
    h('p', { class: 'lead' }, 'Outside hospitals and clinics: temporary accounts that see only the studies shared with them, in the portal or with API tokens over DICOMweb.'),
    form, listHead, listEl,
    h('h2', {}, 'Your own API tokens'), mineDetails);
  await refresh();
}

// ---------------------------------------------------------------------------------------------
// #/staff/audit

export const AUDIT_EVENTS = [
  ['', 'Any event'],
  ['110114', 'Sign-in, sign-out (110114)'],
  ['110112', 'Search (110112)'],
  ['110103', 'Images accessed (110103)'],
  ['110106', 'Export, download (110106)'],
  ['110107', 'Import, store (110107)'],
  ['110105', 'Study deleted (110105)'],
  ['110113', 'Security: grants, claims, tokens, accounts (110113)'],
  ['110101', 'Audit log read (110101)'],
  ['110104', 'Instances transferred (110104)'],
];
/** Short names for the table (the filter's list says more). */
const EVENT_NAMES = {
  110114: 'Sign-in', 110112: 'Search', 110103: 'Images accessed', 110106: 'Export', 110107: 'Import',
  110105: 'Deleted', 110113: 'Security', 110101: 'Audit log read', 110104: 'Transferred',
};

/** datetime-local value ↔ ms */
function localToMs(v) {
  if (!v) return '';
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? String(t) : '';
}

async function auditPage(main) {
  const q = hashQuery();
  const from = field('From', { type: 'datetime-local', name: 'from', value: q.get('from') ?? '' });
  const to = field('Until', { type: 'datetime-local', name: 'to', value: q.get('to') ?? '' });
  const ev = field('Event', { tag: 'select', name: 'event', options: AUDIT_EVENTS });
  ev.input.value = q.get('event') ?? '';
  const user = field('Account id', { type: 'search', name: 'user', value: q.get('user') ?? '', autocomplete: 'off' });
  const study = field('Study UID', { type: 'search', name: 'study', value: q.get('study') ?? '', autocomplete: 'off' });
  const limit = field('Entries per page', { tag: 'select', name: 'limit', options: [['50', '50'], ['100', '100'], ['200', '200']] });
  limit.input.value = q.get('limit') ?? '50';
  from.wrap.classList.add('half');
  to.wrap.classList.add('half');
  const box = errorBox();
  const form = h('form', { class: 'card search-form', attrs: { role: 'search', 'aria-label': 'Filter the audit trail' } },
    h('div', { class: 'search-grid' }, from.wrap, to.wrap, ev.wrap, user.wrap, study.wrap, limit.wrap),
    box.el,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Show entries'),
      h('button', { type: 'reset', onclick: () => setTimeout(() => form.requestSubmit(), 0) }, 'Clear filters')));
  const status = h('p', { class: 'muted', attrs: { role: 'status', 'aria-live': 'polite', 'data-testid': 'audit-status' } });
  const holder = h('div', { class: 'audit-results' });
  const older = h('button', { type: 'button', hidden: true }, 'Older entries');
  let base = {};
  let shownCount = 0;
  let last = null; // oldest record shown

  function filterBy(name, v) {
    if (name === 'user') user.input.value = v;
    if (name === 'study') study.input.value = v;
    form.requestSubmit();
  }

  function rows(records) {
    const t = stackTable([
      { label: 'Time', cell: (r) => h('time', { dateTime: new Date(r.event.time_ms).toISOString() }, formatTime(r.event.time_ms)) },
      { label: 'Event', cell: (r) => EVENT_NAMES[r.event.event] ?? r.event.event },
      { label: 'Action', cell: (r) => r.event.action },
      { label: 'Outcome', cell: (r) => statusBadge([r.event.outcome, r.event.outcome === 'success' ? 'on' : 'off']) },
      {
        label: 'Account',
        cell: (r) => {
          const id = r.event.user_id;
          if (!id) return h('span', { class: 'muted' }, 'anonymous');
          const who = r.user_email; // from the server; absent when the account is gone
          return h('span', {},
            h('button', {
              type: 'button', class: 'link', title: id, dataset: { user: id },
              attrs: { 'aria-label': `Show only entries of ${who ?? `account ${id}`}` },
              onclick: () => filterBy('user', id),
            }, who ?? `${id.slice(0, 8)}…`),
            r.event.role ? h('span', { class: 'muted' }, ` (${r.event.role})`) : null);
        },
      },
      { label: 'Address', cell: (r) => r.event.ip ?? '' },
      {
        label: 'Studies',
        cell: (r) => {
          const st = r.event.studies;
          const link = (s) => h('a', { href: `#/staff/study/${encodeURIComponent(s)}`, class: 'uid clip', title: s }, s);
          if (!st.length) return '';
          if (st.length === 1) return link(st[0]);
          return h('details', {}, h('summary', {}, `${st.length} studies`),
            h('ul', { class: 'plain' }, st.map((s) => h('li', {}, link(s)))));
        },
      },
      {
        label: 'Details',
        cell: (r) => (r.event.detail == null ? '' : h('code', { class: 'detail' }, JSON.stringify(r.event.detail))),
      },
    ], records, null, 'audit-table');
    const trs = t.querySelector('tbody').rows;
    records.forEach((r, i) => { trs[i].dataset.seq = r.seq; trs[i].dataset.event = r.event.event; });
    return t;
  }

  async function load(more) {
    const p = { ...base };
    if (more && last) {
      // Newest first: continue below the oldest shown (same-millisecond entries are kept by seq).
      p.until_ms = String(last.event.time_ms + 1);
    }
    const want = Number(base.limit);
    if (more) p.limit = String(Math.min(want + 50, 1000));
    holder.setAttribute('aria-busy', 'true');
    let records;
    try {
      records = await api.get(`/audit?${new URLSearchParams(p)}`);
    } finally {
      holder.removeAttribute('aria-busy');
    }
    if (more && last) records = records.filter((r) => r.seq < last.seq).slice(0, want);
    if (!more) holder.replaceChildren();
    if (records.length) {
      holder.append(rows(records));
      last = records[records.length - 1];
    }
    shownCount += records.length;
    older.hidden = records.length < want;
    status.textContent = shownCount
      ? `${shownCount} entr${shownCount === 1 ? 'y' : 'ies'} shown, newest first.`
      : 'No entry matches.';
  }

  submitting(form, box, async () => {
    const f = { from: from.input.value, to: to.input.value, event: ev.input.value, user: user.input.value.trim(), study: study.input.value.trim(), limit: limit.input.value };
    if (f.from && f.to && f.from >= f.to) throw new Error('"From" must be before "Until".');
    setHashQuery('#/staff/audit', { ...f, limit: f.limit === '50' ? '' : f.limit });
    base = { limit: f.limit };
    if (f.event) base.event = f.event;
    if (f.user) base.user = f.user;
    if (f.study) base.study = f.study;
    if (f.from) base.since_ms = localToMs(f.from);
    if (f.to) base.until_ms = localToMs(f.to);
    shownCount = 0;
    last = null;
    try {
      await load(false);
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        refusal(main, 'Audit trail', e);
        return;
      }
      throw e;
    }
  });
  older.addEventListener('click', async () => {
    older.disabled = true;
    try { await load(true); } catch (e) { box.show(e.message); } finally { older.disabled = false; }
  });

  page(main, 'Audit trail',
    h('p', { class: 'lead' }, 'Every sign-in, search, view, download, store, grant, claim and account change. Reading this page is recorded too.'),
    form, status, holder, older);
  form.requestSubmit();
}

export const routes = {
  '#/staff/search': searchPage,
  '#/staff/study/:uid': studyPage,
  '#/staff/facilities': facilitiesPage,
  '#/staff/audit': auditPage,
};
