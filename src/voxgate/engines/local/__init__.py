"""The embedded CPU engines that run offline: espeak-ng speech, the built-in responder and
Silero VAD."""
