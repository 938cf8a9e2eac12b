// The live job page: step cards, charts, progress, queue wait, cancel, "what if" branches, final tokens.
import { JobCharts } from "./charts.js";
import { $, FINISH, TERMINAL, apiError, el, percent, roving, showError, visibleToken } from "./dom.js";
import { GuessGame } from "./guess.js";
import { followJob } from "./poller.js";
import { renderScore } from "./score.js";
import { newContextLine, stepCard, tokenChip } from "./steps.js";
import { WaitEstimator } from "./wait.js";

const root = $("job");
const jobId = root.dataset.jobId;
const STATUS = { queued: "Queued", running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled" };

let job = null;
let steps = [];
let wait = null;
let hashShown = false;
let shown = [];  // the steps on the page (in guess mode, those guessed so far)
let ended = false;  // the final text is shown
let tracker = null;  // the poller (followJob's answer)
const game = root.dataset.guess === "1" ? new GuessGame(jobId, reveal, () => tracker.refresh()) : null;
const charts = new JobCharts(
  { candidates: "chart-candidates", trend: "chart-trend", slider: "chart-step", label: "chart-step-label",
    note: "charts-note" },
  root.dataset.plotlySrc, branch);

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;  // live regions announce only real changes
}

function renderParams(current) {
  const p = current.params;
  if (current.score) {
    setText("params", "Model " + current.model + " · scoring a given text: its own tokens, no sampling" +
      (p.temperature > 0 ? " · probabilities at temperature " + p.temperature : "") + " · top-k " + p.top_k);
    $("branch-hint").hidden = true;  // a scored text has no generation to branch from
    return;
  }
  const how = p.temperature > 0 ? "temperature " + p.temperature + " (sampling)" : "temperature 0 (greedy)";
  setText("params", "Model " + current.model + " · " + how + " · top-k " + p.top_k + " · top-p " + p.top_p +
    " · seed " + (p.seed === null ? "hidden until every step is guessed" : p.seed));
}

function renderTokens(current) {
  const list = $("prompt-tokens");
  if (!current.prompt_tokens || list.childElementCount) return;
  const forcedFrom = current.prompt_tokens.length - current.forced_ids.length;
  current.prompt_tokens.forEach((t, i) => {
    const forced = i >= forcedFrom;
    const item = el("li", "token-piece" + (forced ? " forced" : ""), visibleToken(t.token));
    item.dataset.tip = "id " + t.id + (forced ? " · forced by the branch" : "");
    item.appendChild(el("span", "sr-only", " (token id " + t.id + (forced ? ", forced by the branch" : "") + ")"));
    list.appendChild(item);
  });
  roving(list, "li");
  setText("tokens-hint", current.prompt_tokens.length + (current.prompt_tokens.length === 1 ? " token" : " tokens") +
    ". The model reads these ids, not letters; " +
    "hover or focus a token (arrow keys move between them) to see its id.");
  const last = current.prompt_tokens[current.prompt_tokens.length - 1];
  if (current.branch && current.forced_ids.length && $("forced-token")) {
    setText("forced-token", ", continuing with \u201c" + visibleToken(last.token) + "\u201d forced in");
  }
}

function renderProgress(current) {
  let status = STATUS[current.status] || current.status;
  if (current.error) status += ": " + current.error;
  setText("status", status);
  const total = current.steps_total || 1;
  $("progress-bar").style.width = (100 * current.steps_done / total) + "%";
  root.querySelector(".progress").setAttribute("aria-valuenow", current.steps_done);
  setText("progress-text", "step " + current.steps_done + " of " + current.steps_total);
  $("cancel").hidden = !(current.mine && !TERMINAL.includes(current.status));
}

async function renderQueue(current) {
  const info = $("queue-info");
  info.hidden = current.status !== "queued";
  if (info.hidden) return;
  wait = wait || new WaitEstimator(current.model);
  await wait.refresh();
  info.textContent = "Waiting in line: position " + (current.queue_position || "?") + ". " +
    wait.describe(current.queue_position || 1, current.steps_total);
}

/** The exact context after a step's token: the next step's, or the ended job's text; null while unknown. */
function contextAfter(step) {
  const next = steps[step.index];  // steps[i] is step i + 1
  if (next) return next.context;
  return TERMINAL.includes(job.status) && step.index === steps.length ? job.text : null;
}

/** Cards shown before the context after them was known get their exact "New context" line now. */
function settleNewContexts() {
  const prompt = steps.length ? steps[0].context : "";
  for (const line of document.querySelectorAll("#steps .new-context[data-exact='0']")) {
    const step = steps[Number(line.closest("li.step").id.slice("step-".length)) - 1];
    const after = contextAfter(step);
    if (after !== null) line.replaceWith(newContextLine(step, prompt, after));
  }
}

