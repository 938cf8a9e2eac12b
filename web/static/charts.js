// Plotly charts of a job: the candidates of one step, and the chosen probability and entropy across steps.
// Plotly.js is served by the app (/vendor/plotly.min.js) and loaded asynchronously as the page opens,
// so the step cards never wait for it.
import { percent, visibleToken } from "./dom.js";

const CONFIG = { displayModeBar: false, responsive: true };
const FONT = { family: "system-ui, sans-serif", size: 13, color: "#1d1d1f" };
const BLUE = "#0b57d0";
const GREEN = "#137333";
const ORANGE = "#b06000";

let plotly = null;

export function loadPlotly(src) {
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error("Plotly.js could not be loaded"));
      document.head.appendChild(script);
    });
  }
  return plotly;
}

/** Plotly reads a few HTML-like tags in labels; model text must show as text. */
export function plain(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function candidateFigure(step) {
  const top = step.top;
  const labels = top.map((c) => plain(visibleToken(c.token)));
  return {
    data: [{
      type: "bar",
      orientation: "h",
      x: top.map((c) => c.prob * 100),
      y: top.map((_, i) => i),
      customdata: labels,
      text: top.map((c) => percent(c.prob)),  // as the cards show it
      textposition: "outside",
      cliponaxis: false,
      marker: { color: top.map((c) => (c.id === step.chosen.id ? GREEN : BLUE)) },
      hovertemplate: "%{customdata}: %{x:.2f}%<extra></extra>",
    }],
    layout: {
      font: FONT,
      height: Math.max(180, 60 + 24 * top.length),
      margin: { l: 90, r: 70, t: 10, b: 40 },  // room for a ">99.99%" label
      xaxis: { title: { text: "probability (%)" }, rangemode: "tozero", fixedrange: true },
      yaxis: { tickvals: top.map((_, i) => i), ticktext: labels, autorange: "reversed", fixedrange: true },
      showlegend: false,
    },
  };
}

function trendFigure(steps) {
  const x = steps.map((s) => s.index);
  const tokens = steps.map((s) => plain(visibleToken(s.chosen.token)));
  return {
    data: [
      {
        type: "scatter", mode: "lines+markers", name: "chosen token probability (%)",
        x, y: steps.map((s) => s.chosen.prob * 100), customdata: tokens,
        line: { color: BLUE }, hovertemplate: "step %{x}: %{customdata} %{y:.1f}%<extra></extra>",
      },
      {
        type: "scatter", mode: "lines+markers", name: "entropy (bits)", yaxis: "y2",
        x, y: steps.map((s) => s.entropy / Math.LN2),
        line: { color: ORANGE, dash: "dot" }, marker: { symbol: "diamond" },
        hovertemplate: "step %{x}: entropy %{y:.2f} bits<extra></extra>",
      },
    ],
    layout: {
      font: FONT,
      height: 300,
      margin: { l: 60, r: 60, t: 10, b: 80 },
      xaxis: { title: { text: "step" }, tickformat: "d", rangemode: "tozero", fixedrange: true },
      yaxis: { title: { text: "probability (%)" }, range: [0, 100], fixedrange: true },
      yaxis2: { title: { text: "entropy (bits)" }, overlaying: "y", side: "right", rangemode: "tozero",
        tickformat: ".1f", fixedrange: true },
      legend: { orientation: "h", y: -0.3 },
    },
  };
}

/**
 * The two charts of a job page. `update(steps)` redraws them (at most once per frame); the range input picks
 * the step in the candidate chart and follows the newest step until moved. Clicking a bar calls onBranch.
 */
export class JobCharts {
  constructor(ids, plotlySrc, onBranch) {
    this.candidates = document.getElementById(ids.candidates);
    this.trend = document.getElementById(ids.trend);
    this.slider = document.getElementById(ids.slider);
    this.label = document.getElementById(ids.label);
    this.note = document.getElementById(ids.note);
    this.src = plotlySrc;
    this.onBranch = onBranch;
    this.clickBound = false;  // the bar-click handler is bound once, on the first plot
    this.steps = [];
    this.follow = true;
    this.queued = false;
    loadPlotly(plotlySrc).catch(() => {});  // start early; render() reports a failure
    this.slider.addEventListener("input", () => {
      this.follow = Number(this.slider.value) === this.steps.length;
      this.draw();
    });
  }

  update(steps) {
    this.steps = steps;
    if (!steps.length) return;
    this.slider.disabled = steps.length < 2;
    this.slider.max = steps.length;
    if (this.follow) this.slider.value = steps.length;
    this.draw();
  }

  draw() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => {
      this.queued = false;
      this.render().catch((err) => {
        this.note.textContent = "Charts unavailable: " + err.message;
        this.candidates.closest(".chart-grid").hidden = true;
      });
    });
  }

  async render() {
    const Plotly = await loadPlotly(this.src);
    const step = this.steps[Number(this.slider.value) - 1];
    this.label.textContent = step.index;
    this.slider.setAttribute("aria-valuetext", "step " + step.index);
    const bars = candidateFigure(step);
    await Plotly.react(this.candidates, bars.data, bars.layout, CONFIG);
    const trend = trendFigure(this.steps);
    await Plotly.react(this.trend, trend.data, trend.layout, CONFIG);
    if (!this.clickBound && this.onBranch) {
      this.clickBound = true;
      this.candidates.on("plotly_click", (event) => this.clicked(event));
    }
  }

  clicked(event) {
    const step = this.steps[Number(this.slider.value) - 1];
    const cand = step.top[event.points[0].pointIndex];
    if (cand && cand.id !== step.chosen.id) this.onBranch(step, cand, null);
  }
}
