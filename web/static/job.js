// Live job page: polls /api/jobs/<id>?since=N and renders each new step as a card.
// Model output is untrusted: it is only ever inserted with textContent.
"use strict";

(function () {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const list = document.getElementById("steps");
  let since = 0;
  let delay = 300;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function visible(token) {
    return token.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5");
  }

  function renderStep(step) {
    const card = el("li", "step");
    card.dataset.index = step.index;
    card.appendChild(el("h3", null, "STEP " + step.index));
    const ctx = el("p", "context");
    ctx.appendChild(el("span", "label", "Current context: "));
    ctx.appendChild(el("span", null, step.context));
    card.appendChild(ctx);
    const ul = el("ul", "candidates");
    for (const cand of step.top) {
      const li = el("li", "candidate" + (cand.id === step.chosen.id ? " chosen" : ""));
      li.appendChild(el("span", "token", visible(cand.token)));
      const bar = el("span", "bar");
      bar.style.width = Math.max(cand.prob * 100, 0.5) + "%";
      li.appendChild(bar);
      li.appendChild(el("span", "pct", (cand.prob * 100).toFixed(2) + "%"));
      ul.appendChild(li);
    }
    card.appendChild(ul);
    card.appendChild(el("p", "selected", "Selected: \"" + step.chosen.token + "\" (probability " +
      step.chosen.prob.toFixed(4) + ")"));
    const next = el("p", "context");
    next.appendChild(el("span", "label", "New context: "));
    next.appendChild(el("span", null, step.context));
    next.appendChild(el("span", "new-token", step.chosen.token));
    card.appendChild(next);
    list.appendChild(card);
  }

  function update(job) {
    job.steps.forEach(renderStep);
    if (job.steps.length) since = job.steps[job.steps.length - 1].index;
    const total = job.steps_total || 1;
    document.getElementById("progress-bar").style.width = (100 * job.steps_done / total) + "%";
    document.getElementById("progress-text").textContent = "step " + job.steps_done + " of " + job.steps_total;
    let status = job.status;
    if (job.status === "queued" && job.queue_position) status += " (position " + job.queue_position + ")";
    if (job.error) status += ": " + job.error;
    document.getElementById("status").textContent = status;
    if (["done", "failed", "cancelled"].includes(job.status)) {
      const final = document.getElementById("final");
      document.getElementById("final-text").textContent = job.text;
      final.hidden = false;
      return true;
    }
    return false;
  }

  async function poll() {
    try {
      const response = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "?since=" + since,
        { headers: { Accept: "application/json" } });
      if (response.ok) {
        delay = 300;
        if (update(await response.json())) return;
      } else if (response.status === 404) {
        document.getElementById("status").textContent = "This job does not exist or has expired.";
        return;
      } else {
        delay = Math.min(delay * 2, 5000);
      }
    } catch (err) {
      delay = Math.min(delay * 2, 5000);
    }
    setTimeout(poll, delay);
  }

  poll();
})();
