// Rendering of one step of the loop: context, candidates with probability bars, the choice, the new context.
import { bits, el, percent, probability, roving, visibleToken } from "./dom.js";

/** How many leading UTF-16 units two strings share, never cutting a surrogate pair. */
function sharedLength(a, b) {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  if (i > 0 && i < a.length && /[\ud800-\udbff]/.test(a[i - 1])) i--;
  return i;
}

/**
 * A context line: the exact `text` (a step's `context`), split into the prompt, the text generated before
 * (shaded) and the newest piece (highlighted): what `text` adds to `before`, the context one step earlier
 * (null: no newest piece). A step's exact contexts show a character cut across tokens whole, where the
 * tokens' own texts would show its bytes.
 */
export function contextLine(label, prompt, before, text, newestClass) {
  const newest = before === null ? text.length : sharedLength(before, text);
  const promptEnd = Math.min(sharedLength(prompt, text), newest);
  const line = el("p", "context");
  line.appendChild(el("span", "label", label));
  if (!text) line.appendChild(el("span", "ctx-empty", "(start of text: nothing yet)"));
  line.appendChild(el("span", "ctx-prompt", text.slice(0, promptEnd)));
  if (newest > promptEnd) line.appendChild(el("span", "ctx-earlier", text.slice(promptEnd, newest)));
  if (newest < text.length) line.appendChild(el("span", newestClass, text.slice(newest)));
  return line;
}

/** A card's "New context" line: `after` is the next step's context (or the job's text), null while unknown. */
export function newContextLine(step, prompt, after) {
  const line = contextLine("New context: ", prompt, step.context, after ?? step.context + step.chosen.token, "ctx-new");
  line.classList.add("new-context");
  line.dataset.exact = after === null ? "0" : "1";
  return line;
}

function candidateRow(step, cand, rank, options, excluded = false) {
  const chosen = cand.id === step.chosen.id;
  const row = el("li", "candidate" + (chosen ? " chosen" : "") + (excluded ? " excluded" : ""));
  const clickable = options.onBranch && !chosen;
  const body = el(clickable ? "button" : "div", "cand-body");
  const shown = visibleToken(cand.token);
  body.appendChild(el("span", "rank", rank + "."));
  body.appendChild(el("span", "token", shown));
  const track = el("span", "bar-track");
  const bar = el("span", "bar");
  bar.style.width = Math.max(cand.prob * 100, 0.4) + "%";
  track.appendChild(bar);
  body.appendChild(track);
  body.appendChild(el("span", "pct", percent(cand.prob)));
  if (clickable) {
    body.type = "button";
    body.dataset.tokenId = cand.id;
    body.setAttribute("aria-label", rank + ". " + shown + " " + percent(cand.prob) +
      (excluded ? " (outside top-p: the sampler could not pick it)" : "") +
      ": what if the model had picked this at step " + step.index + "? Starts a new job.");
    body.addEventListener("click", () => options.onBranch(step, cand, body));
  }
  row.appendChild(body);
  if (chosen) {
    const mark = step.forced ? "✓ the text's token (rank " + rank + ")"
      : options.sampling ? "✓ chosen (rank " + rank + ")" : "✓ chosen";
    row.appendChild(el("span", "mark", mark));
  } else if (excluded) {
    row.appendChild(el("span", "mark", "outside top-p: cannot be picked"));
  }
  return row;
}

/**
 * Which of the (descending) candidates top-p rules out: those whose more likely tokens already reach
 * top_p, as the engine's nucleus (engine/sampling.py) keeps a token while the mass before it is below top_p.
 */
function outsideTopP(step, options) {
  if (!options.sampling || step.forced || !(options.topP < 1)) return step.top.map(() => false);
  let before = 0;
  return step.top.map((cand) => {
    const out = before >= options.topP;
    before += cand.prob;
    return out;
  });
}

/**
 * The top-k candidates as bars, the chosen one marked (added at its rank if it is outside the top-k);
 * `options`: {limit, sampling, topP, onBranch}.
 */
