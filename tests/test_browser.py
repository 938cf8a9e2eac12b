"""End to end in Debian's Chromium (Playwright, headless) against the live stack: what a student sees.

Screenshots go to artifacts/screenshots/; the finished-job one is also copied to docs/screenshot.png (the README's)
when that is missing, or always with UPDATE_README_SCREENSHOT=1.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from contract.settings import PROJECT_ROOT
from worker.scoring import score_tokens

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
README_SHOT = PROJECT_ROOT / "docs" / "screenshot.png"
XSS = "<img src=x onerror=alert(1)>"
LONG_JOB = 200  # steps (the maximum): on the paced worker at least 10 s, so the page polls many times while it runs
expect.set_options(timeout=20_000)  # Plotly.js takes the main thread for a moment on a busy 2-core machine

# Counts the step cards each time the list changes, from before the page's own script runs.
COUNT_CARDS = """
window.__cardCounts = [];
new MutationObserver(() => {
  const n = document.querySelectorAll("#steps > li").length, seen = window.__cardCounts;
  if (n && seen[seen.length - 1] !== n) seen.push(n);
}).observe(document, { childList: true, subtree: true });
"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (`make system-deps` installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, stack):
    """A fresh browser session (its own cookie, so its own jobs) on `stack`; script errors are collected."""
    context = browser.new_context(base_url=stack.url, viewport={"width": 1200, "height": 900})
    context.add_init_script(COUNT_CARDS)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


@pytest.fixture
def page(browser, live_stack):
    """A page on the live stack; fails the test on any script error."""
    context, page, errors = open_page(browser, live_stack)
    yield page
    context.close()
    assert errors == []


@pytest.fixture
def paced_page(browser, paced_stack):
    """A page on the paced stack (a worker that pauses after each step), for watching progress."""
    context, page, errors = open_page(browser, paced_stack)
    yield page
    context.close()
    assert errors == []


def shoot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def submit(page, prompt: str, steps: int, top_k: int, temperature: float = 0, screenshot: str | None = None,
           before_generate=lambda: None) -> str:
    """Fill the form, call `before_generate`, press Generate, land on the job page; returns the job id."""
    page.goto("/")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Steps (tokens to add)").fill(str(steps))
    page.get_by_label("Candidates shown (top-k)").fill(str(top_k))
    page.get_by_label("Temperature", exact=True).fill(str(temperature))
    if screenshot:
        shoot(page, screenshot)
    before_generate()
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url(re.compile(r"/jobs/[\w-]{22}$"), wait_until="domcontentloaded")
    return page.url.rsplit("/", 1)[1]


def wait_finished(page) -> None:
    page.wait_for_selector("#final:not([hidden])", timeout=90_000)


def api_job(live_stack, job_id: str) -> dict:
    return requests.get(f"{live_stack.url}/api/jobs/{job_id}", timeout=10).json()


def test_cards_arrive_one_by_one_with_k_bars_charts_and_the_final_text(paced_page, paced_stack):
    page = paced_page
    page.set_viewport_size({"width": 1100, "height": 1500})  # the running screenshot shows the first cards
    # Hold the job page's Plotly.js until the running page is captured: its start-up can take a busy
    # machine's page for seconds. (The form page's prefetch of it goes through.)
    held = []
    page.route("**/vendor/plotly.min.js",
               lambda route: held.append(route) if route.request.resource_type == "script" else route.continue_())
    job_id = submit(page, "Once upon a time", steps=LONG_JOB, top_k=4, screenshot="form")
    page.wait_for_selector("#steps > li:nth-child(3)")
    # the worker pauses after each step, so the job cannot be over yet, however fast this machine is
    seen = api_job(paced_stack, job_id)
    assert seen["status"] == "running" and seen["steps_done"] < LONG_JOB, seen["steps_done"]
    shoot(page, "running-job")
    for route in held:
        route.continue_()
    wait_finished(page)

    counts = page.evaluate("window.__cardCounts")
    assert counts == sorted(counts) and counts[-1] == LONG_JOB
    assert len([n for n in counts if 0 < n < LONG_JOB]) >= 2, f"cards did not arrive progressively: {counts}"
    bars = page.eval_on_selector_all("#steps > li", "cards => cards.map(c => c.querySelectorAll('.bar').length)")
    assert bars == [4] * LONG_JOB
    assert page.locator("#step-1 .candidate.chosen .mark").inner_text() == "✓ chosen"

    page.wait_for_selector("#chart-candidates .main-svg")
    assert page.locator("#chart-candidates .point").count() == 4
    assert page.locator("#chart-trend .scatterlayer .trace").count() == 2

    job = api_job(paced_stack, job_id)
    assert job["status"] == "done"
    assert page.text_content("#final-text") == job["text"]
    assert page.locator("#chips .chip").count() == LONG_JOB
    assert page.text_content("#progress-text") == f"step {LONG_JOB} of {LONG_JOB}"


