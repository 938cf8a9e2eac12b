"""`autoregress generate "The cat sat" --steps 4 --top-k 10`: submit through the API and print the trace live.

`autoregress score TEXT`: the model's probability, rank and surprisal for each token of a text.
`autoregress pull MODEL`: download a Hub model into the Hugging Face cache (no torch needed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Any, Callable

from cli import trace
from cli.client import ApiFailure, Client

DEFAULT_URL = "http://127.0.0.1:8000"
HUB_ADDRESS = re.compile(r"https?://(?:www\.)?(?:huggingface|hf)\.co/([^?#]+?)/?")  # a model page, pasted
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


def finite_float(text: str) -> float:
    """An argparse type: a float that JSON can carry (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: the subcommands generate, pull and score."""
    parser = argparse.ArgumentParser(prog="autoregress", description="Watch a language model write, one token at a time.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate from a prompt and print every step")
    gen.add_argument("prompt", help="the starting text")
    gen.add_argument("--steps", type=int, default=5, help="tokens to generate (default 5)")
    gen.add_argument("--top-k", type=int, default=10, help="candidates shown per step (default 10)")
    gen.add_argument("--temperature", type=finite_float, default=0.0, help="0 is greedy (default); higher samples")
    gen.add_argument("--top-p", type=finite_float, default=None, help="nucleus sampling mass, 0 < p <= 1")
    gen.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    gen.add_argument("--model", default=None, help="a model that a worker serves (default: the service's)")
    gen.add_argument("--url", default=os.environ.get("AUTOREGRESS_URL", DEFAULT_URL),
                     help=f"the service (default $AUTOREGRESS_URL or {DEFAULT_URL})")
    gen.add_argument("--json", action="store_true", help="print only the finished job as JSON")
    pull = commands.add_parser("pull", help="download a model from the Hugging Face Hub into its cache")
    pull.add_argument("model", help="a Hub id, e.g. meta-llama/Llama-3.2-1B (or its https://huggingface.co/ address)")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default $MODEL_REVISION, else main)")
    score = commands.add_parser("score", help="how surprised is the model by a text? probability, rank, surprisal")
    score.add_argument("text", help="the text to score, token by token")
    score.add_argument("--prompt", default=None, help='context before the text (default: none); the text follows '
                       'it directly, so start the text with a space: --prompt "The cat sat on" " the mat"')
    score.add_argument("--temperature", type=finite_float, default=0.0,
                       help="0 scores with softmax(logits) (default)")
    score.add_argument("--model", default=None, help="a model that a worker serves (default: the service's)")
    score.add_argument("--url", default=os.environ.get("AUTOREGRESS_URL", DEFAULT_URL),
                       help=f"the service (default $AUTOREGRESS_URL or {DEFAULT_URL})")
    score.add_argument("--json", action="store_true", help="print only the finished job as JSON")
    return parser


def hub_id(model: str) -> str:
    """The Hub id that `model` names: itself, or the one in a pasted https://huggingface.co/org/name address.

    Raises:
        ValueError: it is not a Hub id (the message says what one looks like).
    """
    from stack.hub import valid_hub_id

    address = HUB_ADDRESS.fullmatch(model)
    repo = address.group(1) if address else model
    if not valid_hub_id(repo):
        raise ValueError(f"{model!r} is not a Hugging Face model id: use org/name (letters, digits, '-', '_', '.'), "
                         "e.g. meta-llama/Llama-3.2-1B")
    return repo


def pull_model(args: argparse.Namespace, out) -> int:
    """Fetch what the model needs (HF_TOKEN for gated models); exit status 1 with the reason when it can't, 2 for
    a bad id or setting."""
    from contract.settings import Settings
    from stack.hub import PullError, pull

    try:
        model = hub_id(args.model)
        settings = Settings.from_env()
    except ValueError as exc:  # the id, or a setting in the environment or .env, named
        print(f"autoregress: {exc}", file=sys.stderr)
        return 2
    try:
        folder = pull(model, args.revision or settings.model_revision, settings.hf_token)
    except PullError as exc:
        print(f"autoregress: {exc}", file=sys.stderr)
        return 1
    print(f"{model} is ready in {folder}\nserve it with: MODEL_NAME={model} make run", file=out)
    return 0


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /api/jobs body; options left out take the service's defaults."""
    body = {"prompt": args.prompt, "steps": args.steps, "top_k": args.top_k, "temperature": args.temperature}
    optional = {"top_p": args.top_p, "seed": args.seed, "model": args.model}
    return body | {k: v for k, v in optional.items() if v is not None}


def run_job(client: Client, body: dict[str, Any], show: Callable[[dict[str, Any]], None] | None = None
            ) -> dict[str, Any]:
    """Submit a job and follow it, passing each answer to `show`; returns the ended job with all its steps.

    Ctrl-C, or a reader of the output that went away (`| head`), cancels the job at the service, then goes on up.
    """
    job_id = client.submit(body)["id"]
    steps: list[dict[str, Any]] = []
    try:
        for job in client.follow(job_id):
            steps += job["steps"]
            if show:
                show(job)
    except KeyboardInterrupt:
        print(f"\ncancelled job {job_id}" if cancelled(client, job_id) else f"\njob {job_id} may still run",
              file=sys.stderr)
        raise
    except BrokenPipeError:
        cancelled(client, job_id)
        raise
    return job | {"steps": steps}


def cancelled(client: Client, job_id: str) -> bool:
    """Cancel the job, on the way out; False when the service could not be told (it went away too)."""
    try:
        client.cancel(job_id)
    except ApiFailure:
        return False
    return True


def trace_printer(out) -> Callable[[dict[str, Any]], None]:
    """`show` for generate: the header once, the queue position when it changes, then each new step's block."""
    position = None

    def show(job: dict[str, Any]) -> None:
        nonlocal position
        if position is None:
            print(trace.header(job), file=out, flush=True)
        if job["queue_position"] and job["queue_position"] != position:
            print(f"(queued: position {job['queue_position']})", file=out, flush=True)
        position = job["queue_position"] or 0
        for step in job["steps"]:
            print(trace.step_block(step, job["params"]["temperature"]), file=out, flush=True)

    return show


def generate(args: argparse.Namespace, out) -> int:
    """Run one job; exit status 0 when it is done, 1 when it failed or was cancelled."""
    job = run_job(Client(args.url), request_body(args), None if args.json else trace_printer(out))
    if args.json:
        print(json.dumps(job, indent=2, ensure_ascii=False), file=out)
    else:
        print(trace.footer(job), file=out)
    return 0 if job["status"] == "done" else 1


def score(args: argparse.Namespace, out) -> int:
    """Score a text: per token its probability, rank and surprisal, then the totals; 0 when done."""
    body = {"score": args.text, "temperature": args.temperature, "top_k": 1}
    body |= {k: v for k, v in {"prompt": args.prompt, "model": args.model}.items() if v is not None}
    job = run_job(Client(args.url), body)
    if args.json:
        print(json.dumps(job, indent=2, ensure_ascii=False), file=out)
    elif job["status"] == "done":
        print(trace.score_table(job["steps"], job["surprisal"]), file=out)
    else:
        print(trace.footer(job), file=out)
    note = trace.partly_scored_note(job) if job["status"] == "done" else ""
    if note:
        print(note, file=sys.stderr)
    return 0 if job["status"] == "done" else 1


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`autoregress`): exit status 0; 1 on an error, 2 on a usage error, 130 on Ctrl-C and
    141 when the reader of the output went away."""
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(errors="replace")  # a terminal without UTF-8 still gets the trace
    command = {"generate": generate, "pull": pull_model, "score": score}[args.command]
    try:
        return command(args, sys.stdout)
    except ApiFailure as exc:
        print(f"autoregress: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's last flush would fail once more
        return BROKEN_PIPE_EXIT
