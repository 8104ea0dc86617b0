//! Token verification against the in-process Entra-like issuer.