def test_a_clicked_candidate_starts_a_branch_job(page, live_stack):
    parent = submit(page, "The cat sat", steps=6, top_k=5)
    wait_finished(page)
    page.wait_for_selector("#chart-trend .main-svg")
    page.set_viewport_size({"width": 1100, "height": 1500})  # title, tokens, charts and the first step
    page.evaluate("window.scrollTo(0, 0)")
    shot = shoot(page, "finished-job")
    if not README_SHOT.exists() or os.environ.get("UPDATE_README_SCREENSHOT") == "1":  # committed: no churn
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SHOT)
    assert shot.stat().st_size < 300_000

    candidate = page.locator("#step-2 button.cand-body").first  # rank 2: the model chose rank 1 (greedy)
    forced = int(candidate.get_attribute("data-token-id"))
    candidate.click()
    page.wait_for_url(re.compile(r"/jobs/(?!" + parent + r")[\w-]{22}$"))
    child = page.url.rsplit("/", 1)[1]

    breadcrumb = page.locator("#breadcrumb")
    assert "at step 2" in breadcrumb.inner_text() and f"job {parent}" in breadcrumb.inner_text()
    assert breadcrumb.get_by_role("link").get_attribute("href") == f"/jobs/{parent}#step-2"
    first_choice = api_job(live_stack, parent)["steps"][0]["chosen"]["id"]
    job = api_job(live_stack, child)
    assert job["branch"] == {"parent": parent, "step": 2}
    assert job["forced_ids"] == [first_choice, forced] and job["steps_total"] == 4
    wait_finished(page)
    assert page.locator("#prompt-tokens .forced").count() == 2
    shoot(page, "branch-job")


def test_markup_in_the_prompt_is_inert_text(page, live_stack):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    job_id = submit(page, XSS, steps=3, top_k=3)
    wait_finished(page)
    assert page.text_content("#prompt") == XSS
    assert page.text_content("#step-1 .ctx-prompt") == XSS
    assert page.text_content("#final-text") == api_job(live_stack, job_id)["text"]
    assert page.locator("img").count() == 0 and dialogs == []


def test_the_owner_can_cancel_and_nobody_else_sees_the_button(page, browser, live_stack):
    page.route("**/vendor/plotly.min.js", lambda route: route.abort())  # no charts: the page must cope
    worker = live_stack.workers["w1"]
    # the tiny model would finish before the click: the worker is stopped to keep the job queued, only just
    # before Generate, as the web takes no job for a model whose workers have been silent for 3 s
    try:
        job_id = submit(page, "A long story", steps=200, top_k=2,
                        before_generate=lambda: os.killpg(worker.pid, signal.SIGSTOP))
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#status")).to_have_text("Cancelled")
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    assert page.locator("#cancel").is_hidden()
    assert api_job(live_stack, job_id)["status"] == "cancelled"
    assert page.request.get(f"/api/jobs/{job_id}").json()["mine"] is True
    submit(page, "The cat sat", steps=2, top_k=2)  # a job with steps, still without Plotly
    wait_finished(page)
    expect(page.locator("#charts-note")).to_have_text("Charts unavailable: Plotly.js could not be loaded")
    assert page.locator("#charts .chart-grid").is_hidden()

    other = browser.new_context(base_url=live_stack.url)
    other_page = other.new_page()
    other_page.goto(f"/jobs/{job_id}")
    expect(other_page.locator("#status")).to_have_text("Cancelled")
    assert other_page.locator("#cancel").is_hidden()
    assert other_page.request.get(f"/api/jobs/{job_id}").json()["mine"] is False
    other.close()


