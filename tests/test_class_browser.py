"""A lesson in Debian's Chromium (Playwright, headless), each person in their own browser context, against the
live stack: a teacher opens a room, students join by code, the projector shows their jobs and the tally live;
guess mode scores a guess; the score view colours tokens by rank. Any page script error fails the test.
Screenshots go to artifacts/screenshots/ (and docs/ with UPDATE_README_SCREENSHOT=1)."""
from __future__ import annotations

import os
import re
import shutil

import pytest
import requests
from playwright.sync_api import expect

from contract.settings import PROJECT_ROOT
from tests.test_browser import SHOTS, browser  # noqa: F401 (the browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.integration]
DOCS = PROJECT_ROOT / "docs"
BANDS = ((10, "top10"), (100, "top100"), (1000, "top1000"))


@pytest.fixture
def people(browser, live_stack):  # noqa: F811
    """open(width=...) gives a new person: their own context (cookies); script errors fail the test."""
    contexts, errors = [], []

    def open_page(width: int = 1280, height: int = 900):
        context = browser.new_context(base_url=live_stack.url, viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


def shoot(page, name: str, readme: bool = False, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)
    if readme and (os.environ.get("UPDATE_README_SCREENSHOT") == "1" or not (DOCS / f"{name}.png").exists()):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(SHOTS / f"{name}.png", DOCS / f"{name}.png")


def band(rank: int) -> str:
    return next((name for limit, name in BANDS if rank <= limit), "beyond")


def sign_in(page, token: str) -> None:
    """Sign a teacher in through the dashboard's form (the token never travels in an address)."""
    page.goto("/dashboard")
    page.get_by_label("Dashboard token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/dashboard$"))


def test_a_class_joins_by_code_and_the_projector_shows_jobs_tally_and_guesses(people, live_stack):
    teacher = people(1600, 1000)
    sign_in(teacher, live_stack.settings.dashboard_token)
    teacher.goto("/rooms")
    teacher.get_by_label("Title (shown to students)").fill("Year 9 · next token")
    teacher.get_by_label("Prompt", exact=True).fill("The cat sat")
    teacher.get_by_label("Steps", exact=True).fill("3")
    teacher.get_by_label("Temperature", exact=True).fill("1")
    teacher.get_by_role("button", name="Open the room").click()
    teacher.wait_for_url(re.compile(r"/rooms/[A-Z2-9]{6}$"))
    code = teacher.text_content("#join-code")
    assert re.fullmatch(r"[A-HJ-KM-NP-Z2-9]{6}", code)
    expect(teacher.locator("#qr")).to_be_visible()

    for name in ("Ada", "Bo", "Cy"):
        student = people(390, 844)  # phones
        student.goto("/")
        student.goto(f"/r/{code.lower()}")
        expect(student.locator("#room-title")).to_have_text("Year 9 · next token")
        assert student.get_by_label("Prompt", exact=True).get_attribute("readonly") is not None  # same prompt for everyone
        student.get_by_label("Nickname (at most 24 characters)").fill(name)
        student.get_by_role("button", name="Generate").click()
        student.wait_for_url(re.compile(r"/jobs/[\w-]{22}$"))
        expect(student.locator("#room-name")).to_have_text("Year 9 · next token")
        student.wait_for_selector("#final:not([hidden])")

    expect(teacher.locator("#students .student")).to_have_count(3)
    expect(teacher.locator("#students .nickname")).to_have_text(["Ada", "Bo", "Cy"])
    expect(teacher.locator("#students .student-status")).to_have_text([re.compile("^done")] * 3)
    teacher.wait_for_selector("#chart-tally .main-svg")
    expect(teacher.locator("#chart-tally .trace.bars")).to_have_count(2)  # class sampled, model predicted
    room = requests.get(f"{live_stack.url}/api/rooms/{code}", headers={"X-Dashboard-Token":
                        live_stack.settings.dashboard_token}, timeout=10).json()
    assert room["tally"][0]["total"] == 3
    expect(teacher.locator("#tally-note")).to_contain_text("3 jobs reached this context")
    expect(teacher.locator("#student-count")).to_have_text("3 students, 3 jobs")

    guesser = people(1280, 900)  # guess mode: steps stay hidden until guessed
    guesser.goto(f"/r/{code}")
    guesser.get_by_label("Nickname (at most 24 characters)").fill("Di")
    guesser.get_by_label("Guess each next token before it is shown").check()
    guesser.get_by_role("button", name="Generate").click()
    guesser.wait_for_url(re.compile(r"/jobs/[\w-]{22}\?guess=1$"))
    guesser.wait_for_selector("#guess-options .chip")
    assert guesser.locator("#steps > li").count() == 0
    guesser.locator("#guess-options .chip").first.click()
    expect(guesser.locator("#guess-result")).to_have_text(
        re.compile(r"^Step 1: you said “.+”: the model gave it \d+\.\d% \(rank \d+\)\."))
    expect(guesser.locator("#steps > li")).to_have_count(1)
    expect(guesser.locator("#guess-score")).to_contain_text("after 1 guess")
    guesser.wait_for_selector("#guess-options .chip")
    guesser.get_by_label("Your guess").fill("qqqqq")
    guesser.get_by_role("button", name="Guess", exact=True).click()
    expect(guesser.locator("#guess-result")).to_have_text(re.compile(r"^Step 2: you said “qqqqq”: not in the model's top 10\."))
    expect(guesser.locator("#steps > li")).to_have_count(2)
    guesser.locator("#guess-panel").scroll_into_view_if_needed()
    shoot(guesser, "guess-mode", readme=True)

    teacher.wait_for_selector("#chart-guesses .main-svg")
    expect(teacher.locator("#guess-note")).to_contain_text("1 guess;")
    expect(teacher.locator("#students .student")).to_have_count(4)
    teacher.get_by_label("Lock the parameters").check()
    expect(teacher.locator("#room-error")).to_be_hidden()
    shoot(teacher, "room-projector-small")
    teacher.get_by_role("button", name="Close the room").click()
    expect(teacher.locator("#room-state")).to_have_text("Closed: no new jobs.")
    teacher.set_viewport_size({"width": 360, "height": 800})  # the teacher at the switches from a phone
    teacher.reload()
    teacher.wait_for_selector("#chart-tally .main-svg")
    assert teacher.evaluate("document.documentElement.scrollWidth <= innerWidth")  # it was 538 px wide


