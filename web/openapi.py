"""The OpenAPI 3.0 description served at /api/openapi.json (also drives the schemathesis fuzz test)."""
from __future__ import annotations

from typing import Any

from contract.jobs import MAX_SEED, MAX_TEMPERATURE, MIN_TEMPERATURE, MIN_TOP_P, FinishReason, JobStatus
from contract.keys import ROOM_CODE_LENGTH
from contract.rooms import MAX_TITLE_CHARS
from contract.settings import Settings
from web.rooms_api import MAX_GUESS_CHARS


def openapi_document(s: Settings) -> dict[str, Any]:
    """Describe the API with the limits in force."""
    error = {"$ref": "#/components/schemas/Error"}
    json_error = {"application/json": {"schema": error}}
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
    params = {
        "steps": {"type": "integer", "minimum": 1, "maximum": s.max_steps, "default": 5},
        "top_k": {"type": "integer", "minimum": 1, "maximum": s.max_top_k, "default": 10},
        "temperature": {"type": "number", "default": 0,  # 0 is greedy; between 0 and the minimum, logits overflow
                        "anyOf": [{"enum": [0]}, {"minimum": MIN_TEMPERATURE, "maximum": MAX_TEMPERATURE}]},
        "top_p": {"type": "number", "minimum": MIN_TOP_P, "maximum": 1, "default": 1},
    }
    status = {"type": "string", "enum": [status.value for status in JobStatus]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Autoregression classroom API", "version": "1.0.0",
                 "description": "Submit a prompt, then poll its steps: context, top-k candidates, chosen token."},
        "paths": {
            "/api/jobs": {
                "post": {
                    "summary": "Queue a generation job",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}},
                    "responses": {
                        "202": {"description": "queued", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Created"}}}},
                        "400": {"description": "invalid field", "content": json_error},
                        "413": {"description": "body too large", "content": json_error},
                        "429": {"description": "rate limited or too many active jobs", "content": json_error},
                        "503": {"description": "queue full, model unavailable (no worker serves or loads it; "
                                               "the message gives the recorded cause) or store unreachable",
                                "content": json_error},
                    },
                }
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "A job and its steps after `since`",
                    "parameters": [job_id, {"name": "since", "in": "query", "required": False,
                                            "schema": {"type": "integer", "minimum": 0, "maximum": 999999}}],
                    "responses": {
                        "200": {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                        "400": {"description": "invalid since", "content": json_error},
                        "404": {"description": "unknown or expired job", "content": json_error},
                        "503": {"description": "store unreachable", "content": json_error},
                    },
                },
                "delete": {
                    "summary": "Cancel a job you submitted",
                    "parameters": [job_id],
                    "responses": {
                        "202": {"description": "cancelled or cancelling", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "403": {"description": "not your job", "content": json_error},
                        "404": {"description": "unknown or expired job", "content": json_error},
                        "503": {"description": "store unreachable", "content": json_error},
                    },
                },
            },
            "/api/health": {"get": {"summary": "Redis, workers, models", "responses": {
                "200": {"description": "status", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "Redis unreachable", "content": json_error}}}},
            "/api/models": {"get": {"summary": "Models served by live workers", "responses": {
                "200": {"description": "models", "content": {"application/json": {"schema": {"type": "object"}}}},
                "503": {"description": "store unreachable", "content": json_error}}}},
            **_room_paths(json_error, job_id),
        },
        "components": {
            "schemas": {
                "JobRequest": {
                    "type": "object",
                    "anyOf": [{"required": ["prompt"]}, {"required": ["score"]}],
                    "additionalProperties": False,
                    "properties": {
                        "prompt": {"type": "string", "maxLength": s.max_prompt_chars,
                                   "description": "the text to go on from: some text is needed, unless `score` is "
                                                  "given (then it is the optional context before the scored text)"},
                        **params,
                        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "nullable": True},
                        "model": {"type": "string", "minLength": 1, "maxLength": 200, "nullable": True},
                        "forced_ids": {"type": "array", "maxItems": s.max_steps,
                                       "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                        "branch": {"type": "object", "required": ["parent", "step"], "additionalProperties": False,
                                   "nullable": True,
                                   "properties": {"parent": {"type": "string", "minLength": 22, "maxLength": 22},
                                                  "step": {"type": "integer", "minimum": 1, "maximum": 10000}}},
                        "room": {"type": "string", "minLength": 6, "nullable": True,
                                 "description": "a class room's 6-character join code, in any case, with spaces or "
                                                "dashes"},
                        "nickname": {"type": "string", "maxLength": 24},
                        "score": {"type": "string", "minLength": 1, "maxLength": s.max_prompt_chars,
                                  "description": "score this text token by token instead of generating"},
                        "guess": {"type": "boolean", "description": "guess mode: each step is shown only once its "
                                  "student has guessed it (a room with guess mode on sets it)"},
                    },
                },
                "Created": {"type": "object", "required": ["id", "status", "url", "page"],
                            "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                           "url": {"type": "string"}, "page": {"type": "string"}}},
                "TokenProb": {"type": "object", "properties": {"token": {"type": "string"}, "id": {"type": "integer"},
                                                               "prob": {"type": "number"}}},
                "Step": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "context": {"type": "string"},
                    "top": {"type": "array", "items": {"$ref": "#/components/schemas/TokenProb"}},
                    "chosen": {"$ref": "#/components/schemas/TokenProb"}, "entropy": {"type": "number"},
                    "computed_at": {"type": "number", "description": "when the worker computed it (Unix time)"},
                    "forced": {"type": "boolean", "description": "present and true when the token was given (a "
                                                                 "scored text's), not chosen"}}},
                "Job": {"type": "object", "required": ["id", "status", "steps"], "properties": {
                    "id": {"type": "string"},
                    "status": status,
                    "prompt": {"type": "string"}, "text": {"type": "string"},
                    "steps_done": {"type": "integer"}, "steps_total": {"type": "integer"},
                    "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                    "queue_position": {"type": "integer", "nullable": True},
                    "finish_reason": {"type": "string", "nullable": True,
                                      "enum": [reason.value for reason in FinishReason] + [None],
                                      "description": "length: the steps asked for; eos: the model ended the text; "
                                                     "context: the steps that fit the model's context window"},
                    "error": {"type": "string", "nullable": True},
                    "model": {"type": "string"},
                    "params": {"type": "object"},
                    "prompt_tokens": {"type": "array", "nullable": True, "items": {"type": "object", "properties": {
                        "id": {"type": "integer"}, "token": {"type": "string"}}}},
                    "forced_ids": {"type": "array", "items": {"type": "integer"}},
                    "branch": {"type": "object", "nullable": True, "properties": {
                        "parent": {"type": "string"}, "step": {"type": "integer"}}},
                    "attempt": {"type": "integer"},
                    "mine": {"type": "boolean", "description": "true when this session submitted the job"},
                    "created_at": {"type": "number"}, "started_at": {"type": "number", "nullable": True},
                    "finished_at": {"type": "number", "nullable": True},
                    "room": {"type": "string", "nullable": True}, "nickname": {"type": "string"},
                    "score": {"type": "string", "nullable": True}, "guess": {"type": "boolean"},
                    "guessed": {"type": "integer", "nullable": True,
                                "description": "a guess job: how many of its first steps its student has guessed, "
                                               "the only steps shown (null: every step is shown)"},
                    "guess_next": {"type": "object", "nullable": True,
                                   "description": "a guess job's next computed step, as a question",
                                   "properties": {"step": {"type": "integer"}, "context": {"type": "string"},
                                                  "candidates": {"type": "array", "items": {"type": "string"}}}},
                    "score_tokens": {"type": "integer", "nullable": True,
                                     "description": "a score job's text in tokens, once a worker has read it: more "
                                                    "than steps_total when only the first steps_total were scored"},
                    "surprisal": {"type": "object", "nullable": True, "properties": {
                        "bits": {"type": "array", "items": {"type": "number"}}, "total_bits": {"type": "number"},
                        "perplexity": {"type": "number"}}}}},
                **_room_schemas(s, params, status),
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "field": {"type": "string", "nullable": True},
                                   "message": {"type": "string"}}}}},
            },
            "securitySchemes": {"dashboardToken": {
                "type": "apiKey", "in": "header", "name": "X-Dashboard-Token",
                "description": "DASHBOARD_TOKEN; a browser signed in at /dashboard needs no header"}},
        },
    }


