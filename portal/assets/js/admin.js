// Admin pages: users (role, disable, password reset) and settings (self sign-up). The server
// refuses everything here to non-admins; the refusal is shown as a message in the page.

import { api } from './api.js';
import { h, mount, field, errorBox, toast, page, submitting, formatTime } from './ui.js';
import { refusal, secretBox, confirmButton, stackTable, accountStatus, statusBadge, hashQuery, setHashQuery } from './staff.js';

const ROLES = [['patient', 'Patient'], ['facility', 'Facility'], ['staff', 'Staff'], ['admin', 'Admin']];

function userStatus(u) {
  const [text, kind] = accountStatus(u);
  return h('span', { class: 'role-cell' }, statusBadge([text, kind]),
    u.must_change_password ? h('span', { class: 'badge status-wait' }, 'must change password') : null);
}

async function usersPage(main, _params, ctx) {
  let users;
  try {
    users = await api.get('/users');
  } catch (e) {
    return refusal(main, 'Users', e);
  }
  const filter = field('Find a user', { type: 'search', name: 'q', value: hashQuery().get('q') ?? '', autocomplete: 'off' },
    'Part of the email address or organisation.');
  const roleFilter = field('Role', { tag: 'select', name: 'role', options: [['', 'Any role'], ...ROLES] });
  roleFilter.input.value = hashQuery().get('role') ?? '';
  const shown = h('div', { attrs: { 'aria-live': 'polite' } });
  const status = h('p', { class: 'muted', attrs: { role: 'status', 'aria-live': 'polite' } });
  const holder = h('div');

  async function reload(focusId) {
    users = await api.get('/users');
    render(focusId);
  }

  function roleCell(u) {
    const self = u.id === ctx.me.id;
    const label = `Role of ${u.email}`;
    const sel = h('select', { attrs: { 'aria-label': label }, disabled: self, name: 'role' },
      ROLES.map(([v, t]) => h('option', { value: v }, t)));
    sel.value = u.role;
    if (self) return h('span', { class: 'role-cell' }, sel, h('span', { class: 'muted' }, '(you)'));
    const save = h('button', { type: 'button', disabled: true, attrs: { 'aria-label': `Save the role of ${u.email}` } }, 'Save');
    sel.addEventListener('change', () => { save.disabled = sel.value === u.role; });
    save.addEventListener('click', async () => {
      save.disabled = true;
      try {
        await api.patch(`/users/${encodeURIComponent(u.id)}`, { role: sel.value });
        toast(`${u.email} is now ${sel.value}. Their sessions and API tokens have ended.`);
        await reload(u.id);
      } catch (e) {
        toast(e.message, 'error');
        sel.value = u.role;
      }
    });
    return h('span', { class: 'role-cell' }, sel, save);
  }

  function actions(u) {
    if (u.id === ctx.me.id) return h('span', { class: 'muted' }, 'Change your password on the Password page.');
    const reset = confirmButton({
      label: 'Reset password',
      name: `Reset the password of ${u.email}`,
      question: `Give ${u.email} a new temporary password? Their sessions end.`,
      yes: 'Yes, reset',
      onConfirm: async () => {
        const r = await api.post(`/users/${encodeURIComponent(u.id)}/password-reset`);
        const s = secretBox({
          title: 'Temporary password', secret: r.temporary_password, testid: 'temp-password',
          note: `Give ${u.email} this temporary password (by phone or in person); it must be changed at the next sign-in. Shown only this once.`,
        });
        mount(shown, s);
        await reload();
        s.focus();
      },
    });
    const toggle = u.disabled
      ? h('button', {
        type: 'button', attrs: { 'aria-label': `Enable ${u.email}` },
        onclick: async (ev) => {
          ev.currentTarget.disabled = true;
          try {
            await api.patch(`/users/${encodeURIComponent(u.id)}`, { disabled: false });
            toast(`${u.email} is enabled.`);
            await reload(u.id);
          } catch (e) { toast(e.message, 'error'); }
        },
      }, 'Enable')
      : confirmButton({
        label: 'Disable',
        name: `Disable ${u.email}`,
        question: `Disable ${u.email}? Their sessions and API tokens end at once.`,
        yes: 'Yes, disable',
        onConfirm: async () => {
          await api.patch(`/users/${encodeURIComponent(u.id)}`, { disabled: true });
          toast(`${u.email} is disabled.`);
          await reload(u.id);
        },
      });
    return h('span', { class: 'confirm' }, reset, toggle);
  }

  function render(focusId) {
    const needle = filter.input.value.trim().toLowerCase();
    const role = roleFilter.input.value;
    const rows = users
      .filter((u) => !role || u.role === role)
      .filter((u) => !needle || u.email.toLowerCase().includes(needle) || (u.organisation ?? '').toLowerCase().includes(needle))
      .sort((a, b) => a.email.localeCompare(b.email));
    status.textContent = `${rows.length} of ${users.length} account${users.length === 1 ? '' : 's'} shown.`;
    if (!rows.length) {
      mount(holder, h('p', { class: 'muted' }, 'No account matches.'));
      return;
    }
    mount(holder, stackTable([
      { label: 'Email', cell: (u) => h('span', {}, u.email, u.organisation ? h('span', { class: 'muted' }, ` · ${u.organisation}`) : null) },
      { label: 'Role', cell: roleCell },
      { label: 'Status', cell: userStatus },
      { label: 'Expires', cell: (u) => (u.expires_at_ms ? formatTime(u.expires_at_ms) : '') },
      { label: 'Actions', cell: actions },
    ], rows, 'Accounts', 'users-table'));
    const trs = holder.querySelector('tbody').rows;
    rows.forEach((u, i) => { trs[i].dataset.user = u.id; trs[i].dataset.email = u.email; });
    if (focusId) {
      const tr = holder.querySelector(`tr[data-user="${CSS.escape(focusId)}"]`);
      tr?.querySelector('select, button')?.focus();
    }
  }

  const onFilter = () => {
    setHashQuery('#/admin/users', { q: filter.input.value.trim(), role: roleFilter.input.value });
    render();
  };
  filter.input.addEventListener('input', onFilter);
  roleFilter.input.addEventListener('change', onFilter);

  page(main, 'Users',
    h('p', { class: 'lead' }, 'Every account: patients, facilities, staff and admins. A change of role or a disable ends the account’s sessions and API tokens; the last admin cannot be demoted or disabled.'),
    h('div', { class: 'card search-form', attrs: { role: 'search', 'aria-label': 'Find users' } },
      h('div', { class: 'search-grid' }, filter.wrap, roleFilter.wrap)),
    shown, status, holder);
  render();
}