def test_the_score_view_colours_each_token_by_its_rank(people, live_stack):
    page = people(1280, 900)
    page.goto("/")
    page.get_by_label("Text to score").fill("The cat sat on the mat.\n\nThe dog ran in the park.")
    page.get_by_role("button", name="Score this text").click()
    page.wait_for_url(re.compile(r"/jobs/[\w-]{22}$"))
    page.wait_for_selector("#score-view:not([hidden])")
    job = page.request.get("/api/jobs/" + page.url.rsplit("/", 1)[1]).json()
    tokens = page.locator("#score-text .score-token")
    expect(tokens).to_have_count(len(job["steps"]))
    classes = tokens.evaluate_all("nodes => nodes.map(n => n.className)")
    assert classes == [f"score-token band-{band(s['chosen']['rank'])}" for s in job["steps"]]
    assert len({c for c in classes}) >= 2, "the tiny model should spread ranks over more than one band"
    blank = [s["chosen"]["token"] for s in job["steps"] if not s["chosen"]["token"].strip()]
    assert "\n" in blank  # a token of only white space was a thin, empty button: it shows ↵ or ␣ now
    assert tokens.all_text_contents() == [t.replace(" ", "␣").replace("\n", "↵") if not t.strip() else t
                                          for t in (s["chosen"]["token"] for s in job["steps"])]
    colours = {c: page.locator(f".legend .band-{c}").evaluate("n => getComputedStyle(n).backgroundColor")
               for c in ("top10", "top100", "top1000", "beyond")}
    assert len(set(colours.values())) == 4
    expect(page.locator("#score-totals")).to_contain_text(f"{len(job['steps'])} tokens · total surprisal")
    page.locator("#score-view").scroll_into_view_if_needed()
    shoot(page, "score-view", readme=True)
    tokens.nth(2).click()
    expect(page.locator("#step-3")).to_be_focused()
    expect(page.locator("#step-3 .selected")).to_contain_text("THE TEXT'S TOKEN")


STUDENTS = 24


