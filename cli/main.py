"""`autoregress generate "The cat sat" --steps 4 --top-k 10`: submit through the API and print the trace live.

`autoregress pull MODEL`: download a Hub model into the Hugging Face cache (no torch needed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cli import trace
from cli.client import ApiFailure, Client

DEFAULT_URL = "http://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    """The command line: the subcommands generate and pull."""
    parser = argparse.ArgumentParser(prog="autoregress", description="Watch a language model write, one token at a time.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate from a prompt and print every step")
    gen.add_argument("prompt", help="the starting text")
    gen.add_argument("--steps", type=int, default=5, help="tokens to generate (default 5)")
    gen.add_argument("--top-k", type=int, default=10, help="candidates shown per step (default 10)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default); higher samples")
    gen.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, 0 < p <= 1")
    gen.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    gen.add_argument("--model", default=None, help="a model that a worker serves (default: the service's)")
    gen.add_argument("--url", default=os.environ.get("AUTOREGRESS_URL", DEFAULT_URL),
                     help=f"the service (default $AUTOREGRESS_URL or {DEFAULT_URL})")
    gen.add_argument("--json", action="store_true", help="print only the finished job as JSON")
    pull = commands.add_parser("pull", help="download a model from the Hugging Face Hub into its cache")
    pull.add_argument("model", help="a Hub id, e.g. meta-llama/Llama-3.2-1B")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default $MODEL_REVISION, else main)")
    score = commands.add_parser("score", help="how surprised is the model by a text? probability, rank, surprisal")
    score.add_argument("text", help="the text to score, token by token")
    score.add_argument("--prompt", default=None, help="context before the text (default: none)")
    score.add_argument("--temperature", type=float, default=0.0, help="0 scores with softmax(logits) (default)")
    score.add_argument("--model", default=None, help="a model that a worker serves (default: the service's)")
    score.add_argument("--url", default=os.environ.get("AUTOREGRESS_URL", DEFAULT_URL),
                       help=f"the service (default $AUTOREGRESS_URL or {DEFAULT_URL})")
    score.add_argument("--json", action="store_true", help="print only the finished job as JSON")
    return parser


def pull_model(args: argparse.Namespace, out) -> int:
    """Fetch what the model needs (HF_TOKEN for gated models); exit status 1 with the reason when it can't, 2 for
    a bad setting."""
    from contract.settings import Settings
    from stack.hub import PullError, pull

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a setting in the environment or .env, named
        print(f"autoregress: {exc}", file=sys.stderr)
        return 2
    try:
        folder = pull(args.model, args.revision or settings.model_revision, settings.hf_token)
    except PullError as exc:
        print(f"autoregress: {exc}", file=sys.stderr)
        return 1
    print(f"{args.model} is ready in {folder}\nserve it with: MODEL_NAME={args.model} make run", file=out)
    return 0


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /api/jobs body; options left out take the service's defaults."""
    body = {"prompt": args.prompt, "steps": args.steps, "top_k": args.top_k, "temperature": args.temperature}
    optional = {"top_p": args.top_p, "seed": args.seed, "model": args.model}
    return body | {k: v for k, v in optional.items() if v is not None}


def generate(args: argparse.Namespace, out) -> int:
    """Run one job; exit status 0 when it is done, 1 when it failed or was cancelled."""
    client = Client(args.url)
    created = client.submit(request_body(args))
    steps: list[dict[str, Any]] = []
    position = None
    try:
        for job in client.follow(created["id"]):
            steps += job["steps"]
            if args.json:
                continue
            if position is None:
                print(trace.header(job), file=out, flush=True)
            if job["queue_position"] and job["queue_position"] != position:
                print(f"(queued: position {job['queue_position']})", file=out, flush=True)
            position = job["queue_position"] or 0
            for step in job["steps"]:
                print(trace.step_block(step, job["params"]["temperature"]), file=out, flush=True)
    except KeyboardInterrupt:
        client.cancel(created["id"])
        print(f"\ncancelled job {created['id']}", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(job | {"steps": steps}, indent=2, ensure_ascii=False), file=out)
    else:
        print(trace.footer(job), file=out)
    return 0 if job["status"] == "done" else 1


def score(args: argparse.Namespace, out) -> int:
    """Score a text: per token its probability, rank and surprisal, then the totals; 0 when done."""
    body = {"score": args.text, "temperature": args.temperature, "top_k": 1}
    body |= {k: v for k, v in {"prompt": args.prompt, "model": args.model}.items() if v is not None}
    client = Client(args.url)
    created = client.submit(body)
    steps: list[dict[str, Any]] = []
    for job in client.follow(created["id"]):
        steps += job["steps"]
    if args.json:
        print(json.dumps(job | {"steps": steps}, indent=2, ensure_ascii=False), file=out)
    elif job["status"] == "done":
        print(trace.score_table(steps, job["surprisal"]), file=out)
    else:
        print(trace.footer(job), file=out)
    return 0 if job["status"] == "done" else 1


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`autoregress`)."""
    args = build_parser().parse_args(argv)
    sys.stdout.reconfigure(errors="replace")  # a terminal without UTF-8 still gets the trace
    if args.command == "pull":
        return pull_model(args, sys.stdout)
    try:
        return (score if args.command == "score" else generate)(args, sys.stdout)
    except ApiFailure as exc:
        print(f"autoregress: {exc}", file=sys.stderr)
        return 1