def _room_paths(json_error: dict[str, Any], job_id: dict[str, Any]) -> dict[str, Any]:
    """The class-room operations: rooms (teacher only) and students' guesses."""
    code = {"name": "code", "in": "path", "required": True, "description": "the 6-character join code (any case)",
            "schema": {"type": "string", "maxLength": 64}}
    teacher = [{"dashboardToken": []}]
    room_body = {"required": True, "content": _json("RoomRequest")}
    refused = {
        "403": {"description": "not the teacher (no or wrong X-Dashboard-Token)", "content": json_error},
        "404": {"description": "unknown or expired room, or no DASHBOARD_TOKEN set (no rooms)", "content": json_error},
        "503": {"description": "store unreachable", "content": json_error},
    }
    invalid = {"400": {"description": "invalid field", "content": json_error},
               "413": {"description": "body too large", "content": json_error}}
    location = {"Location": {"description": "/api/rooms/<code>", "schema": {"type": "string"}}}
    return {
        "/api/rooms": {"post": {
            "summary": "Open a class room (teacher only)", "security": teacher, "requestBody": room_body,
            "responses": {"201": {"description": "the room", "headers": location, "content": _json("Room")},
                          **invalid, **refused}}},
        "/api/rooms/{code}": {
            "get": {"summary": "The room, its jobs, the class tally and the step-1 guesses (teacher only)",
                    "security": teacher, "parameters": [code],
                    "responses": {"200": {"description": "the teacher's view", "content": _json("RoomView")},
                                  **refused}},
            "patch": {"summary": "Change the room's fields (teacher only); fields left out stay",
                      "security": teacher, "parameters": [code], "requestBody": room_body,
                      "responses": {"200": {"description": "the changed room", "content": _json("Room")},
                                    **invalid, **refused}},
        },
        "/api/rooms/{code}/close": {"post": {
            "summary": "Close the room: it takes no new jobs (teacher only)", "security": teacher, "parameters": [code],
            "responses": {"200": {"description": "the closed room", "content": _json("Room")},
                          "400": {"description": "sent neither as JSON nor with the token header (a cross-site form)",
                                  "content": json_error}, **refused}}},
        "/api/jobs/{job_id}/guesses": {"get": {
            "summary": "The owner's guesses so far, in step order (a reloaded guess page goes on from them)",
            "parameters": [job_id],
            "responses": {
                "200": {"description": "each kept guess as the POST answered it", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["guesses"], "properties": {
                        "guesses": {"type": "array", "items": {"$ref": "#/components/schemas/KeptGuess"}}}}}}},
                "403": {"description": "not your job", "content": json_error},
                "404": {"description": "unknown or expired job", "content": json_error},
                "503": {"description": "store unreachable", "content": json_error},
            }}, "post": {
            "summary": "Guess a step's token before it is shown (the job's owner only), steps in order; a step's first "
                       "guess counts, and a later one is answered with it (first: false)",
            "parameters": [job_id], "requestBody": {"required": True, "content": _json("GuessRequest")},
            "responses": {
                "200": {"description": "the guess with the model's probability and rank", "content": _json("Guess")},
                "400": {"description": "invalid step or guess, a step not computed yet, or one after a step not "
                                       "guessed yet", "content": json_error},
                "403": {"description": "not your job", "content": json_error},
                "404": {"description": "unknown or expired job", "content": json_error},
                "413": {"description": "body too large", "content": json_error},
                "503": {"description": "store unreachable", "content": json_error},
            }}},
    }


