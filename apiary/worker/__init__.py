"""Where executions run: an in-process asyncio runner, or Celery workers on Redis."""
