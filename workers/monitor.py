"""The Celery app configured from the environment, for tools that load an app by module name:
`celery -A workers.monitor flower` (compose.yaml's Flower) and `celery -A workers.monitor
inspect ...`."""

from __future__ import annotations

import os

import workers.tasks  # noqa: F401  (registers the tasks, so Flower can name them)
from domain.settings import load_settings
from workers.celery_app import app, configure

app = configure(app, load_settings(os.environ, mode="worker"))
