"""Twilio telephony protocol logic, sans-I/O. Never imports ``app``."""
