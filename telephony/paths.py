"""The paths of the routes Twilio calls on us: one definition for the routes that serve them,
the TwiML and REST requests that name them, and the number set-up that points Twilio at them."""

VOICE = "/twilio/voice"  # the voice webhook: admission and <Connect><Stream>
MEDIA = "/twilio/media"  # the Media Streams WebSocket
FALLBACK = "/twilio/fallback"  # the number's "primary handler fails" URL
STATUS = "/twilio/status"  # call status callbacks
AMD = "/twilio/amd"  # asynchronous answering-machine detection
RECORDING = "/twilio/recording"  # recording status callbacks
STREAM_ENDED = "/twilio/stream-ended"  # <Connect action>: the stream ended, however it did
