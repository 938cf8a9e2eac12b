// Rendering of one step of the loop: context, candidates with probability bars, the choice, the new context.
import { el, percent, roving, visibleToken } from "./dom.js";

/**
 * A context line: the prompt, the tokens generated before (shaded) and the newest one (highlighted).
 * `generated` is the list of token texts appended so far; the last one is the newest.
 */
export function contextLine(label, prompt, generated, newestClass) {
  const line = el("p", "context");
  line.appendChild(el("span", "label", label));
  line.appendChild(el("span", "ctx-prompt", prompt));
  if (generated.length > 1) line.appendChild(el("span", "ctx-earlier", generated.slice(0, -1).join("")));
  if (generated.length) line.appendChild(el("span", newestClass, generated[generated.length - 1]));
  return line;
}

function candidateRow(step, cand, rank, options) {
  const chosen = cand.id === step.chosen.id;
  const row = el("li", "candidate" + (chosen ? " chosen" : ""));
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
      ": what if the model had picked this at step " + step.index + "? Starts a new job.");
    body.addEventListener("click", () => options.onBranch(step, cand, body));
  }
  row.appendChild(body);
  if (chosen) {
    const mark = step.forced ? "✓ the text's token (rank " + rank + ")"
      : options.sampling ? "✓ chosen (rank " + rank + ")" : "✓ chosen";
    row.appendChild(el("span", "mark", mark));
  }
  return row;
}

/** The top-k candidates as bars, the chosen one marked (added at its rank if it is outside the top-k). */
export function candidateList(step, options) {
  const shown = options.limit ? step.top.slice(0, options.limit) : step.top;
  const list = el("ol", "candidates");
  list.setAttribute("aria-label", "Top " + shown.length + " candidates for step " + step.index);
  shown.forEach((cand, i) => list.appendChild(candidateRow(step, cand, i + 1, options)));
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
  const prob = step.chosen.prob.toFixed(4) + " (" + percent(step.chosen.prob) + ")";
  if (step.forced) {
    return "THE TEXT'S TOKEN: " + token + ", probability " + prob + "; rank " + step.chosen.rank +
      " of the whole vocabulary (" + (-Math.log2(step.chosen.prob)).toFixed(2) + " bits of surprise).";
  }
  const how = temperature > 0
    ? "sampled at temperature " + temperature + ": rank " + step.chosen.rank + " of the whole vocabulary"
    : "greedy: temperature 0 always takes the most likely token";
  return "SELECTED: " + token + ", probability " + prob + "; " + how + ".";
}

/**
 * One card per step, like the notebook's printed trace. `before` holds the tokens chosen at earlier steps;
 * `options`: {total, temperature, onBranch}.
 */
export function stepCard(step, prompt, before, options) {
  const card = el("li", "step");
  card.id = "step-" + step.index;
  card.tabIndex = -1;
  const title = el("h3", null, "Step " + step.index + (options.total ? " of " + options.total : ""));
  title.id = "step-" + step.index + "-title";
  card.setAttribute("aria-labelledby", title.id);
  card.appendChild(title);
  card.appendChild(contextLine("Current context: ", prompt, before, "ctx-newest"));
  card.appendChild(el("p", "caption", "Top " + step.top.length + " next-token predictions " +
    "(uncertainty: entropy " + step.entropy.toFixed(2) + " nats):"));
  card.appendChild(candidateList(step, { sampling: options.temperature > 0, onBranch: options.onBranch }));
  card.appendChild(el("p", "selected", choiceText(step, options.temperature)));
  card.appendChild(contextLine("New context: ", prompt, before.concat([step.chosen.token]), "ctx-new"));
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
