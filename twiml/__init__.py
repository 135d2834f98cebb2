"""TwiML documents built with the twilio package's builders. Never imports ``app``."""
