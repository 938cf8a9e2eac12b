"""Class features on the live stack (real Redis, Celery worker, gunicorn): score jobs, the CLI, the room tally."""
from __future__ import annotations

import math
import re
import subprocess
import sys
import time

import pytest
import requests

from contract.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


def teacher_headers(live_stack) -> dict[str, str]:
    return {"X-Dashboard-Token": live_stack.settings.dashboard_token}


def signed_in_teacher(live_stack) -> requests.Session:
    """A session signed in on the dashboard's form, as the teacher's browser is (a header reads no student's job)."""
    session = requests.Session()
    form = session.get(f"{live_stack.url}/dashboard", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    signed = session.post(f"{live_stack.url}/dashboard/sign-in", timeout=10,
                          data={"token": live_stack.settings.dashboard_token, "csrf_token": csrf})
    assert signed.ok, signed.text
    return session


def test_a_score_job_forces_each_token_and_reports_surprisal(live_stack):
    created = live_stack.submit(score=" sat on the mat", prompt="The cat", top_k=3)
    job = live_stack.wait_done(created["id"])
    assert job["status"] == "done" and job["text"] == "The cat sat on the mat"
    steps = job["steps"]
    assert len(steps) == job["steps_total"] == len(job["surprisal"]["bits"]) >= 4
    assert all(s["forced"] is True for s in steps)
    assert "".join(s["chosen"]["token"] for s in steps) == " sat on the mat"
    assert job["surprisal"]["total_bits"] == pytest.approx(sum(-math.log2(s["chosen"]["prob"]) for s in steps))


def test_cli_score_prints_probability_rank_and_surprisal_per_token_then_totals(live_stack):
    code = "import sys; from cli.main import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, "score", "The cat sat on the mat", "--url", live_stack.url],
                            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.endswith(" bits") and line.startswith('"')]
    assert len(rows) >= 5
    for row in rows:
        assert "%" in row and row.split()[-3].isdigit()  # probability, rank, surprisal
    assert "tokens · total surprisal" in result.stdout and "perplexity" in result.stdout


def test_the_rooms_tally_counts_what_its_students_chose(live_stack):
    headers = teacher_headers(live_stack)
    room = requests.post(f"{live_stack.url}/api/rooms", json={"title": "live", "prompt": "The cat sat", "steps": 3,
                                                              "top_k": 5, "temperature": 1.0, "locked": True},
                         headers=headers, timeout=10).json()
    jobs = []
    for n in range(6):
        student = requests.Session()
        jobs.append(live_stack.submit(student, prompt="ignored", room=room["code"], nickname=f"s{n}")["id"])
    teacher = signed_in_teacher(live_stack)  # students' room jobs are private: the teacher's browser reads them
    deadline = time.monotonic() + 120
    while True:
        done = [teacher.get(f"{live_stack.url}/api/jobs/{j}", timeout=10).json() for j in jobs]
        if all(j["status"] == "done" for j in done) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    view = teacher.get(f"{live_stack.url}/api/rooms/{room['code']}", timeout=10).json()
    assert sorted(j["nickname"] for j in view["jobs"]) == [f"s{n}" for n in range(6)]
    first = view["tally"][0]
    assert (first["step"], first["total"]) == (1, 6)
    chosen = [j["steps"][0]["chosen"]["id"] for j in done]
    assert {c["id"]: c["count"] for c in first["chosen"]} == {i: chosen.count(i) for i in set(chosen)}
    top = {c["id"]: c["prob"] for c in done[0]["steps"][0]["top"]}
    assert all(top[m["id"]] == m["prob"] for m in first["model"] if m["id"] in top)
    assert requests.get(f"{live_stack.url}/api/jobs/{jobs[0]}", timeout=10).status_code == 403  # another student
