"""Made-up image digests for tests: distinct, well-formed (`sha256:` and 64 hex digits), readable."""

from __future__ import annotations

from controller.images import Digest


def digest(n: int) -> Digest:
    """The digest of made-up image `n`: `sha256:` then `n` in 64 hex digits."""
    return Digest(f"sha256:{n:064x}")


def repo_digest(repo: int, n: int) -> Digest:
    """The digest of made-up image `n` of repository number `repo`: distinct across repositories."""
    return Digest(f"sha256:{repo:08x}{n:056x}")
