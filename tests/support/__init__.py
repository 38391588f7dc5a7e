"""What the tests share: helpers, job and task functions (enqueued by dotted name, `tests.support.…`),
fake upstreams and other loopback servers, docs sample readers, data."""
