"""The bootstrap admin key every test server runs with (PRAVAH_ADMIN_KEY).

A module of its own, not a conftest, so any test folder can import it.
"""

from __future__ import annotations

TEST_ADMIN_KEY = "pvh-test-admin-0123456789abcdef0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}
