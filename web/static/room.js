// The teacher's projector view: polls /api/rooms/<code>; students' jobs, the class tally against the model,
// the class's step-1 guesses, and the room's switches.
import { loadPlotly, plain } from "./charts.js";
import { $, apiError, el, percent, showError, visibleToken } from "./dom.js";

const REFRESH_MS = 1500;
const SHOWN_TOKENS = 12;
const CONFIG = { displayModeBar: false, responsive: true };
const FONT = { family: "system-ui, sans-serif", size: 18, color: "#000" };
const CLASS_BLUE = "#0072b2";
const MODEL_ORANGE = "#e69f00";
const root = $("room");
const code = root.dataset.code;
let room = null;
let stepChosen = false;

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(await apiError(response));
  return response.json();
}

function renderState(current) {
  const state = current.closed ? "Closed: no new jobs." : "Open until " +
    new Date(current.expires_at * 1000).toLocaleTimeString() + ".";
  $("room-state").textContent = state;
  for (const input of root.querySelectorAll(".switches input")) {
    if (document.activeElement !== input) input.checked = Boolean(current[input.dataset.field]);
    input.disabled = current.closed;
  }
  $("close-room").disabled = current.closed;
  const p = current.params;
  $("room-params").textContent = "Prompt: \u201c" + (current.prompt || "(each student's own)") + "\u201d · " +
    p.steps + " steps · top-k " + p.top_k + " · temperature " + p.temperature + " · top-p " + p.top_p;
}

function renderStudents(jobs, students) {
  $("student-count").textContent = students + (students === 1 ? " student, " : " students, ") + jobs.length +
    (jobs.length === 1 ? " job" : " jobs");
  $("students").replaceChildren(...jobs.map((job) => {
    const card = el("li", "student status-" + job.status);
    card.dataset.jobId = job.id;
    card.appendChild(el("h3", "nickname", job.nickname || "(no nickname)"));
    card.appendChild(el("p", "student-text", job.text));
    card.appendChild(el("p", "student-status", job.status + " · step " + job.steps_done + " of " + job.steps_total));
    return card;
  }));
}

function tallyEntry(step) {
  const entries = room.tally.filter((e) => e.step === step);
  return entries.length ? entries[0] : null;  // the biggest group at that step comes first
}

function renderStepChoice() {
  const steps = [...new Set(room.tally.map((e) => e.step))];
  const select = $("tally-step");
  const current = Number(select.value) || 1;
  if (select.options.length !== steps.length) {
    select.replaceChildren(...steps.map((s) => {
      const option = el("option", null, "step " + s);
      option.value = s;
      return option;
    }));
  }
  select.value = steps.includes(current) && stepChosen ? current : (steps[0] || 1);
}

function pairFigure(labels, classShare, modelShare, classLabel, modelLabel) {
  return {
    data: [
      { type: "bar", name: classLabel, x: labels, y: classShare, marker: { color: CLASS_BLUE },
        text: classShare.map((v) => (v === null ? "" : v.toFixed(0) + "%")), textposition: "outside", cliponaxis: false,
        hovertemplate: "%{x}: %{y:.1f}%<extra>" + classLabel + "</extra>" },
      { type: "bar", name: modelLabel, x: labels, y: modelShare, marker: { color: MODEL_ORANGE },
        text: modelShare.map((v) => (v === null ? "" : v.toFixed(0) + "%")), textposition: "outside", cliponaxis: false,
        hovertemplate: "%{x}: %{y:.1f}%<extra>" + modelLabel + "</extra>" },
    ],
    layout: {
      font: FONT, barmode: "group", height: 420, margin: { l: 70, r: 20, t: 30, b: 90 },
      yaxis: { title: { text: "share (%)" }, rangemode: "tozero", fixedrange: true },
      xaxis: { fixedrange: true, tickangle: -30, type: "category" },
      legend: { orientation: "h", y: 1.12 },
    },
  };
}

