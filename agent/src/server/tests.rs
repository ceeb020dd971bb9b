//! HTTP behaviour of the front on a real Unix socket.
