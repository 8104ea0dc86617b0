//! A local stand-in for Microsoft Entra ID: discovery, JWKS and token minting.
