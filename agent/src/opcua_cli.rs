//! `pdtf-agent opcua browse | trust`: operator commands for OPC UA servers.

use crate::config;
use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use pdtf_connectors::opcua::{browse, client, OpcuaServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// Which server: `--config` + `--server` (its security, identity and PKI), or a bare
/// `--endpoint` (security None, anonymous, PKI under the temp dir).
pub struct Target {
    pub config: Option<PathBuf>,
    pub server: Option<String>,
    pub endpoint: Option<String>,
}

fn resolve(t: &Target) -> anyhow::Result<(OpcuaServerConfig, PathBuf, String)> {
    match (&t.config, &t.server, &t.endpoint) {
        (Some(file), Some(name), None) => {
            let c = config::load(file).map_err(|errs| {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                anyhow!("{} is invalid:\n  {}", file.display(), list.join("\n  "))
            })?;
            let s = c
                .opcua_servers
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("{} has no [opcua_servers.{name}]", file.display()))?;
            let pki = client::pki_dir(&s, &c.agent.state_dir);
            Ok((s, pki, c.agent.id))
        }
        (None, None, Some(url)) => Ok((
            OpcuaServerConfig::new(url.clone()),
            std::env::temp_dir().join("pdtf-agent-browse-pki"),
            "browse".into(),
        )),
        _ => bail!("give either --config FILE --server NAME, or --endpoint URL"),
    }
}

pub async fn browse(
    t: Target,
    node: &str,
    depth: usize,
    toml_source: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (cfg, pki, id) = resolve(&t)?;
    let start = opcua::types::NodeId::from_str(node)
        .map_err(|_| anyhow!("--node {node:?} is not a node id (e.g. i=85, ns=2;s=Line1)"))?;
    let c = client::clients(&cfg, &pki, &id, 1).map_err(|e| anyhow!(e))?;
    let token = client::identity_token(&cfg).map_err(|e| anyhow!(e))?;
    let client::Connection {
        session,
        event_loop,
        server_cert_file,
    } = client::connect(&c, &cfg, token)
        .await
        .map_err(|(s, d)| anyhow!(client::explain(s, &d, &pki, None)))?;
    // Drive the session until it is connected (or fails), then browse while it runs.
    let mut events = Box::pin(event_loop.enter());
    let connected = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(opcua::client::SessionPollResult::Reconnected(_)) => return Ok(()),
                Ok(opcua::client::SessionPollResult::ReconnectFailed(code)) => {
                    return Err(client::explain(
                        code,
                        "connect failed",
                        &pki,
                        server_cert_file.as_deref(),
                    ))
                }
                Err(code) => return Err(code.to_string()),
                Ok(_) => {}
            }
        }
        Err("session closed".to_owned())
    })
    .await
    .context("no session within 15 s")?;
    connected.map_err(|e| anyhow!("{}: {e}", cfg.endpoint))?;
    let pump = tokio::spawn(async move { while events.next().await.is_some() {} });
    let nodes = browse::browse(&session, &start, depth)
        .await
        .map_err(|e| anyhow!(e))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
    pump.abort();
    match toml_source {
        Some(source) => print!("{}", browse::render_tag_map(&nodes, source)),
        None => print!("{}", browse::render_tree(&nodes)),
    }
    eprintln!("{} node(s) under {node}, depth {depth}.", nodes.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn trust(t: Target, yes: bool) -> anyhow::Result<ExitCode> {
    let (cfg, pki, id) = resolve(&t)?;
    let c = client::clients(&cfg, &pki, &id, 1).map_err(|e| anyhow!(e))?;
    let cert = client::server_cert(&c, &cfg)
        .await
        .map_err(|e| anyhow!(e))?;
    println!("Server {}", cfg.endpoint);
    println!("  subject:    {}", cert.subject);
    println!("  thumbprint: {} (SHA-1)", cert.thumbprint);
    if !yes {
        println!("Compare the thumbprint with the one shown on the server, then run again with --yes to trust it.");
        return Ok(ExitCode::from(1));
    }
    let path = client::trust(&pki, &cert).map_err(|e| anyhow!(e))?;
    println!("Trusted: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
