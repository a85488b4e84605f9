"""The local queue: PostgreSQL is the queue, a loop in the worker delivers due tasks over
HTTP."""
