// The API client of the storefront and the ops console: the one place that signs requests,
// gives every POST its Idempotency-Key, and retries.
//
// Retry rules:
// - One user action = one call of `request` = one Idempotency-Key, reused on every retry, so
//   a retried POST can never reserve or order twice.
// - 429 and 503 are retried with capped exponential backoff and full jitter, never sooner than
//   the server's Retry-After.
// - A network failure (no answer at all) is retried the same way: with the same key a repeat
//   is safe even when the first attempt did reach the server.
// - Anything else is final: the caller gets the JSON body or an ApiError carrying the
//   problem+json `code`.
// - `once: true` sends a request exactly once: for a change the server does not dedupe by
//   Idempotency-Key (an ops restock), where a repeat could apply it twice.
// - `idempotencyKey` continues a user action begun earlier (the storefront keeps a reserve's
//   key in localStorage until it is answered, so a reserve retried after a reload replays).

const TOKEN_KEY = "stockgate.token";
const RETRY = { attempts: 6, baseMs: 250, capMs: 4000 };

/** A refused request: `status` and the problem `code` (or "network" when nothing answered). */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
  }

  /** Whether the server may not have decided: no answer, busy (429) or failing (5xx). */
  get undecided() {
    return this.code === "network" || this.status === 429 || this.status >= 500;
  }
}

/** The signed-in identity: `{token, sub, roles}` or null. Kept for the browser tab only. */
export function session() {
  const raw = sessionStorage.getItem(TOKEN_KEY);
  return raw ? JSON.parse(raw) : null;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Signs in with a dev token for `buyer` (only where the gateway offers /dev/token). */
export async function signIn(buyer, role) {
  const { body } = await request("POST", "/dev/token", { buyer, role }, { auth: false });
  const identity = { token: body.token, sub: body.sub, roles: body.roles };
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(identity));
  return identity;
}

/** Signs in with a token from a real identity provider (pasted by the user). */
export function useToken(token) {
  const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  const identity = { token, sub: claims.sub, roles: claims.roles || [] };
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(identity));
  return identity;
}

/** 128 random bits as hex (crypto.randomUUID needs a secure context; this does not). */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** How long to wait before retry number `attempt` (0-based). */
export function backoffMs(attempt, retryAfterHeader) {
  const ceiling = Math.min(RETRY.capMs, RETRY.baseMs * 2 ** attempt);
  const jittered = Math.random() * ceiling;
  const retryAfterMs = Number(retryAfterHeader) * 1000;
  return Number.isFinite(retryAfterMs) && retryAfterMs > 0
    ? Math.max(retryAfterMs, jittered)
    : jittered;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends one user action. Returns `{status, body, headers}` for a 2xx answer, throws ApiError
 * otherwise. `options.headers` adds headers (e.g. If-Match); `options.auth` false sends no
 * token; `options.once` sends it once, without retries; `options.idempotencyKey` is the key
 * of a POST (default: a new one); `options.onRetry(attempt, reason)` is told about each retry.
 */
export async function request(method, path, body, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = options.idempotencyKey || newIdempotencyKey();
  const identity = options.auth === false ? null : session();
  if (identity) headers.Authorization = `Bearer ${identity.token}`;
  const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };

  for (let attempt = 0; ; attempt++) {
    const last = options.once || attempt + 1 >= RETRY.attempts;
    let response;
    try {
      response = await fetch(path, init);
    } catch (networkError) {
      if (last) throw new ApiError(0, "network", "the shop could not be reached");
      options.onRetry?.(attempt + 1, "network");
      await sleep(backoffMs(attempt, null));
      continue;
    }
    if ((response.status === 429 || response.status === 503) && !last) {
      options.onRetry?.(attempt + 1, response.status);
      await sleep(backoffMs(attempt, response.headers.get("Retry-After")));
      continue;
    }
    const text = await response.text();
    const parsed = text ? safeJson(text) : null;
    if (response.ok || response.status === 304) {
      return { status: response.status, body: parsed, headers: response.headers };
    }
    const code = parsed?.code || `http_${response.status}`;
    throw new ApiError(response.status, code, parsed?.detail);
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export const get = (path) => request("GET", path).then((r) => r.body);

/** Formats integer cents as dollars. */
export function money(cents) {
  return `$${(cents / 100).toFixed(2)}`;
}

/** Makes an element: el("td", {class: "x"}, "text", child, ...). Never parses HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Shows a message in the page's notice area: kind is "ok", "error" or "info". */
export function notify(text, kind = "info") {
  const box = document.getElementById("notice");
  box.replaceChildren(el("p", { class: `notice ${kind}`, "data-kind": kind }, text));
}

/**
 * Wires the sign-in form of a page: `role` is "buyer" or "ops". Calls `onSignedIn(identity)`
 * once signed in (right away when the tab already is).
 */
export function setUpSignIn(role, onSignedIn) {
  const form = document.getElementById("signin");
  const who = document.getElementById("who");
  const show = (identity) => {
    form.hidden = true;
    who.replaceChildren(
      el("span", {}, `signed in as ${identity.sub}`),
      el("button", { type: "button", class: "link", onclick: () => { signOut(); location.reload(); } }, "sign out"),
    );
    onSignedIn(identity);
  };
  const current = session();
  if (current) return show(current);
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pasted = form.elements.token.value.trim();
    try {
      if (pasted) return show(useToken(pasted));
      show(await signIn(form.elements.buyer.value.trim(), role));
    } catch (error) {
      if (error.status === 404) {
        notify("Dev sign-in is off on this gateway: paste a token from your identity provider.", "error");
      } else if (error.code === "network") {
        notify("Network problem: the shop could not be reached. Try again.", "error");
      } else {
        notify(`Sign-in failed: ${error.message}`, "error");
      }
    }
  });
}
