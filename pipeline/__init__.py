"""linewatch streaming side: messages, streams, capture, recorder, store and the CLI."""
