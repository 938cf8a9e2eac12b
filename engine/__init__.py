"""The step engine: model, token ids, parameters -> steps. Knows nothing of Celery, Redis or Flask."""
