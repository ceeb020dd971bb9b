//! Client for the access-token-agent's Unix socket.
