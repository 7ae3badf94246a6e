// The portal shell: session, navigation by role, hash router. Pages live in their own modules
// (auth, patient, viewer, staff, admin), each exporting `routes`: { '#/pattern/:param': render }.
// A render function gets (main, params, ctx) where ctx = { me, refresh, go }.

import { api, ApiError } from './api.js';
import { h, mount, toast } from './ui.js';
import * as auth from './auth.js';
import * as patient from './patient.js';
import * as staff from './staff.js';
import * as admin from './admin.js';

const ROUTES = { ...auth.routes, ...patient.routes, ...staff.routes, ...admin.routes };

/** Routes anyone may open; everything else needs a signed-in account. */
const PUBLIC = new Set(['#/signin', '#/signup']);

const state = { me: null };

async function loadMe() {
  try {
    state.me = await api.get('/me');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) state.me = null;
    else throw e;
  }
  return state.me;
}

/** Where an account lands after signing in. */
export function home(me) {
  if (!me) return '#/signin';
  if (me.must_change_password) return '#/password';
  if (me.role === 'staff' || me.role === 'admin') return '#/staff/search';
  return '#/studies';
}

function navLinks(me) {
  if (!me) return [['#/signin', 'Sign in'], ['#/signup', 'Create account']];
  const links = [];
  if (me.role === 'patient' || me.role === 'facility') {
    links.push(['#/studies', 'My studies']);
    if (me.role === 'patient') links.push(['#/claim', 'Claim a study']);
  }
  if (me.role === 'staff' || me.role === 'admin') {
    links.push(['#/staff/search', 'Studies'], ['#/staff/facilities', 'Facilities'], ['#/staff/audit', 'Audit']);
  }
  if (me.role === 'admin') links.push(['#/admin/users', 'Users'], ['#/admin/settings', 'Settings']);
  links.push(['#/password', 'Password']);
  return links;
}

function renderNav() {
  const nav = document.getElementById('nav');
  const current = location.hash || '#/';
  const items = navLinks(state.me).map(([href, text]) => h('li', {},
    h('a', { href, attrs: { 'aria-current': current.startsWith(href) ? 'page' : undefined } }, text)));
  if (state.me) {
    items.push(h('li', {}, h('button', { class: 'link', type: 'button', onclick: signOut }, 'Sign out')));
  }
  mount(nav, h('ul', {}, items));
}

async function signOut() {
  try { await api.post('/auth/logout'); } catch { /* the session may have ended already */ }
  state.me = null;
  toast('You are signed out.');
  go('#/signin');
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function match(hash) {
  const path = hash.split('?')[0];
  for (const [pattern, render] of Object.entries(ROUTES)) {
    const names = [];
    const re = new RegExp(`^${pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:(\w+)/g, (_, n) => { names.push(n); return '([^/]+)'; })}$`);
    const m = path.match(re);
    if (m) return { render, params: Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) };
  }
  return null;
}

async function route() {
  const main = document.getElementById('main');
  let hash = location.hash || '#/';
  if (!state.me && !PUBLIC.has(hash.split('?')[0])) {
    if (hash !== '#/' && hash !== '#/signin') sessionStorage.setItem('lightbox.next', hash);
    hash = '#/signin';
    history.replaceState(null, '', hash);
  } else if (state.me?.must_change_password && hash !== '#/password') {
    hash = '#/password';
    history.replaceState(null, '', hash);
  } else if (hash === '#/' || (state.me && PUBLIC.has(hash))) {
    hash = home(state.me);
    history.replaceState(null, '', hash);
  }
  renderNav();
  // Each navigation renders into a view of its own: a page still loading for an earlier
  // navigation then finishes into a view that has left the document, never over this page.
  const view = h('div', { class: 'view' });
  mount(main, view);
  const found = match(hash);
  if (!found) {
    mount(view, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: home(state.me) }, 'Go to the start page')));
    return;
  }
  const ctx = { me: state.me, refresh: async () => { await loadMe(); renderNav(); return state.me; }, go };
  try {
    await found.render(view, found.params, ctx);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      state.me = null;
      toast('Your session has ended: please sign in again.', 'error');
      go('#/signin');
      return;
    }
    if (!view.isConnected) return; // a page left before it failed
    mount(view, h('h1', {}, 'Something went wrong'), h('p', { class: 'error', attrs: { role: 'alert' } }, e.message || String(e)));
  }
}

/** After a sign-in: back to the page that asked for it, else the account's start page. */
export function afterSignIn(me) {
  state.me = me;
  const next = sessionStorage.getItem('lightbox.next');
  sessionStorage.removeItem('lightbox.next');
  go(me.must_change_password ? '#/password' : (next && next !== '#/signin' ? next : home(me)));
}

// A hash change before the session is known (a link followed while the page loads) waits for it:
// routing it without the session would send a signed-in user to the sign-in page.
const session = loadMe();
window.addEventListener('hashchange', () => { session.then(route, () => {}); });
session.then(route, (e) => {
  mount(document.getElementById('main'), h('h1', {}, 'Lightbox is not reachable'), h('p', { class: 'error' }, e.message));
});
