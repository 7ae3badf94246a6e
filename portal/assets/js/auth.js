// Sign in, create an account, change password. Every refusal is shown as the server words it
// (wrong credentials, weak password, too many attempts with the wait).

import { api, ApiError } from './api.js';
import { h, field, errorBox, page, submitting, toast } from './ui.js';
import { afterSignIn, go } from './app.js';

function explain(e) {
  if (!(e instanceof ApiError)) return e.message || String(e);
  if (e.status === 429) {
    const wait = e.retryAfter ?? 0;
    const when = wait >= 90 ? `${Math.ceil(wait / 60)} minutes` : `${Math.max(wait, 1)} second${wait === 1 ? '' : 's'}`;
    return `Too many attempts: wait ${when} and try again.`;
  }
  if (e.status === 401) return 'Wrong email or password.';
  return e.message;
}

function signIn(main) {
  const email = field('Email', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = field('Password', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const box = errorBox();
  const form = h('form', { class: 'card narrow', attrs: { 'aria-label': 'Sign in' } },
    email.wrap, password.wrap, box.el,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    h('p', {}, 'No account yet? ', h('a', { href: '#/signup' }, 'Create one')));
  submitting(form, box, async () => {
    try {
      const r = await api.post('/auth/login', { email: email.input.value.trim(), password: password.input.value });
      afterSignIn(r.user);
    } catch (e) {
      throw new Error(explain(e));
    }
  });
  page(main, 'Sign in', h('p', { class: 'lead' }, 'See the images the hospital delivered to you, share and download them.'), form);
  email.input.focus();
}

function signUp(main) {
  const email = field('Email', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = field('Password', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minLength: 8 },
    'At least 8 characters; common passwords are refused.');
  const confirm = field('Repeat the password', { type: 'password', name: 'confirm', autocomplete: 'new-password', required: true });
  const box = errorBox();
  const form = h('form', { class: 'card narrow', attrs: { 'aria-label': 'Create an account' } },
    email.wrap, password.wrap, confirm.wrap, box.el,
    h('button', { type: 'submit', class: 'primary' }, 'Create account'),
    h('p', {}, 'Already have an account? ', h('a', { href: '#/signin' }, 'Sign in')));
  submitting(form, box, async () => {
    if (password.input.value !== confirm.input.value) throw new Error('The two passwords differ.');
    const creds = { email: email.input.value.trim(), password: password.input.value };
    try {
      await api.post('/auth/register', creds);
      const r = await api.post('/auth/login', creds);
      toast('Your account is ready.');
      afterSignIn(r.user);
    } catch (e) {
      throw new Error(explain(e));
    }
  });
  page(main, 'Create an account', form);
}

function changePassword(main, _params, ctx) {
  const current = field('Current password', { type: 'password', autocomplete: 'current-password', required: true });
  const next = field('New password', { type: 'password', autocomplete: 'new-password', required: true, minLength: 8 },
    'At least 8 characters; common passwords are refused.');
  const confirm = field('Repeat the new password', { type: 'password', autocomplete: 'new-password', required: true });
  const box = errorBox();
  const form = h('form', { class: 'card narrow', attrs: { 'aria-label': 'Change password' } },
    ctx.me?.must_change_password ? h('p', { class: 'notice' }, 'Choose a new password before you go on.') : null,
    current.wrap, next.wrap, confirm.wrap, box.el,
    h('button', { type: 'submit', class: 'primary' }, 'Change password'));
  submitting(form, box, async () => {
    if (next.input.value !== confirm.input.value) throw new Error('The two new passwords differ.');
    try {
      await api.post('/auth/password', { current_password: current.input.value, new_password: next.input.value });
    } catch (e) {
      throw new Error(explain(e));
    }
    const me = await ctx.refresh();
    toast('Your password is changed.');
    afterSignIn(me);
  });
  page(main, 'Change password', form);
}

export const routes = {
  '#/signin': signIn,
  '#/signup': signUp,
  '#/password': changePassword,
};

export { go };
