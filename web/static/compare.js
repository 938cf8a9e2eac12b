// Temperature comparison: one column per job, one row per step, filled as each job's steps arrive.
import { FINISH, TERMINAL, el, percent, visibleToken } from "./dom.js";
import { followJob } from "./poller.js";
import { candidateList } from "./steps.js";

const SHOWN = 5;  // candidates per cell
const table = document.getElementById("compare-table");
const body = table.tBodies[0];
const headers = Array.from(table.tHead.rows[0].cells).slice(1);
const textCells = Array.from(body.rows[0].cells).slice(1);
const rows = [];
const ended = new Set();  // columns whose job is over: their cells past its last step say so

function emptyCell(column) {
  return ended.has(column) ? el("td", "ended", "—") : el("td", "pending", "…");
}

function row(index) {
  while (rows.length < index) {
    const tr = document.createElement("tr");
    const th = el("th", null, String(rows.length + 1));
    th.scope = "row";
    tr.appendChild(th);
    headers.forEach((_, column) => tr.appendChild(emptyCell(column)));
    body.appendChild(tr);
    rows.push(tr);
  }
  return rows[index - 1];
}

/** A column's job is over: its pending cells will never fill. */
function end(column) {
  ended.add(column);
  for (const tr of rows) {
    const td = tr.cells[column + 1];
    if (td.classList.contains("pending")) tr.replaceChild(emptyCell(column), td);
  }
}

function cell(step, params) {
  const temperature = params.temperature;
  const td = el("td");
  const chosen = el("p", "cell-choice");
  chosen.appendChild(el("span", "chip-static", visibleToken(step.chosen.token)));
  chosen.appendChild(document.createTextNode(" " + percent(step.chosen.prob) +
    (temperature > 0 ? " · rank " + step.chosen.rank : "")));
  td.appendChild(chosen);
  td.appendChild(candidateList(step, { limit: SHOWN, sampling: temperature > 0, topP: params.top_p }));
  return td;
}

headers.forEach((header, column) => {
  const status = header.querySelector(".col-status");
  let progress = status.textContent;
  followJob(header.dataset.jobId, (job, fresh, all) => {
    const over = TERMINAL.includes(job.status);
    progress = job.status + " · step " + job.steps_done + " of " + job.steps_total;
    if (over && job.steps_done < job.steps_total) progress += " · " + (job.error || FINISH[job.finish_reason] || "");
    status.textContent = progress;
    for (const step of fresh) {
      const tr = row(step.index);
      tr.replaceChild(cell(step, job.params), tr.cells[column + 1]);
    }
    if (over && !ended.has(column)) {  // a column's end is announced once; its every step would be too many
      document.getElementById("compare-announce").textContent =
        header.querySelector(".temp").textContent + ": " + progress;
    }
    if (over) end(column);
    const last = all[all.length - 1];
    textCells[column].textContent = over || !last ? job.text || job.prompt : last.context + last.chosen.token;
  }, () => { status.textContent = "expired"; },
  (trouble) => { status.textContent = trouble ? progress + " · " + trouble : progress; });
});
