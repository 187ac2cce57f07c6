"""NATS: the server process, the connection, streams, and the durable consumer an actor reads."""
