"""Conversation memory: earlier turns of a thread, given to the next execution in it."""
