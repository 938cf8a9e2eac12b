// "Guess the next token": each step stays hidden until the student guesses it (typed, or picked from the
// step's candidates in a shuffled order). The server scores the guess by the model's probability for it;
// then the step's card is revealed. Score: the model's probability of each guess, in points (out of 100).
import { $, apiError, el, percent, showError, visibleToken } from "./dom.js";

function shuffled(items) {
  const copy = items.slice();
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

/** The sentence shown after a guess: the model's probability and rank for it, or that it was outside the list. */
export function verdict(outcome) {
  const match = outcome.match;
  if (!match) return "you said \u201c" + visibleToken(outcome.guess) + "\u201d: not in the model's top " + outcome.top;
  return "you said \u201c" + visibleToken(match.token) + "\u201d: the model gave it " + percent(match.prob, 1) +
    " (rank " + match.rank + ")";
}

export class GuessGame {
  /** `reveal(step)` shows a step's card once it has been guessed. */
  constructor(jobId, reveal) {
    this.jobId = jobId;
    this.reveal = reveal;
    this.steps = [];
    this.revealed = 0;
    this.asking = null;
    this.sending = false;
    this.refocus = false;
    this.points = 0;
    this.hits = 0;
    this.guessed = 0;
    this.past = null;  // the guesses kept before this page was loaded, by step (null until read)
    $("guess-panel").hidden = false;
    this.loadPast();
    $("guess-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("guess-input").value;
      if (text) this.guess(text);
    });
  }

  /** A reloaded page goes on from the student's kept guesses; without them it starts at step 1. */
  async loadPast() {
    let kept = [];
    try {
      const response = await fetch("/api/jobs/" + encodeURIComponent(this.jobId) + "/guesses",
        { headers: { Accept: "application/json" } });
      if (response.ok) kept = (await response.json()).guesses;
    } catch (err) {
      // unreachable: start at step 1 (the server still counts only the first guess of each step)
    }
    this.past = new Map(kept.map((outcome) => [outcome.step, outcome]));
    this.update(this.steps);
  }

  /** All steps known so far (hidden until guessed). */
  update(steps) {
    this.steps = steps;
    if (!this.past || this.asking || this.sending) return;
    while (this.revealed < steps.length && this.past.has(steps[this.revealed].index)) {
      const step = steps[this.revealed];
      this.scored(step, this.past.get(step.index));
      this.revealed += 1;
      this.reveal(step);
    }
    if (this.revealed < steps.length) this.ask(steps[this.revealed]);
  }

  /** True once every step the job computed has been shown. */
  finished(total) {
    return this.revealed >= total;
  }

  ask(step) {
    this.asking = step;
    $("guess-question").textContent = "Step " + step.index + ": which token comes after \u201c" + step.context + "\u201d?";
    $("guess-input").value = "";
    $("guess-input").disabled = false;
    $("guess-options").replaceChildren(...shuffled(step.top).map((cand) => {
      const button = el("button", "chip", visibleToken(cand.token));
      button.type = "button";
      button.addEventListener("click", () => this.guess(cand.token));
      return button;
    }));
    this.busy(false);
    if (this.refocus) $("guess-input").focus();  // a keyboard user types the next guess straight away
    this.refocus = false;
  }

  /** While a guess is being scored nothing can be guessed again; the text box keeps its focus (read-only). */
  busy(on) {
    $("guess-input").readOnly = on;
    $("guess-submit").disabled = on;
    $("guess-form").setAttribute("aria-busy", String(on));
    for (const chip of $("guess-options").children) chip.disabled = on;
  }

  /** Count a step's guess into the score and say how it went. */
  scored(step, outcome) {
    this.guessed += 1;
    this.points += outcome.match ? 100 * outcome.match.prob : 0;
    if (outcome.correct) this.hits += 1;
    $("guess-result").textContent = "Step " + step.index + ": " + verdict(outcome) + ". The model chose \u201c" +
      visibleToken(step.chosen.token) + "\u201d.";
    $("guess-score").textContent = "Score: " + this.points.toFixed(1) + " points after " + this.guessed +
      " guess" + (this.guessed === 1 ? "" : "es") + " (each guess earns the model's probability for it, in %); " +
      "you named the model's pick " + this.hits + " time" + (this.hits === 1 ? "" : "s") + ".";
  }

  /** The job is over and each of its `total` steps was guessed: say so, with the final score, and close the game. */
  end(total) {
    const question = $("guess-question");
    question.textContent = total
      ? "All " + total + " steps guessed. Final score: " + this.points.toFixed(1) + " points."
      : "The job ended before its first step: nothing to guess.";
    if ($("guess-panel").contains(document.activeElement)) question.focus();  // the input it was in goes away
    $("guess-form").hidden = true;
    $("guess-pick").hidden = true;
    $("guess-options").replaceChildren();
  }

  async guess(text) {
    const step = this.asking;
    if (!step || this.sending) return;  // a double click, or a step already guessed
    this.sending = true;
    this.refocus = $("guess-panel").contains(document.activeElement);
    this.busy(true);
    try {
      const response = await fetch("/api/jobs/" + encodeURIComponent(this.jobId) + "/guesses", {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ step: step.index, guess: text }),
      });
      if (!response.ok) throw new Error(await apiError(response));
      const outcome = await response.json();
      this.scored(step, outcome.first ? outcome : outcome.kept);  // a step guessed before (another tab): that one counts
      showError($("guess-error"), "");
    } catch (err) {
      showError($("guess-error"), "Could not score the guess: " + err.message);
      this.sending = false;
      this.busy(false);
      if (this.refocus) $("guess-input").focus();
      return;
    }
    this.sending = false;
    this.revealed += 1;
    this.asking = null;
    $("guess-options").replaceChildren();
    if (this.refocus) $("guess-input").focus();  // the picked chip is gone: focus stays in the game
    $("guess-question").textContent = "Waiting for the next step…";
    this.reveal(step);
    this.update(this.steps);
  }
}
