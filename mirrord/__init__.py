"""mirrord: a private mirror of Homebrew bottles in S3."""

__version__ = "0.1.0"
