"""Telephony voice agent server."""
