"""The asyncio edge: runs call sessions, owns their tasks, holds process-wide state."""
