"""Outbound calls: number checks, the Twilio REST dialler, status and AMD callbacks."""
