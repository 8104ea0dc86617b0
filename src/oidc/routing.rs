//! [`Routes`]: which provider and key source a token belongs to, decided from its `iss` (and,
//! for Entra, its `tid`) alone. A pure value built once from the provider settings; no I/O. The
//! [`Verifier`](super::Verifier) routes every token with it, and `explain` says with it which
//! provider a token would reach and why.
//!
//! Routing never tries providers in turn. Fixed issuers (generic OIDC, listed Entra tenants) are
//! looked up in an exact map; Entra `tenants: any` providers are matched by the issuer shape of
//! their cloud (`https://{login_host}/{tid}/v2.0`, `https://{sts_host}/{tid}/`). Either way the
//! tenant rules (`tid` a GUID, equal to the issuer's tenant, allowed) run before any fetch, so a
//! token can never make us fetch metadata for a tenant we do not accept.
//!
//! Key sources are known up front: one per (tenant, version) of a listed Entra provider, as
//! Microsoft recommends (per-tenant discovery), one per version of an `any` provider (the
//! tenant-independent `common` metadata whose issuer is the `{tenantid}` template; per-tenant
//! discovery there would let anyone trigger fetches with made-up tenants), and one per generic
//! issuer. An Entra provider with `signing_keys_app_id` reads every one of its sources from the
//! app-specific metadata (`?appid=`) instead, since such an app's tokens are signed with keys the
//! tenant's set does not list.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::TokenError;
use super::keys::TENANT_PLACEHOLDER;
use super::settings::{ProviderKind, ProviderSettings, Tenants, TokenVersion};
use super::verify::check_entra_tenant;
use crate::guid::Guid;

/// Every configured provider, every key source, and the rules that lead a token to them.
#[derive(Debug)]
pub(crate) struct Routes {
    providers: Vec<ProviderSettings>,
    sources: Vec<SourceSpec>,
    /// Exact `iss` to its provider and key source.
    by_issuer: HashMap<String, Route>,
    /// Issuer shapes of every Entra provider and version: routes `any` tenants, and names the
    /// precise refusal for tenants and versions a provider does not accept.
    shapes: Vec<Shape>,
}

/// Where a token goes: indices into [`Routes::providers`] and [`Routes::sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) provider: usize,
    pub(crate) source: usize,
    /// How the provider was found, for `explain`.
    pub(crate) via: Via,
}

/// How a [`Route`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// The token's `iss` is one of the provider's exact issuers.
    Issuer,
    /// The token's `iss` has the issuer shape of a provider that accepts any tenant, and its
    /// `tid` is the tenant the issuer names.
    AnyTenant,
}

/// Where one key set comes from; fixed when the routes are built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceSpec {
    /// Index of the provider the keys belong to.
    pub(crate) provider: usize,
    /// `provider/tenant/version`, for logs.
    pub(crate) label: String,
    pub(crate) discovery_url: String,
    pub(crate) expected_issuer: String,
    /// The tenant of a per-tenant source.
    pub(crate) tenant: Option<String>,
}

#[derive(Debug)]
struct Shape {
    provider: usize,
    prefix: String,
    suffix: &'static str,
    /// The `common` key source, when the provider accepts any tenant with this version.
    source: Option<usize>,
}

/// Why providers cannot be routed to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RoutesError {
    /// No provider is configured.
    #[error("no identity provider is configured")]
    NoProviders,
    /// Two providers share a name.
    #[error("provider name `{0}` is used twice")]
    DuplicateName(Arc<str>),
    /// Two providers accept the same issuer, so routing would be ambiguous.
    #[error("providers `{first}` and `{second}` accept the same issuer")]
    DuplicateIssuer { first: Arc<str>, second: Arc<str> },
}

