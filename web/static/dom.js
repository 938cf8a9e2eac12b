// Small DOM and formatting helpers shared by the pages.
// Model and user text is untrusted: it only ever reaches the page through textContent or attributes.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** A new element with an optional class and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** A token with its whitespace and control characters made visible: " on" -> "␣on". */
export function visibleToken(token) {
  if (token === "") return "∅";
  return token
    .replace(/ /g, "\u2423")
    .replace(/\n/g, "\u21b5")
    .replace(/\t/g, "\u21e5")
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0"));
}

/**
 * `prob` × `scale` to `digits` decimals, never rounded to the whole (1 × scale) or to 0 when `prob` is
 * neither: 0.999964 -> ">0.9999", and with scale 100 ">99.99".
 */
export function probability(prob, digits = 4, scale = 1) {
  const shown = (prob * scale).toFixed(digits);
  const step = 10 ** -digits;  // the smallest difference shown
  if (prob < 1 && Number(shown) >= scale) return ">" + (scale - step).toFixed(digits);
  if (prob > 0 && Number(shown) <= 0) return "<" + step.toFixed(digits);
  return shown;
}

/** 0.4213 -> "42.13%"; never "100.00%" or "0.00%" for a probability that is not exactly 1 or 0. */
export function percent(prob, digits = 2) {
  return probability(prob, digits, 100) + "%";
}

/** Entropy reported in nats, shown in bits (the unit of the surprisal beside it): "2.57 bits". */
export function bits(nats) {
  return (nats / Math.LN2).toFixed(2) + " bits";
}

/** The message of an API error body, or a fallback naming the HTTP status. */
export async function apiError(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (err) {
    // not JSON: fall through
  }
  return "the server answered " + response.status;
}

/** Show `message` in an alert element (or hide it when message is empty). */
export function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

/** One tab stop for a group of controls (tokens, chips, candidates); arrow keys, Home and End move within it. */
export function roving(container, selector) {
  const items = () => Array.from(container.querySelectorAll(selector));
  items().forEach((node, i) => { node.tabIndex = i === 0 ? 0 : -1; });
  container.addEventListener("keydown", (event) => {
    const list = items();
    const i = list.indexOf(document.activeElement);
    const moves = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: list.length - 1 };
    if (i < 0 || !(event.key in moves)) return;
    event.preventDefault();
    const target = list[Math.max(0, Math.min(list.length - 1, moves[event.key]))];
    list[i].tabIndex = -1;
    target.tabIndex = 0;
    target.focus();
  });
}

/** Why a finished job stopped, in words, by its finish_reason. */
export const FINISH = {
  length: "Stopped after the requested number of steps.",
  eos: "The model chose its end-of-text token, so generation stopped early.",
  cancelled: "Cancelled before the last step.",
  deadline: "Stopped: the job ran past its time limit.",
  context: "Stopped before the requested number of steps: the text filled the model's context window (the most " +
    "tokens it reads at once).",
};

/** The statuses a job never leaves: contract.jobs.TERMINAL, which base.html puts on <body>. */
export const TERMINAL = document.body.dataset.terminal.split(" ");
