"""The test peers: real servers that speak the protocols the product talks to, for tests/
and bench/ (the OpenAI images and Batch APIs, Supabase Storage, Cloud Tasks' gRPC API with
its OIDC signing, pgbouncer, a webhook receiver). Each runs in-process on a loopback port
or, for pgbouncer, as a child process; nothing here is imported by the product."""