impl Routes {
    /// The routes to `providers` and their key sources.
    pub(crate) fn new(providers: Vec<ProviderSettings>) -> Result<Self, RoutesError> {
        if providers.is_empty() {
            return Err(RoutesError::NoProviders);
        }
        let mut names: HashMap<Arc<str>, usize> = HashMap::new();
        let mut sources: Vec<SourceSpec> = Vec::new();
        let mut by_issuer: HashMap<String, Route> = HashMap::new();
        let mut shapes: Vec<Shape> = Vec::new();
        let name_of = |index: usize| -> Arc<str> {
            providers
                .get(index)
                .map_or_else(|| Arc::from(""), |p| p.name().clone())
        };
        for (index, settings) in providers.iter().enumerate() {
            if names.insert(settings.name().clone(), index).is_some() {
                return Err(RoutesError::DuplicateName(settings.name().clone()));
            }
            let mut fixed = |source: SourceSpec| {
                let route = Route {
                    provider: index,
                    source: sources.len(),
                    via: Via::Issuer,
                };
                if let Some(first) = by_issuer.insert(source.expected_issuer.clone(), route) {
                    return Err(RoutesError::DuplicateIssuer {
                        first: name_of(first.provider),
                        second: settings.name().clone(),
                    });
                }
                sources.push(source);
                Ok(())
            };
            match settings.kind() {
                ProviderKind::Oidc(oidc) => fixed(SourceSpec {
                    provider: index,
                    label: format!("{}", settings.name()),
                    discovery_url: oidc.discovery_url().to_owned(),
                    expected_issuer: oidc.issuer().to_owned(),
                    tenant: None,
                })?,
                ProviderKind::Entra(entra) => {
                    let authority = entra.authority();
                    let app_id = entra.signing_keys_app_id();
                    // Sources of an app's own keys say so, to tell them from the tenant's.
                    let app_label = app_id.map(|id| format!("?appid={id}")).unwrap_or_default();
                    let tenants: &[Guid] = match entra.tenants() {
                        Tenants::One(tenant) => std::slice::from_ref(tenant),
                        Tenants::List(list) => list,
                        Tenants::Any => &[],
                    };
                    for tenant in tenants {
                        for version in entra.versions().iter() {
                            fixed(SourceSpec {
                                provider: index,
                                label: format!(
                                    "{}/{tenant}/{}{app_label}",
                                    settings.name(),
                                    version.as_str()
                                ),
                                discovery_url: discovery_url(
                                    &authority,
                                    tenant.as_str(),
                                    version,
                                    app_id,
                                ),
                                expected_issuer: entra.issuer(version, tenant.as_str()),
                                tenant: Some(tenant.to_string()),
                            })?;
                        }
                    }
                    for version in [TokenVersion::V1, TokenVersion::V2] {
                        let (prefix, suffix) = entra.issuer_shape(version);
                        let any =
                            *entra.tenants() == Tenants::Any && entra.versions().contains(version);
                        let source = any.then(|| {
                            sources.push(SourceSpec {
                                provider: index,
                                label: format!(
                                    "{}/common/{}{app_label}",
                                    settings.name(),
                                    version.as_str()
                                ),
                                discovery_url: discovery_url(&authority, "common", version, app_id),
                                expected_issuer: entra.issuer(version, TENANT_PLACEHOLDER),
                                tenant: None,
                            });
                            sources.len() - 1
                        });
                        if let Some(other) = shapes.iter().find(|s| {
                            source.is_some()
                                && s.source.is_some()
                                && s.prefix == prefix
                                && s.suffix == suffix
                        }) {
                            return Err(RoutesError::DuplicateIssuer {
                                first: name_of(other.provider),
                                second: settings.name().clone(),
                            });
                        }
                        shapes.push(Shape {
                            provider: index,
                            prefix,
                            suffix,
                            source,
                        });
                    }
                }
            }
        }
        Ok(Self {
            providers,
            sources,
            by_issuer,
            shapes,
        })
    }

    /// The providers, in configuration order.
    pub(crate) fn providers(&self) -> &[ProviderSettings] {
        &self.providers
    }

    /// The provider of a [`Route`].
    pub(crate) fn provider(&self, index: usize) -> Result<&ProviderSettings, TokenError> {
        // Routes only hold indices of `providers`; this cannot fail.
        self.providers.get(index).ok_or(TokenError::IssuerUnknown)
    }

