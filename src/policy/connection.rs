//! How a client connects: the binding condition `connection_types` and the minted user JWT's
//! `allowed_connection_types`.
//!
//! nats-server tells the callout how a client connects in the request's `client_info`
//! (`kind: Client` with `type: nats | websocket | mqtt`, or `kind: Leafnode`). A binding with
//! `when: { connection_types: [websocket] }` matches only such connections, so an identity that
//! is meant for a browser cannot be used from a plain TCP client.
//!
//! The check is made here, by the service: nats-server 2.15 only validates a callout user's
//! `allowed_connection_types` and does not match them against the connection (protocol
//! reference §9, P2). The minted JWT carries the list anyway, for servers that do enforce it and
//! for whoever reads the JWT.

use std::fmt;

/// One way of connecting, as policies name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// A NATS client over TCP (`client_info.type: nats`).
    Standard,
    /// A NATS client over WebSocket, e.g. a browser.
    Websocket,
    /// An MQTT client (over TCP or WebSocket: the request does not say which).
    Mqtt,
    /// A leafnode connection (over TCP or WebSocket).
    Leafnode,
}

impl ConnectionType {
    /// Every type, in the order policies list them.
    pub const ALL: [Self; 4] = [Self::Standard, Self::Websocket, Self::Mqtt, Self::Leafnode];