async function renderTally(Plotly) {
  renderStepChoice();
  const step = Number($("tally-step").value) || 1;
  const entry = tallyEntry(step);
  $("tally-step-label").textContent = step;
  if (!entry) {
    $("tally-context").textContent = "";
    $("tally-note").textContent = "The tally appears once two students have run the room's prompt at temperature " +
      room.tally_temperature + ".";
    Plotly.purge($("chart-tally"));
    return;
  }
  $("tally-context").textContent = "Context: \u201c" + entry.context + "\u201d (" + room.tally_model + ")";
  const counts = new Map(entry.chosen.map((c) => [c.id, c.count]));
  const tokens = entry.model.slice(0, SHOWN_TOKENS);
  for (const c of entry.chosen) if (!tokens.some((t) => t.id === c.id)) tokens.push(entry.model.find((m) => m.id === c.id));
  const labels = tokens.map((t) => plain(visibleToken(t.token)));
  const fig = pairFigure(labels, tokens.map((t) => 100 * (counts.get(t.id) || 0) / entry.total),
    tokens.map((t) => 100 * t.prob), "class sampled (" + entry.total + " jobs)", "model predicted");
  await Plotly.react($("chart-tally"), fig.data, fig.layout, CONFIG);
  $("tally-note").textContent = entry.total + " jobs reached this context; their choices: " +
    entry.chosen.map((c) => visibleToken(c.token) + " \u00d7" + c.count).join(", ") + ".";
}

async function renderGuesses(Plotly) {
  const guesses = room.guesses;
  $("chart-guesses").hidden = !guesses.total;
  if (!guesses.total) {
    Plotly.purge($("chart-guesses"));
    return;
  }
  const labels = guesses.guessed.map((g) => plain(visibleToken(g.token)));
  const fig = pairFigure(labels, guesses.guessed.map((g) => 100 * g.count / guesses.total),
    guesses.guessed.map((g) => (g.prob === null ? 0 : 100 * g.prob)), "class guessed (" + guesses.total + ")",
    "model's probability");
  await Plotly.react($("chart-guesses"), fig.data, fig.layout, CONFIG);
  const outside = guesses.guessed.filter((g) => g.prob === null).reduce((n, g) => n + g.count, 0);
  $("guess-note").textContent = guesses.total + (guesses.total === 1 ? " guess; " : " guesses; ") + outside + " named a token outside the model's list. " +
    "Most likely token: " + (guesses.model.length ? visibleToken(guesses.model[0].token) + " " +
      percent(guesses.model[0].prob, 1) : "not known yet") + ".";
}

async function refresh() {
  try {
    room = await call("GET", "/api/rooms/" + code);
    renderState(room);
    renderStudents(room.jobs, room.students);
    showError($("room-error"), "");
    const Plotly = await loadPlotly(root.dataset.plotlySrc);
    await renderTally(Plotly);
    await renderGuesses(Plotly);
  } catch (err) {
    showError($("room-error"), "Could not refresh: " + err.message);
  }
  setTimeout(refresh, REFRESH_MS);
}

for (const input of root.querySelectorAll(".switches input")) {
  input.addEventListener("change", async () => {
    try {
      room = Object.assign(room || {}, await call("PATCH", "/api/rooms/" + code, { [input.dataset.field]: input.checked }));
      renderState(room);
    } catch (err) {
      input.checked = !input.checked;
      showError($("room-error"), "Could not change the room: " + err.message);
    }
  });
}
$("close-room").addEventListener("click", async () => {
  try {
    room = Object.assign(room || {}, await call("POST", "/api/rooms/" + code + "/close"));
    renderState(room);
  } catch (err) {
    showError($("room-error"), "Could not close the room: " + err.message);
  }
});
$("tally-step").addEventListener("change", () => {
  stepChosen = true;
  if (room) loadPlotly(root.dataset.plotlySrc).then(renderTally);
});
refresh();