function renderSteps(fresh) {
  const list = $("steps");
  const prompt = steps.length ? steps[0].context : "";
  for (const step of fresh) {
    list.appendChild(stepCard(step, prompt, steps[step.index - 2] || null, contextAfter(step),
      { total: job.steps_total, temperature: job.params.temperature, topP: job.params.top_p,
        onBranch: job.score ? null : branch }));
  }
  settleNewContexts();
  const last = fresh[fresh.length - 1];
  if (!game) {  // a guessing student hears their verdict instead
    setText("announce", "Step " + last.index + ": chose \u201c" + visibleToken(last.chosen.token) + "\u201d, " +
      percent(last.chosen.prob) + ".");
  }
  if (!hashShown && location.hash.startsWith("#step-") && document.querySelector(location.hash)) {
    hashShown = true;
    jumpTo(document.querySelector(location.hash));
  }
}

/** A finished score job: its whole text, or only as many of its tokens as its steps allowed. */
function scoredHowMuch(current) {
  if (!(current.steps_done < current.score_tokens)) return "Scored every token of the text.";
  return "Scored the first " + current.steps_done + " of the text's " + current.score_tokens +
    " tokens: the job was given " + current.steps_total + " steps.";
}

function renderFinal(current) {
  if (ended) return;  // a guessed last step and the answer that brought it both end the game
  ended = true;
  settleNewContexts();
  $("final").hidden = false;
  setText("finish-reason", current.score && current.finish_reason === "length" ? scoredHowMuch(current)
    : FINISH[current.finish_reason] || current.error || "");
  if (game) game.end(current.steps_done);
  const text = $("final-text");
  text.replaceChildren();
  const prompt = steps.length ? steps[0].context : current.prompt;
  if (current.text.startsWith(prompt)) {
    text.appendChild(el("span", "ctx-prompt", prompt));
    text.appendChild(el("span", "generated", current.text.slice(prompt.length)));
  } else {
    text.textContent = current.text;
  }
  $("chips").replaceChildren(...steps.map((s) => tokenChip(s, (step) => jumpTo($("step-" + step.index)))));
  roving($("chips"), ".chip");
  if (current.score) renderScore(current, steps, (step) => jumpTo($("step-" + step.index)));
}

/** Guess mode: show a step once the student has guessed it. */
function reveal(step) {
  shown.push(step);
  renderSteps([step]);
  charts.update(shown);
  if (TERMINAL.includes(job.status) && game.finished(job.steps_done)) renderFinal(job);
}

function jumpTo(card) {
  card.scrollIntoView({ block: "start" });
  card.focus({ preventScroll: true });
}

/** "What if": a new job from the context before `step`, with `cand` forced in place of the model's choice. */
async function branch(step, cand, button) {
  if (job.score) return;  // a scored text has no generation to branch from
  const card = $("step-" + step.index);
  const error = card ? card.querySelector(".card-error") : $("action-error");
  if (button) button.disabled = true;
  const chosenBefore = steps.filter((s) => s.index < step.index).map((s) => s.chosen.id);
  const p = job.params;
  const body = {
    prompt: job.prompt, model: job.model,
    steps: Math.max(1, job.steps_total - step.index),
    top_k: p.top_k, temperature: p.temperature, top_p: p.top_p, seed: p.seed,
    forced_ids: job.forced_ids.concat(chosenBefore, [cand.id]),
    branch: { parent: job.id, step: step.index },
  };
  try {
    const response = await fetch("/api/jobs", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await apiError(response));
    location.assign((await response.json()).page);
  } catch (err) {
    showError(error, "Could not start the branch: " + err.message);
    if (button) button.disabled = false;
  }
}

async function cancel() {
  const button = $("cancel");
  button.disabled = true;
  try {
    const response = await fetch("/api/jobs/" + encodeURIComponent(jobId),
      { method: "DELETE", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(await apiError(response));
    if (!TERMINAL.includes(job.status)) setText("status", "Cancelling…");  // the next poll says when it stopped
    showError($("action-error"), "");
  } catch (err) {
    showError($("action-error"), "Could not cancel: " + err.message);
    button.disabled = false;
  }
}

async function copyLink() {
  const field = $("permalink");
  const button = $("copy-link");
  let copied = true;
  try {
    await navigator.clipboard.writeText(field.value);
  } catch (err) {  // no clipboard API over plain http: the older way
    field.select();
    copied = document.execCommand("copy");
  }
  button.textContent = copied ? "Copied" : "Press Ctrl+C to copy";
  setTimeout(() => { button.textContent = "Copy link"; }, 2000);
}

$("cancel").addEventListener("click", cancel);
$("copy-link").addEventListener("click", copyLink);
$("permalink").addEventListener("focus", () => $("permalink").select());

tracker = followJob(jobId, (current, fresh, all) => {
  job = current;
  steps = all;
  renderParams(current);
  renderTokens(current);
  renderProgress(current);
  renderQueue(current);
  if (game) {
    game.update(all, current.guess_next);
  } else if (fresh.length) {
    shown = all;
    renderSteps(fresh);
    charts.update(all);
  }
  if (TERMINAL.includes(current.status) && (!game || game.finished(current.steps_done))) renderFinal(current);
}, () => setText("status", "This job does not exist or has expired."),
(trouble) => { if ($("poll-error").textContent !== trouble) showError($("poll-error"), trouble); });
