"""The contract shared by web and worker: job schema, validation, Redis keys, settings.

Imports neither torch nor Flask nor Celery.
"""
