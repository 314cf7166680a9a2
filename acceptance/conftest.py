"""Session fixtures that build (or reuse from the artifact store) the real artifacts under test.

Each fixture builds what it needs through the same library calls as `shiptwo build`, so
`pytest acceptance -m model2` works alone on a fresh checkout.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def profile(request) -> str:
    from shiptwo.plugin import active_profile

    return active_profile(request.config)


# --- MODEL-2 artifacts (trainer / artifact store) -------------------------------------------


@pytest.fixture(scope="session")
def model2_artifacts(profile):
    from shiptwo.store import build

    return build("model2", profile)
