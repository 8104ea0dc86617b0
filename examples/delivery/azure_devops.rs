//! Queues the release pipeline through Azure DevOps's REST API ("Pipelines – Runs – Run
//! Pipeline"): `POST {organization}/{project}/_apis/pipelines/{pipelineId}/runs?api-version=7.1`
//! with the image reference, tag and the event's sender as `templateParameters`, so the run
//! shows who asked for it.
//!
//! It authenticates with its own Entra access token for Azure DevOps (resource
//! `499b84ac-1321-427f-aa17-267ca6975798`), from `AZURE_DEVOPS_TOKEN_COMMAND` on every call
//! (default: the Azure CLI, i.e. the trigger's managed or workload identity once `az login
//! --identity` ran). Its service principal must be a user of the organization with permission to
//! queue the pipeline. In tests and with `entra-callout dev`, `AZURE_DEVOPS_URL` points at a local
//! stub (examples/azure-devops/ado_stub.py) that checks the request and the token's audience.

#![allow(dead_code, unreachable_pub)]

use anyhow::Context;
use serde_json::{Value, json};

use crate::common::TokenSource;
use crate::scenario::Release;

/// Azure DevOps' resource id: the `aud` of tokens for its REST API.
pub const RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";

/// Where and how to queue runs.
pub struct AzureDevOps {
    runs_url: String,
    tokens: TokenSource,
    http: reqwest::Client,
}

/// A queued run.
#[derive(Debug)]
pub struct Run {
    /// The run's id.
    pub id: u64,
    /// Its page, when the answer names one.
    pub web: Option<String>,
}

impl AzureDevOps {
    /// From `AZURE_DEVOPS_URL` (`https://dev.azure.com/{organization}`),
    /// `AZURE_DEVOPS_PROJECT`, `AZURE_DEVOPS_PIPELINE_ID` and `AZURE_DEVOPS_TOKEN_COMMAND`;
    /// `None` when `AZURE_DEVOPS_URL` is not set (the trigger then only prints the release).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let Ok(base) = std::env::var("AZURE_DEVOPS_URL") else {
            return Ok(None);
        };
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        let project = var("AZURE_DEVOPS_PROJECT")?;
        let pipeline: u64 = var("AZURE_DEVOPS_PIPELINE_ID")?
            .parse()
            .context("AZURE_DEVOPS_PIPELINE_ID is not a number")?;
        let command = std::env::var("AZURE_DEVOPS_TOKEN_COMMAND").unwrap_or_else(|_| {
            format!("az account get-access-token --resource {RESOURCE} --query accessToken -o tsv")
        });
        Ok(Some(Self {
            runs_url: format!(
                "{}/{project}/_apis/pipelines/{pipeline}/runs?api-version=7.1",
                base.trim_end_matches('/')
            ),
            tokens: TokenSource::command(command),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        }))
    }

    /// Queues one run for `release`.
    pub async fn queue(&self, release: &Release) -> anyhow::Result<Run> {
        let token = self
            .tokens
            .fetch()
            .await
            .map_err(|e| anyhow::anyhow!("azure devops token: {e}"))?;
        let body = json!({
            "templateParameters": {
                "image": release.reference,
                "tag": release.tag,
                "requestedBy": release.sender,
            }
        });
        let response = self
            .http
            .post(&self.runs_url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("queue the release pipeline")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("azure devops answered {status}: {}", text.trim());
        }
        let run: Value = serde_json::from_str(&text).context("azure devops' answer")?;
        Ok(Run {
            id: run["id"].as_u64().context("the answer has no run id")?,
            web: run["_links"]["web"]["href"].as_str().map(str::to_owned),
        })
    }
}
