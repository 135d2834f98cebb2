"""The agent core: transport- and vendor-agnostic call logic (no I/O in the pure modules)."""
