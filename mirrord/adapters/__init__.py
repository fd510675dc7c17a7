"""One module per outside system (the registry, HTTP documents, S3, SQS, the bucket lock,
Slack, Secrets Manager, Lambda, the terminal). Each translates its library's errors, in one
place, into the exception tree of mirrord.core.errors."""
