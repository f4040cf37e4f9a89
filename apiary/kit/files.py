"""The process's limit on open files, lifted for a swarm's connections.

HTTP/1.1 carries one request per connection, so ten executions of 100 sub-agents hold a
thousand upstream sockets at once, besides the database and Redis pools and the clients'
connections. Many systems start processes with a soft limit of 1024 open files (the hard
limit is usually far higher), and past it every new connection fails with "Too many open
files". `apiary serve` and `apiary worker` lift the soft limit to the hard one at start,
as servers commonly do; a process may raise its own soft limit up to the hard limit
without privileges.
"""

from __future__ import annotations

import resource

UNLIMITED_TARGET = 1 << 20  # when the hard limit is "unlimited": plenty, and still a number


def lift_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # the platform refuses: keep what we have
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
