"""Development tooling for mirrord (not part of the runtime wheel): the upstream emulator,
`make run-local`, and the process helpers the tests and benchmarks share."""
