"""Transports adapt a wire protocol (Twilio Media Streams, WebRTC) to the agent core."""