def _room_schemas(s: Settings, params: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The bodies of the class-room operations."""
    token = {"token": {"type": "string"}, "id": {"type": "integer"}}
    ranked = {"type": "object", "properties": {**token, "prob": {"type": "number"}, "rank": {"type": "integer"}}}
    model = {"type": "array", "items": {"$ref": "#/components/schemas/TokenProb"}}
    kept_guess = {"type": "object", "required": ["step", "guess", "match", "top", "chosen", "correct"], "properties": {
        "step": {"type": "integer"}, "guess": {"type": "string"},
        "match": {**ranked, "nullable": True, "description": "the candidate the guess names, or null"},
        "top": {"type": "integer", "description": "how many candidates the step shows"},
        "chosen": ranked, "correct": {"type": "boolean"}}}
    return {
        "RoomRequest": {"type": "object", "additionalProperties": False,
                        "description": "a locked or same_prompt room needs a prompt", "properties": {
            "title": {"type": "string", "maxLength": MAX_TITLE_CHARS, "description": "one line of plain text"},
            "prompt": {"type": "string", "maxLength": s.max_prompt_chars,
                       "description": "pre-filled for the students; empty lets each type their own"},
            **params,
            "locked": {"type": "boolean", "description": "the room's prompt and params replace the students'"},
            "same_prompt": {"type": "boolean", "description": "the room's prompt replaces the students'"},
            "guess": {"type": "boolean", "description": "the students' job pages start in guessing mode"}}},
        "Room": {"type": "object", "required": ["code", "url", "teacher_url"], "properties": {
            "code": {"type": "string", "minLength": ROOM_CODE_LENGTH, "maxLength": ROOM_CODE_LENGTH},
            "title": {"type": "string"}, "prompt": {"type": "string"},
            "params": {"type": "object", "properties": {name: {"type": spec["type"]} for name, spec in params.items()}},
            "locked": {"type": "boolean"}, "same_prompt": {"type": "boolean"}, "guess": {"type": "boolean"},
            "closed": {"type": "boolean"}, "created_at": {"type": "number"}, "expires_at": {"type": "number"},
            "url": {"type": "string", "description": "the students' join page, /r/<code>"},
            "teacher_url": {"type": "string", "description": "the projector page, /rooms/<code>"}}},
        "RoomView": {"allOf": [{"$ref": "#/components/schemas/Room"}, {"type": "object", "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/RoomJob"}},
            "students": {"type": "integer", "description": "how many sessions submitted the jobs (a count only)"},
            "tally": {"type": "array", "items": {"$ref": "#/components/schemas/TallyEntry"}},
            "tally_temperature": {"type": "number"},
            "tally_model": {"type": "string", "nullable": True,
                            "description": "the model of the tallied jobs (the one most of them ran)"},
            "guesses": {"$ref": "#/components/schemas/ClassGuesses"}}}]},
        "RoomJob": {"type": "object", "description": "a student's job, by nickname (never owners or addresses)",
                    "properties": {
            "id": {"type": "string"}, "nickname": {"type": "string"}, "prompt": {"type": "string"}, "status": status,
            "text": {"type": "string"}, "steps_done": {"type": "integer"}, "steps_total": {"type": "integer"},
            "params": {"type": "object"}, "score": {"type": "string", "nullable": True}}},
        "TallyEntry": {"type": "object", "description": "one step and shared context: what the class chose there, "
                                                        "beside the model's probabilities", "properties": {
            "step": {"type": "integer"}, "context": {"type": "string"}, "total": {"type": "integer"},
            "chosen": {"type": "array", "items": {"type": "object",
                                                  "properties": {**token, "count": {"type": "integer"}}}},
            "model": model}},
        "ClassGuesses": {"type": "object", "description": "the class's guesses at one step, by the token they name",
                         "properties": {
            "step": {"type": "integer"}, "total": {"type": "integer"}, "model": model,
            "guessed": {"type": "array", "items": {"type": "object", "properties": {
                "token": {"type": "string"}, "id": {"type": "integer", "nullable": True},
                "prob": {"type": "number", "nullable": True}, "rank": {"type": "integer", "nullable": True},
                "count": {"type": "integer"}}}}}},
        "GuessRequest": {"type": "object", "required": ["step", "guess"], "additionalProperties": False, "properties": {
            "step": {"type": "integer", "minimum": 1, "description": "the step guessed (computed, not yet shown)"},
            "guess": {"type": "string", "minLength": 1, "maxLength": MAX_GUESS_CHARS}}},
        "KeptGuess": kept_guess,
        "Guess": {"type": "object", "required": [*kept_guess["required"], "first"], "properties": {
            **kept_guess["properties"],
            "first": {"type": "boolean", "description": "false when the step was guessed before: that guess counts"},
            "kept": {"$ref": "#/components/schemas/KeptGuess",
                     "description": "when first is false: the guess that counts for the step"}}},
    }


def _json(schema: str) -> dict[str, Any]:
    """A JSON content map whose schema is components/schemas/<schema>."""
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