    /// Every key source, in the order [`Route::source`] counts them.
    pub(crate) fn sources(&self) -> &[SourceSpec] {
        &self.sources
    }

    /// The provider and key source of exact issuer `issuer`, before any claim is checked.
    pub(crate) fn exact(&self, issuer: &str) -> Option<Route> {
        self.by_issuer.get(issuer).copied()
    }

    /// The provider and key source for a token with `issuer` and `claims`, after the tenant
    /// rules; the refusal when a provider of the issuer's cloud refuses the tenant or version,
    /// or [`TokenError::IssuerUnknown`] when no provider issues it.
    pub(crate) fn route(
        &self,
        issuer: &str,
        claims: &Map<String, Value>,
    ) -> Result<Route, TokenError> {
        if let Some(route) = self.exact(issuer) {
            let settings = self.provider(route.provider)?;
            if let Some(entra) = settings.as_entra() {
                check_entra_tenant(settings, entra, issuer, claims)?;
            }
            return Ok(route);
        }
        let mut refusal = None;
        for shape in &self.shapes {
            let matches = issuer
                .strip_prefix(shape.prefix.as_str())
                .and_then(|rest| rest.strip_suffix(shape.suffix))
                .is_some_and(|segment| !segment.is_empty() && !segment.contains('/'));
            if !matches {
                continue;
            }
            let settings = self.provider(shape.provider)?;
            let Some(entra) = settings.as_entra() else {
                continue;
            };
            let checked = check_entra_tenant(settings, entra, issuer, claims);
            match (shape.source, checked) {
                (Some(source), Ok(_)) => {
                    return Ok(Route {
                        provider: shape.provider,
                        source,
                        via: Via::AnyTenant,
                    });
                }
                (Some(_), Err(error)) => return Err(error),
                // A listed provider's cloud, but not one of its exact issuers: say why. A provider
                // that lists the tenant knows better (wrong version, mismatched tid) than one
                // that merely does not list it.
                (None, Err(error)) => {
                    let weaker = refusal
                        .as_ref()
                        .is_none_or(|r| matches!(r, TokenError::TenantNotAllowed { .. }));
                    if weaker {
                        refusal = Some(error);
                    }
                }
                (None, Ok(_)) => {
                    refusal.get_or_insert(TokenError::IssuerUnknown);
                }
            }
        }
        Err(refusal.unwrap_or(TokenError::IssuerUnknown))
    }
}