async function settingsPage(main) {
  let settings;
  try {
    settings = await api.get('/settings');
  } catch (e) {
    return refusal(main, 'Settings', e);
  }
  const box = errorBox();
  const check = h('input', { type: 'checkbox', id: 'set-signup', name: 'self_signup', checked: settings.self_signup, attrs: { 'aria-describedby': 'set-signup-hint' } });
  const state = h('p', { attrs: { role: 'status', 'data-testid': 'signup-state' } });
  const show = () => {
    state.textContent = settings.self_signup
      ? 'Self sign-up is on: anyone can create a patient account.'
      : 'Self sign-up is off: nobody can create an account on the sign-up page.';
    state.className = settings.self_signup ? 'ok' : 'notice';
  };
  const form = h('form', { class: 'card narrow scard', attrs: { 'aria-labelledby': 'set-signup-title' } },
    h('h2', { id: 'set-signup-title' }, 'Patient accounts'),
    state,
    h('div', { class: 'check' },
      check,
      h('label', { attrs: { for: 'set-signup' } }, 'Allow self sign-up')),
    h('small', { id: 'set-signup-hint', class: 'hint' },
      'Patients need an account to claim the studies delivered to them. When off, only existing accounts can claim codes.'),
    box.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Save')));
  submitting(form, box, async () => {
    settings = await api.put('/settings', { self_signup: check.checked });
    show();
    toast('Saved.');
  });
  show();
  page(main, 'Settings', form);
}

export const routes = {
  '#/admin/users': usersPage,
  '#/admin/settings': settingsPage,
};
