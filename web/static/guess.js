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

/** A step the page knows in full, asked as the server asks a guess job's next step. */
function question(step) {
  return { step: step.index, context: step.context, candidates: step.top.map((cand) => cand.token) };
}

export class GuessGame {
  /**
   * `reveal(step)` shows a step's card once it has been guessed; `refresh()` asks the server again (a guess job's
   * server shows a step only once it is guessed, and asks the next one as `guess_next`).
   */
  constructor(jobId, reveal, refresh) {
    this.jobId = jobId;
    this.reveal = reveal;
    this.refresh = refresh;
    this.steps = [];
    this.next = null;
    this.revealed = 0;
    this.asking = null;
    this.sending = false;
    this.refocus = false;
    this.points = 0;
    this.hits = 0;
    this.guessed = 0;
    this.past = null;  // the guesses kept, by step: before this page was loaded (null until read), then its own
    this.counted = new Set();  // the steps whose guess is in the score
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
    this.update(this.steps, this.next);
  }

  /**
   * The steps known so far and the next one to guess (`guess_next`, or null). A guess job's server sends only the
   * steps guessed; another job played as a game sends them all, and they stay hidden here until guessed.
   */
  update(steps, next) {
    this.steps = steps;
    this.next = next;
    if (!this.past || this.asking || this.sending) return;
    while (this.revealed < steps.length && this.past.has(steps[this.revealed].index)) {
      const step = steps[this.revealed];
      if (!this.counted.has(step.index)) this.scored(step.index, this.past.get(step.index));
      this.revealed += 1;
      this.reveal(step);
    }
    const asked = this.revealed < steps.length ? question(steps[this.revealed]) : next;
    if (asked && asked.step === this.revealed + 1) this.ask(asked);
  }

  /** True once every step the job computed has been shown. */
  finished(total) {
    return this.revealed >= total;
  }

  /** Ask `asked` ({step, context, candidates}): the context, a text box and the candidates, shuffled. */
  ask(asked) {
    this.asking = asked;
    $("guess-question").textContent = "Step " + asked.step + ": which token comes after \u201c" + asked.context +
      "\u201d?";
    $("guess-input").value = "";
    $("guess-input").disabled = false;
    $("guess-options").replaceChildren(...shuffled(asked.candidates).map((token) => {
      const button = el("button", "chip", visibleToken(token));
      button.type = "button";
      button.addEventListener("click", () => this.guess(token));
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

  /** Count step `index`'s guess into the score and say how it went. */
  scored(index, outcome) {
    this.counted.add(index);
    this.guessed += 1;
    this.points += outcome.match ? 100 * outcome.match.prob : 0;
    if (outcome.correct) this.hits += 1;
    $("guess-result").textContent = "Step " + index + ": " + verdict(outcome) + ". The model chose \u201c" +
      visibleToken(outcome.chosen.token) + "\u201d.";
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
    const asked = this.asking;
    if (!asked || this.sending) return;  // a double click, or a step already guessed
    this.sending = true;
    this.refocus = $("guess-panel").contains(document.activeElement);
    this.busy(true);
    try {
      const response = await fetch("/api/jobs/" + encodeURIComponent(this.jobId) + "/guesses", {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ step: asked.step, guess: text }),
      });
      if (!response.ok) throw new Error(await apiError(response));
      const outcome = await response.json();
      const kept = outcome.first ? outcome : outcome.kept;  // a step guessed before (another tab): that one counts
      this.past.set(asked.step, kept);
      this.scored(asked.step, kept);
      showError($("guess-error"), "");
    } catch (err) {
      showError($("guess-error"), "Could not score the guess: " + err.message);
      this.sending = false;
      this.busy(false);
      if (this.refocus) $("guess-input").focus();
      return;
    }
    this.sending = false;
    this.asking = null;
    $("guess-options").replaceChildren();
    if (this.refocus) $("guess-input").focus();  // the picked chip is gone: focus stays in the game
    $("guess-question").textContent = "Waiting for the next step…";
    this.update(this.steps, null);  // a step this page already holds is shown now
    if (this.revealed < asked.step) this.refresh();  // else the server shows it now that it is guessed
  }
}