/// Where an Entra tenant's (or `common`'s) metadata lives; with `app_id`, the metadata of that
/// app's own signing keys, whose `jwks_uri` Entra gives the same `?appid=` query.
fn discovery_url(
    authority: &str,
    tenant: &str,
    version: TokenVersion,
    app_id: Option<&str>,
) -> String {
    let path = match version {
        TokenVersion::V1 => format!("{authority}/{tenant}/.well-known/openid-configuration"),
        TokenVersion::V2 => format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
    };
    match app_id {
        // A lowercase GUID (parsed in settings), so it needs no percent-encoding.
        Some(app_id) => format!("{path}?appid={app_id}"),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::deny::DenyReason;

    const CONTOSO: &str = "6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11";
    const FABRIKAM: &str = "0b9e7c2a-4d1f-4e8b-a3c6-9f2d5e8b1a07";
    const STRANGER: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    fn entra(name: &str, tenants: Tenants) -> ProviderSettings {
        ProviderSettings::entra(name, tenants, vec!["api://a".into()]).unwrap()
    }

    fn v2(tenant: &str) -> String {
        format!("https://login.microsoftonline.com/{tenant}/v2.0")
    }

    fn claims(tid: &str) -> Map<String, Value> {
        match json!({ "tid": tid }) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn routes() -> Routes {
        Routes::new(vec![
            entra("contoso", Tenants::One(CONTOSO.into())),
            entra("partners", Tenants::Any),
        ])
        .unwrap()
    }

    #[test]
    fn exact_issuers_route_to_their_own_source_and_any_tenant_to_common() {
        let routes = routes();
        // contoso: v1 and v2 sources; partners: a `common` source per version.
        let labels: Vec<&str> = routes.sources().iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                format!("contoso/{CONTOSO}/v1").as_str(),
                &format!("contoso/{CONTOSO}/v2"),
                "partners/common/v1",
                "partners/common/v2",
            ]
        );
        let route = routes.route(&v2(CONTOSO), &claims(CONTOSO)).unwrap();
        assert_eq!(
            (route.provider, route.source, route.via),
            (0, 1, Via::Issuer)
        );
        let route = routes.route(&v2(FABRIKAM), &claims(FABRIKAM)).unwrap();
        assert_eq!(
            (route.provider, route.source, route.via),
            (1, 3, Via::AnyTenant)
        );
        assert_eq!(routes.exact(&v2(CONTOSO)).map(|r| r.source), Some(1));
        assert_eq!(routes.exact(&v2(FABRIKAM)), None);
    }

    #[test]
    fn tenant_rules_refuse_before_any_source_is_chosen() {
        let routes = routes();
        let refused = |issuer: &str, tid: &str| routes.route(issuer, &claims(tid)).unwrap_err();
        // A tid that is not the issuer's tenant, on an exact issuer and on an `any` shape.
        assert_eq!(
            refused(&v2(CONTOSO), FABRIKAM).reason(),
            DenyReason::TenantMismatch
        );
        assert_eq!(
            refused(&v2(FABRIKAM), STRANGER).reason(),
            DenyReason::TenantMismatch
        );
        assert_eq!(
            refused(&v2(&FABRIKAM.to_uppercase()), FABRIKAM).reason(),
            DenyReason::TenantInvalid
        );
        assert!(matches!(
            routes.route("https://elsewhere.example", &Map::new()),
            Err(TokenError::IssuerUnknown)
        ));
    }

    #[test]
    fn a_listed_provider_names_why_it_refuses_a_tenant_it_does_not_list() {
        let routes = Routes::new(vec![entra("contoso", Tenants::One(CONTOSO.into()))]).unwrap();
        let error = routes.route(&v2(STRANGER), &claims(STRANGER)).unwrap_err();
        assert_eq!(error.reason(), DenyReason::TenantNotAllowed);
        assert_eq!(error.provider().map(|p| &**p), Some("contoso"));
    }

    #[test]
    fn ambiguous_or_empty_configurations_are_refused() {
        assert!(matches!(Routes::new(vec![]), Err(RoutesError::NoProviders)));
        let twice = Routes::new(vec![
            entra("a", Tenants::One(CONTOSO.into())),
            entra("a", Tenants::One(FABRIKAM.into())),
        ]);
        assert!(matches!(twice, Err(RoutesError::DuplicateName(n)) if &*n == "a"));
        let overlap = Routes::new(vec![
            entra("one", Tenants::One(CONTOSO.into())),
            entra("list", Tenants::List(vec![FABRIKAM.into(), CONTOSO.into()])),
        ]);
        assert!(matches!(
            overlap,
            Err(RoutesError::DuplicateIssuer { first, second }) if &*first == "one" && &*second == "list"
        ));
        let two_any = Routes::new(vec![entra("x", Tenants::Any), entra("y", Tenants::Any)]);
        assert!(matches!(two_any, Err(RoutesError::DuplicateIssuer { .. })));
    }

    #[test]
    fn discovery_urls_carry_the_app_id_only_when_set() {
        let app = Some("6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11");
        assert_eq!(
            discovery_url("https://login.example", "common", TokenVersion::V2, None),
            "https://login.example/common/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://login.example", "t", TokenVersion::V1, app),
            "https://login.example/t/.well-known/openid-configuration\
             ?appid=6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11"
        );
        assert_eq!(
            discovery_url("https://login.example", "t", TokenVersion::V2, app),
            "https://login.example/t/v2.0/.well-known/openid-configuration\
             ?appid=6e3f1d0c-8b5a-4c2e-9f41-2d7a9b0c5e11"
        );
    }
}