    /// The policy spelling: `standard`, `websocket`, `mqtt`, `leafnode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Websocket => "websocket",
            Self::Mqtt => "mqtt",
            Self::Leafnode => "leafnode",
        }
    }

    /// The policy spelling back; `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// What the authorization request's `client_info.kind` and `client_info.type` say; `None`
    /// for connections that are neither clients nor leafnodes, or types this version does not
    /// know (they match no binding that restricts connection types).
    pub fn from_client_info(kind: &str, client_type: &str) -> Option<Self> {
        match (kind, client_type) {
            ("Leafnode", _) => Some(Self::Leafnode),
            ("Client", "nats") => Some(Self::Standard),
            ("Client", "websocket") => Some(Self::Websocket),
            ("Client", "mqtt") => Some(Self::Mqtt),
            _ => None,
        }
    }

    /// The user JWT's `allowed_connection_types` values for this type. MQTT and leafnodes
    /// include their WebSocket variants, which the request does not tell apart.
    fn nats_values(self) -> &'static [&'static str] {
        match self {
            Self::Standard => &["STANDARD"],
            Self::Websocket => &["WEBSOCKET"],
            Self::Mqtt => &["MQTT", "MQTT_WS"],
            Self::Leafnode => &["LEAFNODE", "LEAFNODE_WS"],
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Standard => 1,
            Self::Websocket => 2,
            Self::Mqtt => 4,
            Self::Leafnode => 8,
        }
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of connection types; [`ConnectionTypes::ANY`] when a binding says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionTypes(u8);

impl Default for ConnectionTypes {
    fn default() -> Self {
        Self::ANY
    }
}

impl ConnectionTypes {
    /// No restriction.
    pub const ANY: Self = Self(0b1111);

    /// The set of `types`.
    pub fn of(types: impl IntoIterator<Item = ConnectionType>) -> Self {
        Self(types.into_iter().fold(0, |acc, t| acc | t.bit()))
    }

    /// Whether a connection of type `connection` is in the set. An unknown type is only in
    /// [`Self::ANY`]: a restricted binding never matches a connection it cannot name.
    pub fn admits(self, connection: Option<ConnectionType>) -> bool {
        match connection {
            Some(t) => self.0 & t.bit() != 0,
            None => self == Self::ANY,
        }
    }

    /// Both restrictions at once.
    #[must_use]
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether no type is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The types in the set.
    pub fn iter(self) -> impl Iterator<Item = ConnectionType> {
        ConnectionType::ALL
            .into_iter()
            .filter(move |t| self.0 & t.bit() != 0)
    }

    /// `allowed_connection_types` for the user JWT: empty (every type) for [`Self::ANY`].
    pub fn nats_values(self) -> Vec<String> {
        if self == Self::ANY {
            return Vec::new();
        }
        self.iter()
            .flat_map(|t| t.nats_values().iter().map(|v| (*v).to_owned()))
            .collect()
    }
}

impl fmt::Display for ConnectionTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(ConnectionType::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_connection_type() {
        use ConnectionType::*;
        assert_eq!(
            ConnectionType::from_client_info("Client", "nats"),
            Some(Standard)
        );
        assert_eq!(
            ConnectionType::from_client_info("Client", "websocket"),
            Some(Websocket)
        );
        assert_eq!(
            ConnectionType::from_client_info("Client", "mqtt"),
            Some(Mqtt)
        );
        assert_eq!(
            ConnectionType::from_client_info("Leafnode", ""),
            Some(Leafnode)
        );
        assert_eq!(ConnectionType::from_client_info("JetStream", ""), None);
        assert_eq!(
            ConnectionType::from_client_info("Client", "carrier-pigeon"),
            None
        );
    }

    #[test]
    fn restricted_sets_admit_only_their_types_and_never_an_unknown_one() {
        let browser = ConnectionTypes::of([ConnectionType::Websocket]);
        assert!(browser.admits(Some(ConnectionType::Websocket)));
        assert!(!browser.admits(Some(ConnectionType::Standard)));
        assert!(!browser.admits(None));
        assert!(ConnectionTypes::ANY.admits(None));
        assert!(ConnectionTypes::default().admits(Some(ConnectionType::Mqtt)));
    }

    #[test]
    fn the_jwt_lists_nats_names_and_nothing_when_unrestricted() {
        assert!(ConnectionTypes::ANY.nats_values().is_empty());
        let set = ConnectionTypes::of([ConnectionType::Websocket, ConnectionType::Mqtt]);
        assert_eq!(set.nats_values(), ["WEBSOCKET", "MQTT", "MQTT_WS"]);
        let both = set.intersect(ConnectionTypes::of([
            ConnectionType::Mqtt,
            ConnectionType::Standard,
        ]));
        assert_eq!(both.nats_values(), ["MQTT", "MQTT_WS"]);
        assert_eq!(both.to_string(), "mqtt");
        for t in ConnectionType::ALL {
            assert_eq!(ConnectionType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ConnectionType::parse("WEBSOCKET"), None);
    }

    mod policies {

        use super::super::ConnectionType::{self, *};
        use crate::deny::DenyReason;
        use crate::policy::PolicySet;
        use crate::testutil;

        const POLICIES: &str = "version: 1
tenants:
  - name: contoso
    entra_tenants: [72f1e1d4-3c5b-4e0a-9d62-5b8e0f3a9c41]
    account: APP
roles:
  - name: watch
    subscribe: { allow: [\"ml.>\"] }
  - name: speak
    publish: { allow: [\"chat.>\"] }
bindings:
  - name: browser-dashboards
    tenant: contoso
    roles: [watch]
    when:
      groups: [c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43]
      connection_types: [websocket]
  - name: chat-anywhere-but-leafnodes
    tenant: contoso
    roles: [speak]
    when:
      everyone: true
      connection_types: [standard, websocket, mqtt]
";

        fn compiled(text: &str) -> Result<PolicySet, String> {
            crate::testutil::compile_policy(text).map_err(|e| e.to_string())
        }

        fn analyst() -> crate::identity::Identity {
            crate::identity::Identity {
                groups: vec!["c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43".into()],
                expires_at: 2_000_000,
                ..testutil::identity()
            }
        }

        fn matched(set: &PolicySet, connection: Option<ConnectionType>) -> Vec<String> {
            set.evaluate_on(&analyst(), connection, 1_000_000)
                .map(|g| g.matched.iter().map(|m| m.to_string()).collect())
                .unwrap_or_default()
        }

        #[test]
        fn a_browser_only_binding_matches_websocket_connections_only() {
            let set = compiled(POLICIES).unwrap();
            assert_eq!(
                matched(&set, Some(Websocket)),
                ["browser-dashboards", "chat-anywhere-but-leafnodes"]
            );
            assert_eq!(
                matched(&set, Some(Standard)),
                ["chat-anywhere-but-leafnodes"]
            );
            let leaf = set.evaluate_on(&analyst(), Some(Leafnode), 1_000_000);
            assert_eq!(leaf.unwrap_err().reason(), DenyReason::NoMatchingPolicy);
            // Offline tools do not know the connection: restricted bindings do not match.
            assert_eq!(
                set.evaluate(&analyst(), 1_000_000).unwrap_err().reason(),
                DenyReason::NoMatchingPolicy
            );
        }

        #[test]
        fn the_grant_lists_what_every_matched_binding_admits() {
            let set = compiled(POLICIES).unwrap();
            let grant = set
                .evaluate_on(&analyst(), Some(Websocket), 1_000_000)
                .unwrap();
            assert_eq!(grant.connection_types, ["WEBSOCKET"]);
            let grant = set.evaluate_on(&analyst(), Some(Mqtt), 1_000_000).unwrap();
            assert_eq!(
                grant.connection_types,
                ["STANDARD", "WEBSOCKET", "MQTT", "MQTT_WS"]
            );
        }

        #[test]
        fn the_minted_user_jwt_carries_the_allowed_connection_types() {
            let set = compiled(POLICIES).unwrap();
            let signer = crate::nats_jwt::Signer::new(nkeys::KeyPair::new_account()).unwrap();
            let issuer = crate::accounts::UserIssuer {
                key: &signer,
                audience: "APP",
                issuer_account: None,
            };
            let user = nkeys::KeyPair::new_user().public_key();
            let minted = |connection| {
                let grant = set
                    .evaluate_on(&analyst(), Some(connection), 1_000_000)
                    .unwrap();
                let jwt = crate::callout::mint_user(&issuer, &user, &analyst(), &grant, 1_000_000)
                    .unwrap();
                crate::nats_jwt::decode::<crate::nats_jwt::User>(&jwt)
                    .unwrap()
                    .nats
                    .allowed_connection_types
            };
            assert_eq!(minted(Websocket), ["WEBSOCKET"]);
            assert_eq!(
                minted(Standard),
                ["STANDARD", "WEBSOCKET", "MQTT", "MQTT_WS"]
            );
        }

        #[test]
        fn explain_says_why_a_binding_wants_another_connection() {
            let set = compiled(POLICIES).unwrap();
            let explained = set.explain_on(&analyst(), Some(Standard), 1_000_000);
            assert_eq!(
                explained.bindings[0].outcome,
                Err(
                    "needs a connection of type [websocket]; the client connects as standard"
                        .to_owned()
                )
            );
            assert_eq!(explained.bindings[1].outcome, Ok(()));
            let offline = set.explain(&analyst(), 1_000_000);
            assert_eq!(
                offline.bindings[1].outcome,
                Err("needs a connection of type [standard, websocket, mqtt]; the client connects in a way that is not known here".to_owned())
            );
        }

        #[test]
        fn unknown_and_empty_connection_types_are_load_errors() {
            let bad = POLICIES.replace("[websocket]", "[websocket, tcp]");
            let err = compiled(&bad).unwrap_err();
            assert!(
                err.contains(
                    "p.yaml:17:37: `connection_types` value `tcp` is not one of standard, websocket, mqtt, leafnode"
                ),
                "{err}"
            );
            let empty = POLICIES.replace("[websocket]", "[]");
            let err = compiled(&empty).unwrap_err();
            assert!(
                err.contains("`connection_types` is empty and can never match"),
                "{err}"
            );
        }
    }
}