export function candidateList(step, options) {
  const shown = options.limit ? step.top.slice(0, options.limit) : step.top;
  const excluded = outsideTopP(step, options);
  const list = el("ol", "candidates");
  list.setAttribute("aria-label", "Top " + shown.length + " candidates for step " + step.index);
  shown.forEach((cand, i) => list.appendChild(candidateRow(step, cand, i + 1, options, excluded[i])));
  if (!shown.some((c) => c.id === step.chosen.id)) {
    const row = candidateRow(step, step.chosen, step.chosen.rank, options);
    row.classList.add("outside");
    list.appendChild(row);
  }
  if (options.onBranch) roving(list, "button");
  return list;
}

/** How the token was picked, in words. */
export function choiceText(step, temperature) {
  const token = "\u201c" + visibleToken(step.chosen.token) + "\u201d";
  const prob = probability(step.chosen.prob) + " (" + percent(step.chosen.prob) + ")";
  if (step.forced) {
    return "THE TEXT'S TOKEN: " + token + ", probability " + prob + "; rank " + step.chosen.rank +
      " of the whole vocabulary (" + (-Math.log2(step.chosen.prob)).toFixed(2) + " bits of surprise).";
  }
  const how = temperature > 0
    ? "sampled at temperature " + temperature + ": rank " + step.chosen.rank + " of the whole vocabulary"
    : "greedy: temperature 0 always takes the most likely token";
  return "SELECTED: " + token + ", probability " + prob + "; " + how + ".";
}

/** What a card's bars are: the model's own probabilities, or those at the job's temperature, and top-p's cut. */
function distributionCaption(step, options) {
  const t = options.temperature;
  const atT = " at temperature " + t + ": softmax(logits / " + t + ")";
  let what;
  if (step.forced) {  // a scored text: its own token is taken, whatever the temperature
    what = t > 0 && t !== 1 ? atT : ": the model's probabilities";
  } else if (t > 0) {
    what = atT + ", " + (t < 1 ? "sharper than " : t > 1 ? "flatter than " : "") + "the model's own probabilities" +
      (options.topP < 1 ? "; only the most likely tokens up to " + Number((options.topP * 100).toFixed(2)) +
        "% of the probability (top-p) can be picked" : "");
  } else {
    what = ": the model's probabilities (temperature 0 takes the most likely)";
  }
  return "Top " + step.top.length + " next-token predictions" + what + " (uncertainty: entropy " +
    bits(step.entropy) + "):";
}

/**
 * One card per step, like the notebook's printed trace. `previous` is the step before it (null for step 1),
 * `after` the context after its token (the next step's context or the job's text; null while unknown);
 * `options`: {total, temperature, topP, onBranch}.
 */
export function stepCard(step, prompt, previous, after, options) {
  const card = el("li", "step");
  card.id = "step-" + step.index;
  card.tabIndex = -1;
  const title = el("h3", null, "Step " + step.index + (options.total ? " of " + options.total : ""));
  title.id = "step-" + step.index + "-title";
  card.setAttribute("aria-labelledby", title.id);
  card.appendChild(title);
  card.appendChild(contextLine("Current context: ", prompt, previous && previous.context, step.context, "ctx-newest"));
  card.appendChild(el("p", "caption", distributionCaption(step, options)));
  card.appendChild(candidateList(step, { sampling: options.temperature > 0, topP: options.topP,
    onBranch: options.onBranch }));
  card.appendChild(el("p", "selected", choiceText(step, options.temperature)));
  card.appendChild(newContextLine(step, prompt, after));
  const error = el("p", "error card-error");
  error.setAttribute("role", "alert");
  error.hidden = true;
  card.appendChild(error);
  return card;
}

/** A generated token as a focusable chip; its tooltip shows the step, probability and runner-ups. */
export function tokenChip(step, onActivate) {
  const shown = visibleToken(step.chosen.token);
  const runnerUps = step.top.filter((c) => c.id !== step.chosen.id).slice(0, 3)
    .map((c) => visibleToken(c.token) + " " + percent(c.prob, 1)).join(", ");
  const tip = "Step " + step.index + " · " + percent(step.chosen.prob) + "\nRunner-ups: " + (runnerUps || "none");
  const chip = el("button", "chip", shown);
  chip.type = "button";
  chip.dataset.tip = tip;
  chip.setAttribute("aria-label", shown + ": " + tip.replace("\n", ". "));
  chip.addEventListener("click", () => onActivate(step));
  return chip;
}
