// A rough wait estimate for a queued job, from /api/health: how fast the model's workers step
// (two heartbeat samples) and how many jobs they run at once.
const REFRESH_MS = 3000;

export class WaitEstimator {
  constructor(model) {
    this.model = model;
    this.first = null;
    this.last = null;
    this.fetchedAt = 0;
  }

  /** Sample /api/health (at most every few seconds); errors just leave the estimate unknown. */
  async refresh() {
    if (Date.now() - this.fetchedAt < REFRESH_MS) return;
    this.fetchedAt = Date.now();
    try {
      const response = await fetch("/api/health", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const health = await response.json();
      const mine = health.workers.filter((w) => w.model === this.model);
      const sum = (key) => mine.reduce((total, w) => total + w[key], 0);
      this.last = { time: health.time, workers: mine.length, steps: sum("steps_total"),
        active: sum("active"), capacity: sum("capacity") };
      if (!this.first) this.first = this.last;
    } catch (err) {
      // the job poll reports connection problems; the estimate just stays unknown
    }
  }

  /** A sentence about the wait for a job at `position` needing `steps` steps. */
  describe(position, steps) {
    const now = this.last;
    if (!now) return "Estimating the wait…";
    if (!now.workers) return "No worker serving this model is online yet; the job starts when one connects.";
    const seconds = now.time - this.first.time;
    const rate = seconds > 0 ? (now.steps - this.first.steps) / seconds : 0;  // steps/s, all jobs together
    if (rate <= 0) return "Estimating the wait…";
    const perJob = rate / Math.max(now.active, 1);  // each running job advances one step per batched pass
    const rounds = Math.ceil(position / Math.max(now.capacity, 1));
    return "Roughly " + formatSeconds(rounds * steps / perJob) + " to wait (" + now.workers +
      " worker" + (now.workers === 1 ? "" : "s") + ", " + now.capacity + " jobs at a time).";
  }
}

function formatSeconds(seconds) {
  if (seconds < 90) return Math.max(1, Math.round(seconds)) + " s";
  return Math.round(seconds / 60) + " min";
}