def test_temperatures_run_side_by_side(page):
    page.goto("/")
    page.get_by_label("Prompt", exact=True).fill("The dog")
    page.get_by_label("Steps (tokens to add)").fill("3")
    page.get_by_label("Candidates shown (top-k)").fill("3")
    page.get_by_label("Temperatures (same prompt").fill("0, 1.5")
    page.locator("summary", has_text="More options").click()
    page.get_by_label("Seed (same seed").fill("0")  # a sampled column could otherwise end early, at end-of-text
    page.get_by_role("button", name="Compare temperatures").click()
    page.wait_for_url(re.compile(r"/compare\?jobs="))
    expect(page.locator(".col-status")).to_have_text([re.compile("^done")] * 2, timeout=30_000)
    # the status is rendered by the server too: jobs done before the page loaded read "done" before the
    # first poll's answer has filled the table, so the table is waited for, not read at once
    expect(page.locator("#compare-table tbody tr")).to_have_count(4)  # the text row, then one row per step
    expect(page.locator("#compare-table tbody td .candidates")).to_have_count(2 * 3)
    shoot(page, "compare")
    page.set_viewport_size({"width": 700, "height": 900})  # each column at its narrowest
    tracks = page.eval_on_selector_all("#compare-table td .candidate.chosen .bar-track",
                                       "ts => ts.map(t => t.getBoundingClientRect().width)")
    assert min(tracks) >= 20, tracks  # the chosen token's bar once shrank to 1 px beside its "✓ chosen" mark
    page.set_viewport_size({"width": 360, "height": 800})
    assert page.eval_on_selector("#compare-table thead th", "th => th.getBoundingClientRect().width") < 80  # was 240


