// The score view: the scored text, each token coloured by the model's rank for it (GLTR's bands), a legend,
// and the totals. Each token opens its step card.
import { el, visibleToken } from "./dom.js";

const BANDS = [[10, "top10"], [100, "top100"], [1000, "top1000"]];

/** "top10" | "top100" | "top1000" | "beyond" for a 1-based rank. */
export function band(rank) {
  const found = BANDS.find(([limit]) => rank <= limit);
  return found ? found[1] : "beyond";
}

/** Fill the score view from a finished score job and its steps; `open(step)` shows a step's card. */
export function renderScore(job, steps, open) {
  $("score-view").hidden = false;
  const text = $("score-text");
  text.replaceChildren();
  if (steps.length) text.appendChild(el("span", "score-context", steps[0].context));
  steps.forEach((step, i) => {
    const bits = job.surprisal ? job.surprisal.bits[i] : -Math.log2(step.chosen.prob);
    const shown = /^\s*$/.test(step.chosen.token) ? visibleToken(step.chosen.token) : step.chosen.token;  // ␣, ↵
    const token = el("button", "score-token band-" + band(step.chosen.rank), shown);
    token.type = "button";
    token.dataset.rank = step.chosen.rank;
    token.setAttribute("aria-label", "\u201c" + visibleToken(step.chosen.token) + "\u201d: rank " + step.chosen.rank + ", " +
      (100 * step.chosen.prob).toFixed(2) + "%, " + bits.toFixed(2) + " bits. Opens step " + step.index + ".");
    token.title = "rank " + step.chosen.rank + " · " + (100 * step.chosen.prob).toFixed(2) + "% · " + bits.toFixed(2) + " bits";
    token.addEventListener("click", () => open(step));
    text.appendChild(token);
  });
  const s = job.surprisal;
  $("score-totals").textContent = s ? steps.length + " tokens · total surprisal " + s.total_bits.toFixed(1) +
    " bits (" + (s.total_bits / steps.length).toFixed(2) + " bits per token) · perplexity " + s.perplexity.toFixed(1) +
    ": on average the model was as unsure as if it chose among " + Math.round(s.perplexity) + " equally likely tokens."
    : "";
}

function $(id) {
  return document.getElementById(id);
}
