"""The OpenAPI 3.0 description served at /api/openapi.json (also drives the schemathesis fuzz test)."""
from __future__ import annotations

from typing import Any

from contract.jobs import MAX_SEED, MAX_TEMPERATURE
from contract.settings import Settings


def openapi_document(s: Settings) -> dict[str, Any]:
    """Describe the API with the limits in force."""
    error = {"$ref": "#/components/schemas/Error"}
    json_error = {"application/json": {"schema": error}}
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
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
        },
        "components": {
            "schemas": {
                "JobRequest": {
                    "type": "object",
                    "required": ["prompt"],
                    "additionalProperties": False,
                    "properties": {
                        "prompt": {"type": "string", "minLength": 1, "maxLength": s.max_prompt_chars},
                        "steps": {"type": "integer", "minimum": 1, "maximum": s.max_steps, "default": 5},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": s.max_top_k, "default": 10},
                        "temperature": {"type": "number", "minimum": 0, "maximum": MAX_TEMPERATURE, "default": 0},
                        "top_p": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1, "default": 1},
                        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "nullable": True},
                        "model": {"type": "string", "minLength": 1, "maxLength": 200},
                        "forced_ids": {"type": "array", "maxItems": s.max_steps,
                                       "items": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                        "branch": {"type": "object", "required": ["parent", "step"], "additionalProperties": False,
                                   "properties": {"parent": {"type": "string", "minLength": 22, "maxLength": 22},
                                                  "step": {"type": "integer", "minimum": 1, "maximum": 10000}}},
                        "room": {"type": "string", "minLength": 6, "maxLength": 6,
                                 "description": "a class room's join code"},
                        "nickname": {"type": "string", "maxLength": 24},
                        "score": {"type": "string", "minLength": 1, "maxLength": s.max_prompt_chars,
                                  "description": "score this text token by token instead of generating"},
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
                    "chosen": {"$ref": "#/components/schemas/TokenProb"}, "entropy": {"type": "number"}}},
                "Job": {"type": "object", "required": ["id", "status", "steps"], "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "prompt": {"type": "string"}, "text": {"type": "string"},
                    "steps_done": {"type": "integer"}, "steps_total": {"type": "integer"},
                    "steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                    "queue_position": {"type": "integer", "nullable": True},
                    "finish_reason": {"type": "string", "nullable": True},
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
                    "score": {"type": "string", "nullable": True},
                    "surprisal": {"type": "object", "nullable": True, "properties": {
                        "bits": {"type": "array", "items": {"type": "number"}}, "total_bits": {"type": "number"},
                        "perplexity": {"type": "number"}}}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "field": {"type": "string", "nullable": True},
                                   "message": {"type": "string"}}}}},
            }
        },
    }
