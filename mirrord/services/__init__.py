"""What mirrord does, as use cases over the adapters: sync, publish, enqueue, verify,
check-client, and the job that runs them in order. Each takes its adapters and returns a
typed result; none parses a command line or an event."""
