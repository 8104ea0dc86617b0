//! End-to-end: clients connect through a real nats-server to the callout service.
