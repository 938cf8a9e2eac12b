"""Celery workers: load the model once, step every job they receive, write each step to Redis."""
