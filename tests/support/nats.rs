//! nats-server on a free loopback port.
