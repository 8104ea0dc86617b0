//! Identity-provider settings: `providers:` entries validated into [`ProviderSettings`].

use super::*;

impl Validator<'_> {
    pub(super) fn providers(
        &mut self,
        raw: Spanned<Vec<RawProvider>>,
    ) -> Option<Vec<ProviderSettings>> {
        if raw.value.is_empty() {
            self.problem(&raw, "at least one identity provider is needed");
            return None;
        }
        let mut out = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for p in raw.value {
            if seen.contains(&p.name.value) {
                self.problem(
                    &p.name,
                    format!("provider {:?} is defined twice", p.name.value),
                );
            }
            seen.push(p.name.value.clone());
            if let Some(settings) = self.provider(p) {
                out.push(settings);
            }
        }
        Some(out)
    }

    fn provider(&mut self, p: RawProvider) -> Option<ProviderSettings> {
        let settings = match p.kind.value.as_str() {
            "entra" => self.entra_provider(&p)?,
            "oidc" => self.oidc_provider(&p)?,
            kind => {
                self.problem(
                    &p.kind,
                    format!("unknown provider kind {kind:?}; expected entra or oidc"),
                );
                return None;
            }
        };
        let mut settings = settings;
        if let Some(algorithms) = &p.algorithms {
            let names: Vec<&str> = algorithms.value.iter().map(String::as_str).collect();
            settings = self.step(settings.with_algorithms(&names), Loc::of(algorithms))?;
        }
        let leeway = self.duration(p.leeway.clone(), Duration::from_secs(60));
        let refresh = self.duration(p.key_refresh_interval.clone(), Duration::from_secs(3600));
        let refetch = self.duration(
            p.unknown_kid_refetch_interval.clone(),
            Duration::from_secs(300),
        );
        let leeway_at = p.leeway.as_ref().map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_leeway_secs(leeway.as_secs()), leeway_at)?;
        let refresh_at = p
            .key_refresh_interval
            .as_ref()
            .map_or(Loc::of(&p.name), Loc::of);
        settings = self.step(settings.with_key_refresh_interval(refresh), refresh_at)?;
        Some(settings.with_unknown_kid_refetch_interval(refetch))
    }

    /// Reports every given setting that does not apply to the provider's kind.
    fn not_for_kind(&mut self, kind: &str, settings: &[(&str, Option<Loc>)]) -> bool {
        let mut clean = true;
        for (name, at) in settings {
            if let Some(at) = at {
                self.problem_at(
                    *at,
                    format!("`{name}` does not apply to `kind: {kind}` providers"),
                );
                clean = false;
            }
        }
        clean
    }

    fn entra_provider(&mut self, p: &RawProvider) -> Option<ProviderSettings> {
        let clean = self.not_for_kind(
            "entra",
            &[
                ("issuer", p.issuer.as_ref().map(Loc::of)),
                ("discovery_url", p.discovery_url.as_ref().map(Loc::of)),
                ("roles_claim", p.roles_claim.as_ref().map(Loc::of)),
                ("groups_claim", p.groups_claim.as_ref().map(Loc::of)),
                ("principal", p.principal.as_ref().map(Loc::of)),
                (
                    "require_access_token_type",
                    p.require_access_token_type.as_ref().map(Loc::of),
                ),
            ],
        );
        let (tenants, tenants_at) = match (&p.tenant, &p.tenants) {
            (Some(_), Some(list)) => {
                self.problem(list, "give either tenant or tenants, not both");
                return None;
            }
            (Some(one), None) => (Tenants::One(one.value.clone()), Loc::of(one)),
            (None, Some(list)) => match &list.value {
                RawTenants::Keyword(word) if word == "any" => (Tenants::Any, Loc::of(list)),
                RawTenants::Keyword(word) => {
                    self.problem(
                        list,
                        format!(
                            "tenants must be a list of tenant ids or the word any, not {word:?}"
                        ),
                    );
                    return None;
                }
                RawTenants::List(ids) => (Tenants::List(ids.clone()), Loc::of(list)),
            },
            (None, None) => {
                self.problem(
                    &p.name,
                    "an entra provider needs tenant (GUID), tenants (list of GUIDs) or tenants: any",
                );
                return None;
            }
        };
        // Each builder step validates one setting; its error is reported at that setting.
        let mut settings =
            match ProviderSettings::entra(&p.name.value, tenants, p.audiences.value.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    let at = match err {
                        SettingsError::TenantNotGuid { .. }
                        | SettingsError::TenantsEmpty { .. }
                        | SettingsError::TenantDuplicate { .. } => tenants_at,
                        SettingsError::NameEmpty => Loc::of(&p.name),
                        _ => Loc::of(&p.audiences),
                    };
                    self.problem_at(at, err.to_string());
                    return None;
                }
            };
        if !clean {
            return None;
        }
        let mut graph_url = crate::oidc::DEFAULT_GRAPH_URL;
        match (&p.cloud, &p.login_host) {
            (Some(cloud), Some(_)) => {
                self.problem(cloud, "give either cloud or login_host, not both");
                return None;
            }
            (Some(cloud), None) => {
                let Some((login, sts, graph)) = cloud_hosts(&cloud.value) else {
                    let name = &cloud.value;
                    self.problem(
                        cloud,
                        format!("unknown cloud {name:?}; expected global, usgov or china"),
                    );
                    return None;
                };
                graph_url = graph;
                settings = self.step(settings.with_login_host(login), Loc::of(cloud))?;
                settings = self.step(settings.with_sts_host(sts), Loc::of(cloud))?;
            }
            (None, Some(host)) => {
                settings = self.step(settings.with_login_host(&host.value), Loc::of(host))?;
            }
            (None, None) => {}
        }
        if let Some(host) = &p.sts_host {
            settings = self.step(settings.with_sts_host(&host.value), Loc::of(host))?;
        }
        if let Some(authority) = &p.authority {
            settings = self.step(
                settings.with_authority(&authority.value),
                Loc::of(authority),
            )?;
        }
        if let Some(versions) = &p.versions {
            let mut chosen = Versions {
                v1: false,
                v2: false,
            };
            for version in &versions.value {
                match version.as_str() {
                    "v1" => chosen.v1 = true,
                    "v2" => chosen.v2 = true,
                    other => {
                        self.problem(
                            versions,
                            format!("unknown token version {other:?}; expected v1 or v2"),
                        );
                        return None;
                    }
                }
            }
            settings = self.step(settings.with_versions(chosen), Loc::of(versions))?;
        }
        if let Some(app_id) = &p.signing_keys_app_id {
            settings = self.step(
                settings.with_signing_keys_app_id(&app_id.value),
                Loc::of(app_id),
            )?;
        }
        let overage = match p.groups_overage.as_ref().map(|o| o.value.as_str()) {
            None | Some("deny") => {
                if let Some(graph) = &p.graph {
                    self.problem(graph, "graph is only used with groups_overage: resolve");
                    return None;
                }
                GroupsOverage::Deny
            }
            Some("resolve") => {
                let Some(graph) = &p.graph else {
                    let at = p.groups_overage.as_ref().map_or(Loc::of(&p.name), Loc::of);
                    self.problem_at(at, "groups_overage: resolve needs a graph section");
                    return None;
                };
                GroupsOverage::Resolve(self.graph(graph, graph_url)?)
            }
            Some(other) => {
                let at = p.groups_overage.as_ref().map_or(Loc::of(&p.name), Loc::of);
                self.problem_at(
                    at,
                    format!("unknown groups_overage {other:?}; expected deny or resolve"),
                );
                return None;
            }
        };
        let at = p.graph.as_ref().map_or_else(|| Loc::of(&p.name), Loc::of);
        self.step(settings.with_groups_overage(overage), at)
    }

    fn graph(&mut self, raw_at: &Spanned<RawGraph>, graph_url: &str) -> Option<GraphSettings> {
        let raw = &raw_at.value;
        let secret = self.secret(
            "graph client secret",
            raw.client_secret_file.clone(),
            raw.client_secret_env.clone(),
        );
        let credential = match (secret, &raw.federated_token_file) {
            (Some((_, at)), Some(_)) => {
                self.problem_at(
                    at,
                    "graph: give a client secret or a federated token file, not both",
                );
                return None;
            }
            (Some((secret, _)), None) => GraphCredential::ClientSecret(secret),
            (None, Some(file)) => {
                // Read when a token is requested (it rotates); relative to the config file.
                GraphCredential::FederatedTokenFile(self.base.join(&file.value))
            }
            (None, None) => {
                // A given but unreadable secret was already reported.
                if raw.client_secret_file.is_none() && raw.client_secret_env.is_none() {
                    self.problem(
                        raw_at,
                        "graph needs client_secret_file, client_secret_env or federated_token_file",
                    );
                }
                return None;
            }
        };
        let mut graph = GraphSettings::new(&raw.client_id.value, credential).with_graph_url(
            raw.graph_url
                .as_ref()
                .map_or(graph_url, |u| u.value.as_str()),
        );
        if let Some(authority) = &raw.authority {
            graph = graph.with_token_authority(&authority.value);
        }
        Some(graph)
    }

    fn oidc_provider(&mut self, p: &RawProvider) -> Option<ProviderSettings> {
        let clean = self.not_for_kind(
            "oidc",
            &[
                ("tenant", p.tenant.as_ref().map(Loc::of)),
                ("tenants", p.tenants.as_ref().map(Loc::of)),
                ("versions", p.versions.as_ref().map(Loc::of)),
                ("cloud", p.cloud.as_ref().map(Loc::of)),
                ("login_host", p.login_host.as_ref().map(Loc::of)),
                ("sts_host", p.sts_host.as_ref().map(Loc::of)),
                ("authority", p.authority.as_ref().map(Loc::of)),
                ("groups_overage", p.groups_overage.as_ref().map(Loc::of)),
                ("graph", p.graph.as_ref().map(Loc::of)),
            ],
        );
        // Said apart from the list above: it is the one Entra setting with a generic stand-in.
        if let Some(app_id) = &p.signing_keys_app_id {
            self.problem(
                app_id,
                "`signing_keys_app_id` does not apply to `kind: oidc` providers; \
                 point discovery_url at the metadata that lists the signing keys instead",
            );
        }
        let clean = clean && p.signing_keys_app_id.is_none();
        let Some(issuer) = &p.issuer else {
            self.problem(&p.name, "an oidc provider needs an issuer (URL)");
            return None;
        };
        let mut settings =
            match ProviderSettings::oidc(&p.name.value, &issuer.value, p.audiences.value.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    let at = match err {
                        SettingsError::AudiencesEmpty { .. }
                        | SettingsError::AudienceBlank { .. } => Loc::of(&p.audiences),
                        SettingsError::NameEmpty => Loc::of(&p.name),
                        _ => Loc::of(issuer),
                    };
                    self.problem_at(at, err.to_string());
                    return None;
                }
            };
        if !clean {
            return None;
        }
        if let Some(url) = &p.discovery_url {
            settings = self.step(settings.with_discovery_url(&url.value), Loc::of(url))?;
        }
        for (path, roles) in [(&p.roles_claim, true), (&p.groups_claim, false)] {
            if let Some(path) = path {
                let value = Some(path.value.as_str());
                let (r, g) = if roles { (value, None) } else { (None, value) };
                settings = self.step(settings.with_claim_paths(r, g), Loc::of(path))?;
            }
        }
        if let Some(principal) = &p.principal {
            let rule = match principal.value.as_str() {
                "auto" => PrincipalRule::Auto,
                "user" => PrincipalRule::User,
                "application" => PrincipalRule::Application,
                other => {
                    self.problem(
                        principal,
                        format!("unknown principal {other:?}; expected auto, user or application"),
                    );
                    return None;
                }
            };
            settings = self.step(settings.with_principal(rule), Loc::of(principal))?;
        }
        if let Some(required) = &p.require_access_token_type {
            settings = self.step(
                settings.with_required_access_token_type(required.value),
                Loc::of(required),
            )?;
        }
        Some(settings)
    }

    fn step<T>(&mut self, result: Result<T, SettingsError>, at: Loc) -> Option<T> {
        result
            .map_err(|err| self.problem_at(at, err.to_string()))
            .ok()
    }
}

/// The Entra v2 login host, v1 issuer host and Graph URL of a national cloud.
fn cloud_hosts(cloud: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match cloud {
        "global" => Some((
            "login.microsoftonline.com",
            "sts.windows.net",
            "https://graph.microsoft.com",
        )),
        "usgov" => Some((
            "login.microsoftonline.us",
            "sts.windows.net",
            "https://graph.microsoft.us",
        )),
        "china" => Some((
            "login.partner.microsoftonline.cn",
            "sts.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
        )),
        _ => None,
    }
}
