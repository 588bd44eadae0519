"""What a tenant name may be, the same in tokens, pools and adapters."""

from __future__ import annotations

import re

TENANT_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
TENANT_RULE = "must be 1 to 64 characters of a-z, 0-9, '-' and '_'"
