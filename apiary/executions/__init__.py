"""Executions: a task given to an agent, its subtasks, figures and live events."""