@pytest.fixture(scope="module")
def demo_stack(live_settings, tmp_path_factory):
    """A second web + worker pair serving the bundled demo model (a real language model), same Redis."""
    from contract.settings import DEMO_MODEL_PATH
    from tests.conftest import with_settings
    from stack.harness import LiveStack

    stack = LiveStack(with_settings(live_settings, model_name=str(DEMO_MODEL_PATH), max_batch=32),
                      tmp_path_factory.mktemp("demo-logs"))
    stack.start_web()
    stack.start_worker("demo")
    stack.wait_for_workers(1)
    yield stack
    stack.stop()


def test_projector_with_a_whole_class_at_t1_on_the_demo_model(browser, demo_stack):  # noqa: F811
    """24 simulated students (each their own session) at T = 1: the step-1 tally beside the model's probabilities."""
    headers = {"X-Dashboard-Token": demo_stack.settings.dashboard_token}
    room = requests.post(f"{demo_stack.url}/api/rooms", headers=headers, timeout=10, json={
        "title": "Year 9 · what comes next?", "prompt": "The cat sat", "steps": 4, "top_k": 10, "temperature": 1.0,
        "locked": True}).json()
    names = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu", "Max", "Nia", "Oz",
             "Pia", "Quin", "Rae", "Sol", "Tia", "Uma", "Vic", "Wes", "Xan"][:STUDENTS]
    for name in names:
        demo_stack.submit(requests.Session(), prompt="x", room=room["code"], nickname=name)
    context = browser.new_context(base_url=demo_stack.url, viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, demo_stack.settings.dashboard_token)
    page.goto(room["teacher_url"])
    expect(page.locator("#students .student-status")).to_have_text([re.compile("^done")] * STUDENTS, timeout=120_000)
    expect(page.locator("#tally-note")).to_contain_text(f"{STUDENTS} jobs reached this context")
    page.wait_for_selector("#chart-tally .main-svg")
    view = requests.get(f"{demo_stack.url}/api/rooms/{room['code']}", headers=headers, timeout=10).json()
    first = view["tally"][0]
    assert first["step"] == 1 and first["total"] == STUDENTS == sum(c["count"] for c in first["chosen"])
    page.wait_for_timeout(500)  # the chart's last redraw
    shoot(page, "room-projector", readme=True, full_page=True)
    context.close()
    assert errors == []


def test_a_guessing_students_page_never_receives_a_step_before_it_is_guessed(people, live_stack):
    """The page hid each step, but its own poll carried them all (and the whole text): the answers were one click
    away in the browser's developer tools. Now the server sends a step only once it is guessed."""
    token = {"X-Dashboard-Token": live_stack.settings.dashboard_token}
    code = requests.post(f"{live_stack.url}/api/rooms", json={"prompt": "The cat sat", "steps": 4, "temperature": 0,
                                                              "locked": True, "guess": True},
                         headers=token, timeout=10).json()["code"]
    student = people()
    seen = []
    student.on("response", lambda r: seen.append(r.json()) if re.search(r"/api/jobs/[\w-]{22}\?since=", r.url)
               else None)
    student.goto(f"/r/{code}")
    student.get_by_label("Nickname (at most 24 characters)").fill("Di")
    student.get_by_role("button", name="Generate").click()
    student.wait_for_url(re.compile(r"/jobs/[\w-]{22}"))
    expect(student.locator("#params")).to_contain_text("seed hidden until every step is guessed")
    for index in (1, 2, 3, 4):
        expect(student.locator("#guess-question")).to_contain_text(f"Step {index}:")
        if index == 3:
            student.reload()  # a reloaded page goes on from the next step, asked by the server
            expect(student.locator("#guess-question")).to_contain_text("Step 3:")
        student.locator("#guess-options .chip").first.click()
    expect(student.locator("#guess-question")).to_contain_text("All 4 steps guessed. Final score:")
    expect(student.locator("#params")).to_contain_text(re.compile(r"seed \d+$"))
    job = seen[-1]
    expect(student.locator("#final-text")).to_have_text(job["text"])
    assert (job["guessed"], job["steps_done"], job["guess_next"]) == (4, 4, None)
    assert student.eval_on_selector_all("#steps > li", "cards => cards.map(c => c.id)") == [
        "step-1", "step-2", "step-3", "step-4"]
    assert seen and all(step["index"] <= answer["guessed"] for answer in seen for step in answer["steps"])
    assert any(answer["status"] == "done" and answer["guessed"] < 4 for answer in seen)  # it had them all to hide
