"""Tests that need a server (the session's embedded Valkey: the `conn`, `redis_url`, `env` fixtures) and no
long-running process: in-process workers, the app through its test client, the CLI run once."""
