"""Call campaigns: CSV import, pacing and scheduling rules, the dialling engine, API and CLI."""
