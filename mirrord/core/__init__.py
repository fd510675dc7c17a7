"""The rules of mirroring, with no I/O: the catalog, the plan, the hash file, jobs,
reports, settings, brew's file formats and bottle choice, the retry policy. Nothing here
imports a network, storage or terminal library, so every rule is tested without a server."""