def test_teacher_dashboard_lists_workers(page, live_stack):
    page.goto("/dashboard")
    page.get_by_label("Dashboard token").fill(live_stack.settings.dashboard_token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/dashboard$"))  # signed in by a form POST: no token in any address
    page.wait_for_selector("#workers tr")
    assert live_stack.settings.model_name.rsplit("/", 1)[1] in page.text_content("#workers")
    shoot(page, "dashboard")


def test_a_double_clicked_guess_counts_once_and_the_next_step_is_asked(page):
    submit(page, "The cat sat", steps=4, top_k=5)
    page.goto(page.url + "?guess=1")
    page.wait_for_selector("#guess-options .chip")
    page.locator("#guess-options .chip").first.dblclick()
    for index in (2, 3, 4):  # each step is asked in turn: none is shown twice, none skipped
        expect(page.locator("#guess-question")).to_contain_text(f"Step {index}:")
        page.locator("#guess-options .chip").first.click()
    wait_finished(page)
    assert page.eval_on_selector_all("#steps > li", "cards => cards.map(c => c.id)") == [
        "step-1", "step-2", "step-3", "step-4"]
    expect(page.locator("#guess-score")).to_contain_text("after 4 guesses")
    expect(page.locator("#guess-question")).to_contain_text("All 4 steps guessed. Final score:")  # not "waiting"
    expect(page.locator("#guess-form")).to_be_hidden()


def test_a_reloaded_guess_page_goes_on_from_the_next_step_with_its_score(page):
    submit(page, "The cat sat", steps=4, top_k=5)
    page.goto(page.url + "?guess=1")
    for index in (1, 2):
        expect(page.locator("#guess-question")).to_contain_text(f"Step {index}:")
        page.locator("#guess-options .chip").first.click()
    expect(page.locator("#guess-question")).to_contain_text("Step 3:")
    score = page.text_content("#guess-score")
    page.reload()
    expect(page.locator("#guess-question")).to_contain_text("Step 3:")  # not step 1 again
    expect(page.locator("#guess-score")).to_have_text(score)
    assert page.eval_on_selector_all("#steps > li", "cards => cards.map(c => c.id)") == ["step-1", "step-2"]


def test_guessing_from_the_keyboard_keeps_the_focus_in_the_guess_box(page):
    submit(page, "The cat sat", steps=3, top_k=5)
    page.goto(page.url + "?guess=1")
    page.wait_for_selector("#guess-options .chip")
    page.get_by_label("Your guess").focus()
    page.keyboard.type("on")
    page.keyboard.press("Enter")
    expect(page.locator("#guess-question")).to_contain_text("Step 2:")
    expect(page.locator("#guess-input")).to_be_focused()
    page.locator("#guess-options .chip").first.focus()  # a candidate picked with the keyboard
    page.keyboard.press("Enter")
    expect(page.locator("#guess-question")).to_contain_text("Step 3:")
    expect(page.locator("#guess-input")).to_be_focused()
    page.keyboard.type("the")
    page.keyboard.press("Enter")
    wait_finished(page)
    # the game ends: focus goes to the (live) question that says so, never dropped on <body> with the input
    expect(page.locator("#guess-question")).to_contain_text("All 3 steps guessed")
    expect(page.locator("#guess-question")).to_be_focused()
    assert page.get_attribute("#guess-question", "aria-live") == "polite"


def test_the_job_page_says_when_the_api_fails_and_recovers_when_it_answers_again(paced_page):
    page = paced_page
    job_id = submit(page, "Once upon a time", steps=LONG_JOB, top_k=3)
    page.wait_for_selector("#steps > li:nth-child(3)")
    failing = f"**/api/jobs/{job_id}?*"
    page.route(failing, lambda route: route.fulfill(
        status=503, content_type="application/json", headers={"Retry-After": "1"},
        body='{"error": {"code": "unavailable", "field": null, "message": "the job store is unreachable"}}'))
    expect(page.locator("#poll-error")).to_contain_text("the job store is unreachable")
    expect(page.locator("#poll-error")).to_contain_text("retrying")
    page.unroute(failing)
    expect(page.locator("#poll-error")).to_be_hidden()
    shown = page.locator("#steps > li").count()
    expect(page.locator(f"#steps > li:nth-child({shown + 1})")).to_be_attached()  # steps arrive again
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#status")).to_have_text("Cancelled")


def test_a_compared_column_that_ends_early_shows_it_ended_not_pending_cells(paced_page, paced_stack):
    page = paced_page
    page.goto("/")
    page.get_by_label("Prompt", exact=True).fill("The dog")
    page.get_by_label("Steps (tokens to add)").fill(str(LONG_JOB))
    page.get_by_label("Temperatures (same prompt").fill("0, 1")
    page.locator("summary", has_text="More options").click()
    page.get_by_label("Seed (same seed").fill("0")  # the tiny model samples no end-of-text token in 200 steps
    page.get_by_role("button", name="Compare temperatures").click()
    page.wait_for_url(re.compile(r"/compare\?jobs="))
    first, second = page.locator(".col-status").evaluate_all("hs => hs.map(h => h.closest('th').dataset.jobId)")
    assert api_job(paced_stack, second)["params"]["seed"] == 0
    rows = "n => document.querySelectorAll('#compare-table tbody tr').length >= n"  # the text row, then the steps
    page.wait_for_function(rows, arg=4)
    assert page.request.delete(f"/api/jobs/{second}").ok
    expect(page.locator(".col-status").nth(1)).to_contain_text("cancelled")
    # a screen reader hears each column's end once, not every step of every column
    expect(page.locator("#compare-announce")).to_contain_text("Temperature 1: cancelled")
    assert page.locator("#compare-table [role=status], #compare-table [aria-live]").count() == 0
    stopped = api_job(paced_stack, second)["steps_done"]
    page.wait_for_function(rows, arg=stopped + 4)  # the first column goes on (the paced worker needs 10 s for all)
    assert page.request.delete(f"/api/jobs/{first}").ok
    expect(page.locator(".col-status").first).to_contain_text(re.compile("^(cancelled|done)"))
    expect(page.locator("#compare-table td.pending")).to_have_count(0)
    assert page.locator("#compare-table td.ended").count() >= 3
    expect(page.locator(".col-status").nth(1)).to_contain_text("Cancelled before the last step")


def test_each_cards_contexts_are_the_exact_text_even_where_a_character_spans_tokens(page):
    page.goto("/")
    page.get_by_label("Text to score").fill("café ☕ ok")
    page.get_by_role("button", name="Score this text").click()
    page.wait_for_url(re.compile(r"/jobs/[\w-]{22}$"))
    wait_finished(page)
    job = page.request.get("/api/jobs/" + page.url.rsplit("/", 1)[1]).json()
    contexts = [s["context"] for s in job["steps"]]
    assert any("é" in c for c in contexts) and any("☕" in c for c in contexts)  # characters cut across tokens
    shown = page.eval_on_selector_all("#steps > li", "cards => cards.map(c => Array.from("
                                      "c.querySelectorAll('.context'), p => p.textContent))")
    start = "(start of text: nothing yet)"  # a scored text's first token is predicted from nothing
    assert [current for current, _ in shown] == ["Current context: " + (c or start) for c in contexts]
    assert [new for _, new in shown] == ["New context: " + c for c in contexts[1:] + [job["text"]]]
    # a scored text: no sampling, no branching, nothing "requested"
    expect(page.locator("#finish-reason")).to_have_text("Scored every token of the text.")
    assert "scoring a given text" in page.text_content("#params") and "greedy" not in page.text_content("#params")
    expect(page.locator("#branch-hint")).to_be_hidden()


def test_each_card_says_which_probabilities_its_bars_show_and_greys_what_top_p_rules_out(page):
    """Cards said nothing of temperature (at T = 0.7 a bar read 27.34% where the model gives 25.64%), drew bars
    like any other for tokens top-p can never pick, and gave entropy in nats beside surprisal in bits."""
    page.goto("/")
    cards = page.evaluate("""async () => {
      const { stepCard } = await import("/static/steps.js");
      const step = { index: 1, context: "The cat", entropy: Math.LN2 * 1.5,
        top: [{ id: 1, token: " on", prob: 0.4 }, { id: 2, token: " near", prob: 0.35 },
              { id: 3, token: " up", prob: 0.2 }, { id: 4, token: " by", prob: 0.05 }],
        chosen: { id: 2, token: " near", prob: 0.35, rank: 2 } };
      const card = (options, forced = false) => {
        const node = stepCard({ ...step, forced }, "The cat", null, null, options);
        return { caption: node.querySelector(".caption").textContent,
                 excluded: Array.from(node.querySelectorAll(".candidate.excluded .token"), (t) => t.textContent) };
      };
      const branching = stepCard(step, "The cat", null, null, { temperature: 0.7, topP: 0.7, onBranch: () => {} });
      const said = Array.from(branching.querySelectorAll(".candidate.excluded button"), (b) => b.ariaLabel);
      return { said, greedy: card({ temperature: 0, topP: 0.5 }), cut: card({ temperature: 0.7, topP: 0.7 }),
               flat: card({ temperature: 1.5, topP: 1 }), scored: card({ temperature: 0, topP: 1 }, true),
               scoredHot: card({ temperature: 2, topP: 1 }, true) };
    }""")
    said = cards.pop("said")  # what a screen reader hears on a greyed candidate, focused to branch from it
    assert len(said) == 2 and all("outside top-p: the sampler could not pick it" in s for s in said)
    greedy, cut, flat = cards["greedy"], cards["cut"], cards["flat"]
    assert "the model's probabilities" in greedy["caption"] and greedy["excluded"] == []  # greedy ignores top-p
    assert "temperature 0.7: softmax(logits / 0.7), sharper" in cut["caption"] and "70% of the probability" in cut["caption"]
    assert cut["excluded"] == ["␣up", "␣by"]  # " on" and " near" already hold 75% >= 70%
    assert "flatter" in flat["caption"] and flat["excluded"] == []
    assert "the model's probabilities" in cards["scored"]["caption"]  # a scored text's own token, no sampling
    assert "at temperature 2: softmax(logits / 2)" in cards["scoredHot"]["caption"]
    assert all("entropy 1.50 bits" in c["caption"] for c in cards.values())


def test_a_scored_text_cut_at_its_step_limit_says_how_much_was_scored(page, live_stack, tiny_engine):
    text = "The cat sat on the mat and looked at the dog."
    job_id = requests.post(f"{live_stack.url}/api/jobs", timeout=10, json={"score": text, "steps": 2}).json()["id"]
    page.goto(f"/jobs/{job_id}")
    wait_finished(page)
    tokens = api_job(live_stack, job_id)["score_tokens"]  # the text's tokens a job can score, as the worker read them
    assert tokens == len(score_tokens(tiny_engine, "", text)[1]) > 2
    expect(page.locator("#finish-reason")).to_have_text(
        f"Scored the first 2 of the text's {tokens} tokens: the job was given 2 steps.")


def test_percentages_never_round_to_a_certainty_or_an_impossibility(page):
    page.goto("/")
    shown = page.evaluate("""async () => {
      const { percent } = await import("/static/dom.js");
      const { choiceText } = await import("/static/steps.js");
      const chose = (prob) => choiceText({ chosen: { token: " a", prob, rank: 1 } }, 0);
      return [percent(0.999964), percent(0.00001), percent(1), percent(0), percent(0.4213), percent(0.99971, 1),
              chose(0.999964), chose(0.00001)];
    }""")
    assert shown[:6] == [">99.99%", "<0.01%", "100.00%", "0.00%", "42.13%", ">99.9%"]
    assert "probability >0.9999 (>99.99%)" in shown[6] and "probability <0.0001 (<0.01%)" in shown[7]


def test_a_job_page_at_a_temperature_with_top_p_says_so_on_its_cards(page, live_stack):
    job_id = requests.post(f"{live_stack.url}/api/jobs", timeout=10, json={
        "prompt": "The cat sat", "steps": 2, "top_k": 5, "temperature": 0.8, "top_p": 0.9, "seed": 0}).json()["id"]
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#step-2 .caption")).to_contain_text("at temperature 0.8: softmax(logits / 0.8)")
    expect(page.locator("#step-2 .caption")).to_contain_text("90% of the probability (top-p)")


def test_a_prompt_with_one_long_word_fits_a_phone_screen(browser, live_stack):
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        submit(page, "https://example.org/" + "a" * 60, steps=2, top_k=3)
        wait_finished(page)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    finally:
        context.close()


def test_the_wait_estimate_follows_each_workers_own_rate(page):
    """The rate summed every live worker's lifetime step count and divided by the time since the first sample:
    a worker that joined added its whole history at once (the estimate fell tenfold and stayed there), and a
    restarted one (its count back to 0) made the rate negative."""
    page.goto("/")
    said = page.evaluate("""async () => {
      const { WaitEstimator } = await import("/static/wait.js");
      const worker = (name, steps) => ({ name, model: "m", steps_total: steps, active: 32, capacity: 32 });
      const samples = [
        { time: 0, workers: [worker("a", 100000)] },
        { time: 10, workers: [worker("a", 100320)] },  // 32 steps/s
        { time: 20, workers: [worker("a", 100640), worker("b", 500000)] },  // b joins with its history
        { time: 30, workers: [worker("a", 100960), worker("b", 500320)] },
        { time: 40, workers: [worker("a", 101280), worker("b", 0)] },  // b restarted
        { time: 50, workers: [worker("a", 101600), worker("b", 320)] },
      ];
      window.fetch = async () => ({ ok: true, json: async () => samples.shift() });
      const estimate = new WaitEstimator("m");
      const out = [];
      while (samples.length) {
        estimate.fetchedAt = 0;
        await estimate.refresh();
        out.push(estimate.describe(64, 20));
      }
      return out;
    }""")
    assert said[1].startswith("Roughly 40 s to wait (1 worker")  # 2 rounds of 32 jobs, 20 steps at 1 step/s each
    assert said[3].startswith("Roughly 20 s to wait (2 workers")  # one round of 64 jobs at the same speed
    assert said[4].startswith("Roughly 40 s to wait (2 workers")  # b restarted: only a's rate is known yet
    assert said[5].startswith("Roughly 20 s to wait (2 workers")
