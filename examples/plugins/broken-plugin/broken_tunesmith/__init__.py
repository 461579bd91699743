"""A plugin that fails at import time, as one whose licence check or dependency is missing would."""

raise RuntimeError("acme licence file missing")
